"""A reading per claim of the paper: supports, contradicts or cannot decide, with the numbers.

Inputs are plain rows, so any of them may be missing:

- `eval_rows`: stage 05's table (table.csv as dicts): per run the mean score per column,
  its `_se`, `d_<column>` against the base and `retention_loss`; the base row is `run: base`.
  Its SEs are per score, so a change's SE is the run's and the base's in quadrature.
- `main_table`: the sweep's main table (`spotlib.analysis.frontier.main_table`): per run a row at its
  validation-chosen LR (`at: chosen`), one at its matched point (`at: matched`) and one at its
  best in-domain point (`at: best`), changes against the base of the same seed with their SE
  over seeds.
- `frontier_points`: the sweep's per-seed points (points.jsonl), for the KL ↔ forgetting
  relation when stage 05 did not run (they carry `kl` when training probed it).
- `rl`: stage 06's summary.json (`runs.<init>.heldout_last`, a fraction) with `heldout`, the
  number of held-out problems (its manifest's counts).

Each source gives one *reading* of a claim; a reading decides only beyond 2 SE (the noise
band, stated with it). The claim's verdict: supports (or contradicts) when some reading does
and none says the opposite; cannot decide when all are within noise, when they disagree, or
when the inputs are missing (then the command that makes them is named). When the sweep's
readings at its points differ, the claim says so: a method judged only where it trains least
is not a verdict.
"""
from __future__ import annotations

import math

SUPPORTS, CONTRADICTS, UNDECIDED = "supports", "contradicts", "cannot decide"
NOISE_SES = 2.0
SPOT = "spot_bco"
MAKE_EVAL = "`make reproduce` (stage 05)"
MAKE_SWEEP = "`make sweep`"
MAKE_RL = "`make reproduce` (stage 06)"
COLUMN = {"in_domain_gain": "in_domain", "ood_gain": "ood"}  # a change and the score it is made of


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _num(x) -> float:
    try:
        return math.nan if x is None or x == "" else float(x)
    except (TypeError, ValueError):
        return math.nan


def verdict_of(value: float, se: float, bigger_is_claimed: bool = True) -> str:
    """supports when `value` is beyond 2 SE on the claimed side, contradicts on the other side."""
    if _nan(value) or _nan(se):
        return UNDECIDED
    if abs(value) <= NOISE_SES * se:
        return UNDECIDED
    return SUPPORTS if (value > 0) == bigger_is_claimed else CONTRADICTS


def band(value: float, se: float, unit: str = "") -> str:
    """'−11.2 ± 2.9 (2 SE)' or, without an SE, the value and why it decides nothing."""
    if _nan(value):
        return "—"
    if _nan(se):
        return f"{value:+.1f}{unit} (no SE: one seed)"
    return f"{value:+.1f} ± {NOISE_SES * se:.1f}{unit} (2 SE)"


def combine(readings: list[dict]) -> str:
    verdicts = {r["verdict"] for r in readings}
    if SUPPORTS in verdicts and CONTRADICTS in verdicts:
        return UNDECIDED
    for v in (SUPPORTS, CONTRADICTS):
        if v in verdicts:
            return v
    return UNDECIDED


# ------------------------------------------------------------------ the per-run views of each source
def _gain(row: dict, base: dict, col: str) -> float:
    stated = _num(row.get(f"d_{col}"))
    return stated if not math.isnan(stated) else _num(row.get(col)) - _num(base.get(col))


def _se(row: dict, base: dict, col: str) -> float:
    """A change's SE: the run's and the base's in quadrature (stage 05's SEs are per score)."""
    return math.hypot(_num(row.get(f"{col}_se")), _num(base.get(f"{col}_se")))


def _eval_view(eval_rows: list[dict]) -> dict[str, dict]:
    """Stage 05's table as {run: changes ± SE} in the sweep's vocabulary."""
    rows = {r["run"]: r for r in eval_rows}
    base = rows.get("base")
    if base is None:
        return {}
    view = {}
    for run, r in rows.items():
        if run == "base":
            continue
        view[run] = {"in_domain_gain": _gain(r, base, "in_domain"), "in_domain_gain_se": _se(r, base, "in_domain"),
                     "ood_gain": _gain(r, base, "ood"), "ood_gain_se": _se(r, base, "ood"),
                     "retention_loss": _num(base.get("general")) - _num(r.get("general")),
                     "retention_loss_se": _se(r, base, "general"),
                     "overall": _num(r.get("overall")), "overall_se": _num(r.get("overall_se")),
                     "kl": _num(r.get("kl")), "lr": None}
    return view


def views(eval_rows: list[dict] | None, main_table: list[dict] | None) -> list[tuple[str, dict[str, dict]]]:
    """[(label, {run: row})]: stage 05 (test split), the sweep at the chosen LR, at the matched point and
    at the best in-domain point."""
    out = []
    if eval_rows:
        view = _eval_view(eval_rows)
        if view:
            out.append(("05, test split", view))
    for at, label in (("chosen", "sweep, chosen LR (val)"), ("matched", "sweep, matched point (val)"),
                      ("best", "sweep, best in-domain LR (val)")):
        rows = {r["run"]: r for r in main_table or [] if r.get("at") == at and r.get("lr") is not None}
        if rows:
            out.append((label, rows))
    return out


def _lr(row: dict) -> str:
    if row.get("lr") is None:
        return ""
    edge = row.get("edge")   # a sweep point on an edge of its grid is read with that said
    tie = "tied with the base there" if row.get("edge_ties_base") else "not bracketed"
    note = f" ({edge} edge of its grid, {tie})" if edge else ""
    return f" at lr {row['lr']:g}{note}"


# ------------------------------------------------------------------ one reading per claim
def _claim(key: str, title: str, paper: str, readings: list[dict], missing: str | None, notes=()) -> dict:
    verdict = combine(readings) if readings else UNDECIDED
    notes = list(notes)
    for subject in dict.fromkeys(r["subject"] for r in readings):
        sweep = {r["source"]: r["verdict"] for r in readings
                 if r["subject"] == subject and r["source"].startswith("sweep, ")}
        if len(set(sweep.values())) > 1:
            notes.append(f"{subject}: the sweep's readings at its chosen, matched and best points differ (" +
                         ", ".join(f"{s.split(', ')[1]}: {v}" for s, v in sweep.items()) + ")")
    if {r["verdict"] for r in readings} >= {SUPPORTS, CONTRADICTS}:
        notes.append("some readings support and others contradict")
    if not readings:
        notes.append(f"no input: run {missing}" if missing else "no input")
    return {"key": key, "claim": title, "paper": paper, "verdict": verdict, "readings": readings, "notes": notes}


def _change_claim(key, title, paper, change, sources) -> dict:
    readings = []
    for label, rows in sources:
        r = rows.get(SPOT)
        if r is None or _nan(r.get(change)):
            continue
        value, se = r[change], r.get(f"{change}_se")
        readings.append({"source": label, "subject": SPOT, "verdict": verdict_of(value, se),
                         "text": f"{SPOT}{_lr(r)}: {band(value, se, ' points')}"})
    return _claim(key, title, paper, readings, f"{MAKE_EVAL} or {MAKE_SWEEP} with spot_bco in train.methods")


def _difference(sources, a: str, b: str, column: str, bigger_is_claimed: bool, what: str) -> list[dict]:
    """Readings of `a − b` on `column` wherever both runs are in a source."""
    readings = []
    for label, rows in sources:
        ra, rb = rows.get(a), rows.get(b)
        if ra is None or rb is None or _nan(ra.get(column)) or _nan(rb.get(column)):
            continue
        diff = ra[column] - rb[column]
        se = math.hypot(_num(ra.get(f"{column}_se")), _num(rb.get(f"{column}_se")))
        value = "{:.1f}" if column == "overall" else "{:+.1f}"  # a score, or a change against the base
        readings.append({"source": label, "subject": f"{a} vs {b}",
                         "verdict": verdict_of(diff, se, bigger_is_claimed),
                         "text": f"{what} {a}{_lr(ra)} {value.format(ra[column])} vs {b}{_lr(rb)} "
                                 f"{value.format(rb[column])}: {band(diff, se, ' points')}"})
    return readings


def claim_retention(sources) -> dict:
    readings = _difference(sources, "sft", SPOT, "retention_loss", True, "retention loss")
    notes = []
    for label, rows in sources:
        sft = rows.get("sft")
        if sft is not None and verdict_of(sft.get("retention_loss"), sft.get("retention_loss_se")) != SUPPORTS:
            notes.append(f"{label}: SFT itself does not forget beyond noise "
                         f"({band(sft.get('retention_loss'), sft.get('retention_loss_se'))}), so the premise "
                         "of the claim does not occur there")
    without_gain = []  # supporting readings where SPoT-BCO does not gain in-domain: it moved less
    for r in readings:
        spot = dict(sources).get(r["source"], {}).get(SPOT, {})
        gain, se = spot.get("in_domain_gain"), spot.get("in_domain_gain_se")
        if r["verdict"] == SUPPORTS and verdict_of(gain, se) != SUPPORTS:
            without_gain.append(r)
            notes.append(f"{r['source']}: spot_bco forgets less there without gaining in-domain ({band(gain, se)}): "
                         "it moved less, which is not learning without forgetting")
    if any(r["source"].startswith("sweep, matched") for r in readings):
        notes.append("at the matched point every method's retention loss is within the budget (2 points) by "
                     "construction, so that reading compares forgetting among the runs that stay within it")
    claim = _claim("retention", "(c) Retention: SPoT-BCO forgets less than SFT",
                   "IFEval +1.8 for SPoT-BCO, −3.4 for SFT", readings,
                   f"{MAKE_EVAL} or {MAKE_SWEEP} with sft and spot_bco in train.methods", notes)
    supporting = [r for r in readings if r["verdict"] == SUPPORTS]
    if claim["verdict"] == SUPPORTS and len(without_gain) == len(supporting):
        claim["qualifier"] = "only where SPoT-BCO gains nothing in-domain"
    return claim


def claim_data(sources) -> dict:
    readings = (_difference(sources, SPOT, f"{SPOT}@direct", "overall", True, "overall")
                + _difference(sources, "sft_plus", "sft", "overall", True, "overall"))
    return _claim("data", "(d) Data × objective: rectified data beats the Oracle's direct solutions",
                  "SPoT-BCO overall 50.4 rectified vs 45.2 direct (2k); SFT+ 49.4 vs SFT 41.8", readings,
                  f"{MAKE_EVAL} with spot_bco@direct in train.ablations (or sft and sft_plus in train.methods), "
                  f"or {MAKE_SWEEP} with spot_bco@direct in train.sweep_variants")


def claim_delta(sources) -> dict:
    readings = (_difference(sources, SPOT, "spot_bce", "overall", True, "overall")
                + _difference(sources, f"{SPOT}:ema", "spot_bce", "overall", True, "overall"))
    return _claim("delta", "(e) δ: centring the rewards on a moving δ (SPoT-BCO) beats no δ (SPoT-BCE)",
                  "overall +6.2 (SPoT-BCO) vs +5.7 (SPoT-BCE)", readings,
                  f"{MAKE_EVAL} or {MAKE_SWEEP} with spot_bce and spot_bco in train.methods")


def spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation (average ranks for ties); NaN when either side is constant."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


def _retention_floor(group: list[dict], items: dict[str, int] | None) -> float:
    """The evaluation's own sampling noise on a mean retention loss (points of %), so that seeds
    that happen to agree (SE 0 over seeds) never make a 0.5-point change "beyond noise".

    The general score is the mean of the retention families, each a binomial proportion over
    its items (clipped to [1, 99] % so a family at 100 % still counts one item's worth of noise);
    a loss is a difference of two such scores (model and base), averaged over the seeds."""
    fams = [f for f in ("facts", "format") if items and items.get(f)]
    if not fams:
        return 0.0
    var = 0.0
    for g in group:
        one = sum(min(max(_num(g.get(f)), 1.0), 99.0) * (100 - min(max(_num(g.get(f)), 1.0), 99.0)) / items[f]
                  for f in fams) / len(fams) ** 2
        var += 2 * one  # model and base, each with its own draws
    return math.sqrt(var / len(group) / len(group))


def kl_rows_from_points(points: list[dict], items: dict[str, int] | None = None) -> list[dict]:
    """Per (run, lr) of the sweep: mean held-out KL and retention loss ± SE over seeds (never below
    the evaluation's binomial noise when the item counts `items` are given)."""
    from spotlib.analysis.frontier import mean_se

    groups: dict[tuple[str, float], list[dict]] = {}
    for p in points:
        groups.setdefault((p["run"], float(p["lr"])), []).append(p)
    rows = []
    for (run, lr), group in groups.items():
        kl = [_num(g.get("kl")) for g in group]
        if all(math.isnan(k) for k in kl):
            continue
        loss, se = mean_se([g["retention_loss"] for g in group])
        floor = _retention_floor(group, items)
        se = floor if _nan(se) and floor else max(se, floor)
        rows.append({"run": f"{run}@lr{lr:g}", "kl": mean_se(kl)[0], "retention_loss": loss,
                     "retention_loss_se": se})
    return rows


def _kl_reading(label: str, rows: list[dict]) -> dict | None:
    rows = [r for r in rows if not _nan(r.get("kl")) and not _nan(r.get("retention_loss"))]
    n = len(rows)
    if n < 4:
        return None
    rho = spearman([r["kl"] for r in rows], [r["retention_loss"] for r in rows])
    noise = NOISE_SES / math.sqrt(n - 1)  # the SD of Spearman's ρ between unrelated rankings is 1/√(n−1)
    forgets = [r for r in rows if verdict_of(r["retention_loss"], r.get("retention_loss_se")) == SUPPORTS]
    value = "undefined (one side is constant)" if _nan(rho) else f"{rho:+.2f}"
    text = f"Spearman ρ(KL, retention loss) = {value} over n = {n} runs (noise band ±{noise:.2f})"
    if not forgets:
        return {"source": label, "subject": "KL", "verdict": UNDECIDED,
                "text": text + "; no run forgets beyond 2 SE, so the ranking is of noise"}
    if _nan(rho) or abs(rho) <= noise:
        verdict = UNDECIDED
    else:
        verdict = SUPPORTS if rho > 0 else CONTRADICTS
    return {"source": label, "subject": "KL", "verdict": verdict,
            "text": text + f"; {len(forgets)} run(s) forget beyond 2 SE"}


def claim_kl(eval_rows, frontier_points, sweep_items: dict[str, int] | None = None) -> dict:
    readings = []
    if eval_rows:
        view = _eval_view(eval_rows)
        reading = _kl_reading("05, test split", [dict(r, run=run) for run, r in view.items()])
        readings += [reading] if reading else []
    if frontier_points:
        reading = _kl_reading("sweep, every run × LR (val)", kl_rows_from_points(frontier_points, sweep_items))
        readings += [reading] if reading else []
    return _claim("kl", "(f) KL ↔ forgetting: the runs that move further from the start model forget more",
                  "the implicit KL tether is why SPoT retains (not measured in the paper)", readings,
                  f"{MAKE_EVAL} (needs ≥ 4 runs with the held-out KL probe: train.kl_probe_every > 0) or "
                  f"{MAKE_SWEEP}")


def claim_rl(rl: dict | None) -> dict:
    runs = (rl or {}).get("runs") or {}
    n = _num((rl or {}).get("heldout"))
    readings = []
    if "base" in runs and SPOT in runs and not _nan(_num(runs["base"].get("heldout_last"))):
        p_base, p_spot = _num(runs["base"]["heldout_last"]), _num(runs[SPOT].get("heldout_last"))
        # One seed: the noise is the held-out problems' binomial noise, the two runs in quadrature.
        se = (100 * math.hypot(math.sqrt(p_base * (1 - p_base) / n), math.sqrt(p_spot * (1 - p_spot) / n))
              if n and n > 0 else math.nan)
        diff = 100 * (p_spot - p_base)
        seeds = "one seed; binomial noise over " + (f"{n:.0f} held-out problems" if n else "an unknown count")
        readings.append({"source": "06, held-out at the end of GRPO", "subject": "GRPO",
                         "verdict": verdict_of(diff, se),
                         "text": f"GRPO from {SPOT} {100 * p_spot:.1f}% vs from base {100 * p_base:.1f}%: "
                                 f"{band(diff, se, ' points')} ({seeds})"})
    return _claim("rl", "(g) RL start: GRPO from the SPoT checkpoint ends higher than GRPO from the base model",
                  "5-benchmark average 55.1 vs 46.3", readings, MAKE_RL)


def read_claims(eval_rows: list[dict] | None = None, main_table: list[dict] | None = None,
                frontier_points: list[dict] | None = None, rl: dict | None = None,
                sweep_items: dict[str, int] | None = None) -> list[dict]:
    """Every claim of the paper, in order, each with its verdict, readings and notes. `sweep_items`:
    the sweep's item count per benchmark (its manifest), the floor of its retention noise."""
    sources = views(eval_rows, main_table)
    return [
        _change_claim("in_domain", "(a) In-domain gain: SPoT-BCO improves on the base model in-domain",
                      "in-domain 46.8 → 52.1", "in_domain_gain", sources),
        _change_claim("ood", "(b) OOD gain: SPoT-BCO improves out of domain",
                      "out-of-domain 29.9 → 41.4", "ood_gain", sources),
        claim_retention(sources), claim_data(sources), claim_delta(sources),
        claim_kl(eval_rows, frontier_points, sweep_items), claim_rl(rl),
    ]


def claims_markdown(claims: list[dict]) -> str:
    """A summary table, then per claim its readings and notes."""
    lines = ["| claim | paper | verdict |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['paper']} | **{c['verdict']}**"
              + (f" ({c['qualifier']})" if c.get("qualifier") else "") + " |" for c in claims]
    lines += ["", f"A reading decides only beyond {NOISE_SES:g} standard errors (the band given with each "
              "number); a claim is supported or contradicted when some reading does so and none says the "
              "opposite.", ""]
    for c in claims:
        lines += [f"**{c['claim']}** — {c['verdict']}" + (f" ({c['qualifier']})" if c.get("qualifier") else "")
                  + ".", ""]
        lines += [f"- {r['source']}: {r['text']} → {r['verdict']}" for r in c["readings"]]
        lines += [f"- note: {n}" for n in c["notes"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
