"""Why the pair objectives lose in-domain accuracy: their terms taken apart, and where probability moves.

Input: the sweep's points (one per run, lr, seed, with `in_domain_gain` against the base of
the same seed; `spotlib.analysis.frontier.with_changes`) and each point's final edit-diagnostic record
(the last `probe` record of its metrics.jsonl, with `run`, `lr`, `seed` added;
`spotlib.train.probes.edit_diagnostic` names the keys). A pair-objective run and its
variants form a family: `spot_bco`, `spot_bco+chosen_only` (the gradient through y⁺ only),
`spot_bco+rejected_only` (through y⁻ only), `spot_bco+edit_only` (y⁻ scored on its edited
tokens only); see `spotlib.train.runspec`. Per (run, lr), mean ± SE over seeds of

    in-domain gain                       model − base, points of accuracy
    Δlog π(y⁻) before / at / after       per-token log π − log π_ref on y⁻, split at its first edit
    Δlog π(y⁺) at                        the same on y⁺'s side of the first edit
    p(correct)                           probability of y⁺'s token at the first edited position

The reading compares, at each LR where the full objective loses beyond 2 SE, the full
objective with its one-sided variants (a variant *loses* when its own gain is below −2 SE;
it is *clear of the loss* when it does not and it sits above the full objective by more
than 2 SE of the difference; anything else overlaps and decides nothing), then says whether
+edit_only removes the loss (clear of it), only makes it smaller (still a loss, but above
the full objective beyond noise) or leaves it. Pure functions, rows in, rows out.
"""
from __future__ import annotations

import math

from spotlib.analysis.frontier import mean_se, pm
from spotlib.train.runspec import OPTIONS, parse_run

NOISE_SES = 2.0
# (column, key in the edit diagnostic) in the table's order
DIAGNOSTICS = (("neg_before", "edit/before"), ("neg_at", "edit/at"), ("neg_after", "edit/after"),
               ("pos_at", "edit/chosen_at"), ("p_correct", "edit/p_correct"), ("p_correct_ref", "edit/p_correct_ref"),
               ("collateral", "collateral/pushed"), ("collateral_other", "collateral/other"),
               ("p_pushed", "collateral/p_pushed"), ("p_pushed_ref", "collateral/p_pushed_ref"))
VARIANT_ORDER = ("", "+chosen_only", "+rejected_only", "+edit_only")


def family_of(run: str) -> tuple[str, str] | None:
    """(the full run's name, this run's options as '+a+b') for a pair-objective run; None otherwise."""
    try:
        spec = parse_run(run)
    except ValueError:
        return None
    if not spec.info.pairs:
        return None
    options = "".join(f"+{o}" for o in spec.options)
    full = run[: len(run) - len(options)] if options and run.endswith(options) else run
    return full, options


def _variant_rank(options: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(options) if options in VARIANT_ORDER else len(VARIANT_ORDER), options)


def mechanism_table(points: list[dict], diagnostics: list[dict]) -> list[dict]:
    """One row per pair-objective run (full objective first, then its variants) and LR: the
    in-domain gain and each edit diagnostic as mean and `_se` over seeds."""
    diag = {(d["run"], float(d["lr"]), d["seed"]): d for d in diagnostics}
    groups: dict[tuple[str, float], list[dict]] = {}
    for p in points:
        if family_of(p["run"]) is not None:
            groups.setdefault((p["run"], float(p["lr"])), []).append(p)
    families = list(dict.fromkeys(family_of(run)[0] for run, _ in groups))
    order = sorted(groups, key=lambda k: (families.index(family_of(k[0])[0]), _variant_rank(family_of(k[0])[1]), k[1]))
    rows = []
    for run, lr in order:
        group = groups[(run, lr)]
        full, options = family_of(run)
        row = {"family": full, "run": run, "variant": options.lstrip("+") or "full", "lr": lr,
               "n_seeds": len(group)}
        row["in_domain_gain"], row["in_domain_gain_se"] = mean_se([g["in_domain_gain"] for g in group])
        records = [diag.get((run, lr, g["seed"])) or {} for g in group]
        for column, key in DIAGNOSTICS:
            row[column], row[f"{column}_se"] = mean_se([r.get(key, math.nan) for r in records])
        rows.append(row)
    return rows


# ------------------------------------------------------------------ the reading
def _loses(row: dict) -> bool:
    gain, se = row["in_domain_gain"], row["in_domain_gain_se"]
    return not math.isnan(se) and gain < -NOISE_SES * se


def _above(variant: dict, full: dict) -> bool:
    """Above the full objective by more than 2 SE of the difference."""
    se = math.hypot(variant["in_domain_gain_se"], full["in_domain_gain_se"])
    return not math.isnan(se) and variant["in_domain_gain"] - full["in_domain_gain"] > NOISE_SES * se


def _state(variant: dict | None, full: dict) -> str:
    """missing; loses (beyond 2 SE); less (loses, but above the full objective beyond noise);
    clear (no loss, and above the full objective beyond noise); overlaps (anything else)."""
    if variant is None:
        return "missing"
    if _loses(variant):
        return "less" if _above(variant, full) else "loses"
    return "clear" if _above(variant, full) else "overlaps"


def _gain(row: dict | None) -> str:
    return "not swept" if row is None else pm(row["in_domain_gain"], row["in_domain_gain_se"])


def _cause(chosen: str, rejected: str) -> str:
    chosen, rejected = (("loses" if s == "less" else s) for s in (chosen, rejected))  # a smaller loss is a loss
    if "missing" in (chosen, rejected):
        return "cannot decide which term (a one-sided variant was not swept)"
    if rejected == "loses" and chosen == "clear":
        return "the rejected term causes it"
    if chosen == "loses" and rejected == "clear":
        return "the chosen term causes it"
    if chosen == rejected == "loses":
        return "each term alone loses too"
    if chosen == rejected == "clear":
        return "neither term alone: it comes from the two together"
    return "cannot decide which term (the SEs overlap)"


def _restriction(state: str) -> str:
    return {"missing": "+edit_only not swept", "clear": "restricting y⁻ to the edit removes it",
            "loses": "restricting y⁻ to the edit does not remove it",
            "less": "restricting y⁻ to the edit makes it smaller but does not remove it",
            "overlaps": "cannot decide whether restricting y⁻ to the edit removes it (the SEs overlap)"}[state]


def _where(row: dict) -> str:
    """Where probability moved under the full objective at this LR."""
    if math.isnan(row["neg_at"]):
        return ""
    text = (f"; Δlog π(y⁻) per token before/at/after the edit {row['neg_before']:+.3f}/{row['neg_at']:+.3f}/"
            f"{row['neg_after']:+.3f}, Δlog π(y⁺) at it {row['pos_at']:+.3f}")
    if not math.isnan(row["p_correct"]):
        text += f", p(correct token) {row['p_correct']:.3f}"
        if not math.isnan(row["p_correct_ref"]):
            text += f" (start {row['p_correct_ref']:.3f})"
    return text


def mechanism_reading(rows: list[dict]) -> list[str]:
    """Markdown bullets, one family at a time: where the full objective loses beyond 2 SE, which
    term causes the loss and whether +edit_only removes it, with the numbers."""
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = {(r["variant"], r["lr"]): r for r in rows if r["family"] == family}
        fulls = sorted((r for (v, _), r in mine.items() if v == "full"), key=lambda r: r["lr"])
        if not fulls:
            lines.append(f"- **{family}**: the full objective was not swept; cannot decide.")
            continue
        losing = [r for r in fulls if _loses(r)]
        if not losing:
            no_se = all(math.isnan(r["in_domain_gain_se"]) for r in fulls)
            why = ("one seed gives no standard error; cannot decide" if no_se else
                   "no in-domain loss beyond 2 SE at any LR swept: nothing to take apart")
            lines.append(f"- **{family}**: {why} (gains " + ", ".join(
                f"{r['lr']:g}: {_gain(r)}" for r in fulls) + ").")
            continue
        causes, fixes = [], []
        for full in losing:
            chosen, rejected, edit = (mine.get((v, full["lr"])) for v in ("chosen_only", "rejected_only", "edit_only"))
            cause = _cause(_state(chosen, full), _state(rejected, full))
            fix = _restriction(_state(edit, full))
            causes.append(cause)
            fixes.append(fix)
            lines.append(f"- **{family}** at lr {full['lr']:g}: in-domain {_gain(full)} (full), {_gain(chosen)} "
                         f"(+chosen_only), {_gain(rejected)} (+rejected_only), {_gain(edit)} (+edit_only): "
                         f"{cause}; {fix}{_where(full)}.")
        same = len(set(causes)) == 1 and len(set(fixes)) == 1
        lines.append(f"- **{family}**, in short: loses beyond 2 SE at lr "
                     + ", ".join(f"{r['lr']:g}" for r in losing) + " — "
                     + (f"{causes[0]}; {fixes[0]}." if same else "the LRs read differently (above)."))
    return lines


def mechanism_markdown(rows: list[dict]) -> str:
    """The mechanism table and its reading."""
    if not rows:
        return ("_No pair-objective run in the sweep: add dpo, spot_bce or spot_bco to train.methods and its "
                "variants to train.sweep_variants (" + ", ".join(f"+{o}" for o in OPTIONS) + ")._\n")
    head = ["| run | lr | seeds | in-domain gain | Δlog π(y⁻) before | at edit | after | Δlog π(y⁺) at edit | "
            "p(correct) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [_small(r[c], r[f"{c}_se"]) for c in ("neg_before", "neg_at", "neg_after", "pos_at")]
        cells.append(_small(r["p_correct"], r["p_correct_se"], ".3f"))
        head.append(f"| {r['run']} | {r['lr']:g} | {r['n_seeds']} | {_gain(r)} | " + " | ".join(cells) + " |")
    notes = ["", "Δlog π: per-token log π − log π_ref at the end of training, on y⁻ split at its first edit "
             "and on y⁺'s side of it; p(correct): probability of y⁺'s token at the first edited position "
             "(the start model's: " + _ref(rows) + "). Mean ± SE over seeds.", "", "**Reading**", ""]
    return "\n".join(head + notes + mechanism_reading(rows)) + "\n"


def _small(mean: float, se: float, fmt: str = "+.3f") -> str:
    if mean is None or math.isnan(mean):
        return "—"
    return f"{mean:{fmt}}" + ("" if math.isnan(se) else f" ± {se:.3f}")


def _ref(rows: list[dict]) -> str:
    refs = [r["p_correct_ref"] for r in rows if not math.isnan(r["p_correct_ref"])]
    return f"{sum(refs) / len(refs):.3f}" if refs else "not recorded"


# ------------------------------------------------------------------ the collateral probe
def _collateral_reading(rows: list[dict]) -> list[str]:
    """Per family: at the LRs where the full objective loses in-domain beyond 2 SE, how far the pushed
    tokens fell where they are right, against the other tokens (beyond 2 SE of the difference or not)."""
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        fulls = [r for r in rows if r["family"] == family and r["variant"] == "full"
                 and not math.isnan(r["collateral"])]
        if not fulls:
            continue
        said = []
        for r in fulls:
            gap = r["collateral"] - r["collateral_other"]
            se = math.hypot(r["collateral_se"], r["collateral_other_se"])
            beyond = not math.isnan(se) and abs(gap) > NOISE_SES * se
            said.append(f"{r['lr']:g}: in-domain {_gain(r)}, pushed {r['collateral']:+.3f} vs other "
                        f"{r['collateral_other']:+.3f} nats/token ({'beyond' if beyond else 'within'} 2 SE)")
        lines.append(f"- **{family}**: " + "; ".join(said) + ".")
    return lines


def collateral_markdown(rows: list[dict]) -> str:
    """Per pair-objective run and LR: the in-domain change beside the pushed tokens' change where they are
    right (held-out arithmetic the start model solved, teacher-forced) and the other tokens' change."""
    measured = [r for r in rows if not math.isnan(r.get("collateral", math.nan))]
    if not measured:
        return ("_The collateral probe was not recorded (it runs with the edit diagnostic on the tiny world; "
                "points trained before it existed lack it: train them again)._\n")
    head = ["| run | lr | seeds | in-domain gain | Δlog π pushed tokens, where right | Δlog π other tokens | "
            "π(pushed) now / start |", "|---|---|---|---|---|---|---|"]
    for r in measured:
        head.append(f"| {r['run']} | {r['lr']:g} | {r['n_seeds']} | {_gain(r)} | "
                    f"{_small(r['collateral'], r['collateral_se'])} | "
                    f"{_small(r['collateral_other'], r['collateral_other_se'])} | "
                    f"{_small(r['p_pushed'], math.nan, '.3f')} / {_small(r['p_pushed_ref'], math.nan, '.3f')} |")
    notes = ["", "Pushed tokens: those of y⁻'s first edited span on the edit diagnostic's training pairs. Δlog π: "
             "per-token log π − log π_ref at the end of training, on the start model's correct greedy solutions "
             "of held-out arithmetic; mean ± SE over seeds.", "", "**Reading**", ""]
    return "\n".join(head + notes + _collateral_reading(measured)) + "\n"
