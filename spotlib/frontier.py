"""The learning-rate frontier: what each method buys in-domain for what it loses elsewhere.

Input: the sweep's points, one per (run, lr, seed), each with its scores (in %) and the
base model's scores evaluated with the same seed (a seed is one replicate of everything:
the training order and the evaluation's sampling draws; every LR of the grid uses the same
seeds, so LRs are compared on paired replicates). Per point

    in-domain gain = m.in_domain − b.in_domain
    OOD gain       = m.ood − b.ood
    retention loss = b.general − m.general          (forgetting: > 0 is worse)

and per (run, lr) the mean ± standard error over seeds (SE = sample std / √n; NaN with a
single seed: one replicate says nothing about noise).

Three readings of each method, so that no method is judged only where it trains least:

- the **chosen** point: the LR picked on validation by the sweep's rule;
- the **matched** point: the largest mean in-domain gain among the LRs whose mean
  retention loss is at most `budget` points (2 by default); ties go to the smaller
  retention loss, then to the smaller LR. A method none of whose LRs stays within the
  budget has no matched point.
- the **best** point: the largest mean in-domain gain at any LR, whatever it forgets (the
  same tie rule) — where the paper's premise lives: SFT buying in-domain accuracy with
  forgetting shows at SFT's best point, not at a point that caps forgetting.

All functions here are pure (rows in, rows out); `spotlib.stages.sweep` writes their
results and draws the figure from `frontier_lines`.
"""
from __future__ import annotations

import math

CHANGES = ("in_domain_gain", "ood_gain", "retention_loss")
SCORES = ("in_domain", "ood", "general", "overall")
MATCHED_RETENTION_LOSS = 2.0


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) of the finite values; SE is NaN below two values."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, math.nan
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var / len(xs))


def with_changes(points: list[dict], bases: dict[int, dict]) -> list[dict]:
    """Each point with its changes against the base model of its own seed (points of %)."""
    out = []
    for p in points:
        if p["seed"] not in bases:
            raise ValueError(f"point {p['run']} lr {p['lr']:g} seed {p['seed']}: no base scores for that seed "
                             f"(have seeds {sorted(bases)})")
        b = bases[p["seed"]]
        out.append(dict(p, in_domain_gain=p["in_domain"] - b["in_domain"], ood_gain=p["ood"] - b["ood"],
                        retention_loss=b["general"] - p["general"]))
    return out


def aggregate(points: list[dict]) -> list[dict]:
    """One row per (run, lr), in first-seen run order and ascending LR: mean and `_se` of every
    change and score over its seeds, and the seeds it holds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for p in points:
        groups.setdefault((p["run"], float(p["lr"])), []).append(p)
    runs = list(dict.fromkeys(p["run"] for p in points))
    rows = []
    for run in runs:
        for (r, lr), group in sorted(((k, g) for k, g in groups.items() if k[0] == run), key=lambda kg: kg[0][1]):
            row = {"run": run, "method": group[0].get("method", run), "lr": lr,
                   "seeds": sorted(g["seed"] for g in group), "n_seeds": len(group)}
            for key in CHANGES + SCORES:
                if any(key in g for g in group):
                    row[key], row[f"{key}_se"] = mean_se([g.get(key, math.nan) for g in group])
            rows.append(row)
    return rows


def _finite(x) -> float:
    return -math.inf if x is None or math.isnan(x) else float(x)


def matched_point(rows: list[dict], budget: float = MATCHED_RETENTION_LOSS) -> dict | None:
    """Of one run's aggregated rows: the best mean in-domain gain with mean retention loss ≤ budget."""
    within = [r for r in rows if not math.isnan(r["retention_loss"]) and r["retention_loss"] <= budget]
    if not within:
        return None
    return max(within, key=lambda r: (_finite(r["in_domain_gain"]), -r["retention_loss"], -r["lr"]))


def best_point(rows: list[dict]) -> dict | None:
    """Of one run's aggregated rows: the best mean in-domain gain at any LR, whatever it forgets."""
    return matched_point(rows, budget=math.inf)


def best_lrs(rows: list[dict]) -> dict[str, float | None]:
    """{run: LR of its best point}."""
    return matched_lrs(rows, budget=math.inf)


def matched_lrs(rows: list[dict], budget: float = MATCHED_RETENTION_LOSS) -> dict[str, float | None]:
    """{run: LR of its matched point, or None}."""
    runs = dict.fromkeys(r["run"] for r in rows)
    out = {}
    for run in runs:
        point = matched_point([r for r in rows if r["run"] == run], budget)
        out[run] = point["lr"] if point else None
    return out


def main_table(rows: list[dict], chosen: dict[str, float], budget: float = MATCHED_RETENTION_LOSS) -> list[dict]:
    """Per run, three rows: at its chosen LR (`at: chosen`), at its matched point (`at: matched`,
    absent values when no LR stays within the budget) and at its best point (`at: best`)."""
    table = []
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        at_chosen = next((r for r in mine if run in chosen and r["lr"] == float(chosen[run])), None)
        points = (("chosen", at_chosen), ("matched", matched_point(mine, budget)), ("best", best_point(mine)))
        for label, row in points:
            entry = {"run": run, "at": label, "lr": row["lr"] if row else None}
            for key in CHANGES + ("overall",):
                entry[key] = row.get(key, math.nan) if row else math.nan
                entry[f"{key}_se"] = row.get(f"{key}_se", math.nan) if row else math.nan
            table.append(entry)
    return table


def frontier_lines(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """The figure's data, one line per run in ascending LR: x = retention loss, y = in-domain
    gain, with their standard errors."""
    lines = {}
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["lr"])
        lines[run] = {"lr": [r["lr"] for r in mine],
                      "x": [r["retention_loss"] for r in mine], "x_se": [r["retention_loss_se"] for r in mine],
                      "y": [r["in_domain_gain"] for r in mine], "y_se": [r["in_domain_gain_se"] for r in mine]}
    return lines


def pm(mean: float, se: float, signed: bool = True) -> str:
    """'+3.1 ± 0.8' ('+3.1' when the SE is unknown, '—' when the mean is)."""
    if mean is None or math.isnan(mean):
        return "—"
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text if se is None or math.isnan(se) else f"{text} ± {se:.1f}"


def frontier_markdown(rows: list[dict], chosen: dict[str, float], budget: float = MATCHED_RETENTION_LOSS) -> str:
    """The frontier table (every run × LR) and the main table (chosen and matched points)."""
    lines = ["| method | lr | seeds | in-domain gain | OOD gain | retention loss | overall |",
             "|---|---|---|---|---|---|---|"]
    matched = matched_lrs(rows, budget)
    best = best_lrs(rows)
    for r in rows:
        marks = ("★" if chosen.get(r["run"]) == r["lr"] else "") + ("◆" if matched.get(r["run"]) == r["lr"] else "")
        marks += "▲" if best.get(r["run"]) == r["lr"] and not marks else ""
        cells = [r["run"], f"{r['lr']:g}{(' ' + marks) if marks else ''}", str(r["n_seeds"]),
                 pm(r["in_domain_gain"], r["in_domain_gain_se"]), pm(r["ood_gain"], r["ood_gain_se"]),
                 pm(r["retention_loss"], r["retention_loss_se"]),
                 pm(r.get("overall", math.nan), r.get("overall_se", math.nan), signed=False)]
        if "★" in marks:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"★ (bold) validation-chosen LR; ◆ matched point (best in-domain gain with retention loss ≤ {budget:g}); "
              "▲ best point (best in-domain gain at any LR), where it is neither.",
              "", "**Main table** (mean ± SE over seeds): each method at its chosen LR, at its matched point and at "
              "its best point (its best in-domain gain at any LR, whatever it forgets).", "",
              "| method | at | lr | in-domain gain | OOD gain | retention loss |", "|---|---|---|---|---|---|"]
    for t in main_table(rows, chosen, budget):
        lr = "none within budget" if t["lr"] is None else f"{t['lr']:g}"
        lines.append(f"| {t['run']} | {t['at']} | {lr} | {pm(t['in_domain_gain'], t['in_domain_gain_se'])} | "
                     f"{pm(t['ood_gain'], t['ood_gain_se'])} | {pm(t['retention_loss'], t['retention_loss_se'])} |")
    return "\n".join(lines) + "\n"
