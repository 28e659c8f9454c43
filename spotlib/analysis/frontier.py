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

**Bracketing.** A chosen, matched or best point at the lowest or highest LR a method was swept at
says the grid stopped too early: its optimum may lie beyond. `bracket_extensions` names, per
method, the LR half a decade beyond each such edge (the same rule for every method); the sweep
trains those and asks again, until each such point is interior, or the method *ties with the base*
at that edge (|in-domain gain| and |retention loss| both within max(`tie_points`, `sigmas` · SE):
further along, the method does nothing), or `max_steps` half-decades were added on that side.
`edge_points` lists what is still on an edge; the tables mark it (⇤ low edge, ⇥ high edge).

All functions here are pure (rows in, rows out); `spotlib.stages.sweep` writes their
results and draws the figure from `frontier_lines`.
"""
from __future__ import annotations

import math

CHANGES = ("in_domain_gain", "ood_gain", "retention_loss")
SCORES = ("in_domain", "ood", "general", "overall")
MATCHED_RETENTION_LOSS = 2.0
HALF_DECADE = math.sqrt(10.0)
BRACKET_TIE_POINTS = 0.5    # points of gain or loss that count as no change when the SE is smaller
BRACKET_TIE_SIGMAS = 2.0    # ... or this many standard errors


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
    absent values when no LR stays within the budget) and at its best point (`at: best`); `edge`
    says whether that LR is the lowest or highest the run was swept at (`edge_ties_base`: and the
    run ties with the base there)."""
    table = []
    edges = {(e["run"], e["lr"]): e for e in edge_points(rows, chosen, budget)}
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        at_chosen = next((r for r in mine if run in chosen and r["lr"] == float(chosen[run])), None)
        points = (("chosen", at_chosen), ("matched", matched_point(mine, budget)), ("best", best_point(mine)))
        for label, row in points:
            entry = {"run": run, "at": label, "lr": row["lr"] if row else None}
            edge = edges.get((run, entry["lr"]))   # on an edge of the run's grid: claims say so
            entry.update(edge=edge["edge"] if edge else None, edge_ties_base=bool(edge and edge["ties_base"]))
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


def half_decade(lr: float, direction: int) -> float:
    """The LR half a decade above (direction +1) or below (−1), to two significant digits."""
    return float(f"{lr * HALF_DECADE ** direction:.2g}")


def ties_base(row: dict, tie_points: float = BRACKET_TIE_POINTS, sigmas: float = BRACKET_TIE_SIGMAS) -> bool:
    """Whether an aggregated row is indistinguishable from the base model: its mean in-domain gain and
    retention loss both within max(tie_points, sigmas · SE) of zero."""
    for key in ("in_domain_gain", "retention_loss"):
        mean, se = row.get(key), row.get(f"{key}_se")
        if mean is None or math.isnan(mean):
            return False
        noise = sigmas * se if se is not None and not math.isnan(se) else 0.0
        if abs(mean) > max(tie_points, noise):
            return False
    return True


def edge_points(rows: list[dict], chosen: dict[str, float], budget: float = MATCHED_RETENTION_LOSS,
                tie_points: float = BRACKET_TIE_POINTS, sigmas: float = BRACKET_TIE_SIGMAS) -> list[dict]:
    """Each run's chosen, matched and best points that sit at the lowest or highest LR the run was swept
    at: one entry per (run, lr, edge) with `at` (which readings sit there) and `ties_base`."""
    matched, best = matched_lrs(rows, budget), best_lrs(rows)
    out = []
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["lr"])
        readings = {"chosen": chosen.get(run), "matched": matched.get(run), "best": best.get(run)}
        for lr in dict.fromkeys(v for v in readings.values() if v is not None):
            row = next(r for r in mine if r["lr"] == float(lr))
            at = [label for label, v in readings.items() if v == lr]
            for edge, end in (("low", mine[0]["lr"]), ("high", mine[-1]["lr"])):
                if row["lr"] == end:
                    out.append({"run": run, "lr": row["lr"], "edge": edge, "at": at,
                                "ties_base": ties_base(row, tie_points, sigmas)})
    return out


def bracket_extensions(rows: list[dict], chosen: dict[str, float], base_grid: list[float], max_steps: int,
                       budget: float = MATCHED_RETENTION_LOSS, tie_points: float = BRACKET_TIE_POINTS,
                       sigmas: float = BRACKET_TIE_SIGMAS) -> dict[str, list[float]]:
    """{run: [LR]}: the LR half a decade beyond each edge a chosen, matched or best point sits on,
    unless the run ties with the base there or already went `max_steps` half-decades beyond
    `base_grid` on that side. Empty when every such point is bracketed (or cannot be further)."""
    lo, hi = min(base_grid), max(base_grid)
    out: dict[str, list[float]] = {}
    for e in edge_points(rows, chosen, budget, tie_points, sigmas):
        if e["ties_base"]:
            continue
        lrs = [r["lr"] for r in rows if r["run"] == e["run"]]
        beyond = sum(lr < lo for lr in lrs) if e["edge"] == "low" else sum(lr > hi for lr in lrs)
        if beyond >= max_steps:
            continue
        new = half_decade(e["lr"], -1 if e["edge"] == "low" else 1)
        if new not in lrs and new not in out.get(e["run"], []):
            out.setdefault(e["run"], []).append(new)
    return out


def pm(mean: float, se: float, signed: bool = True) -> str:
    """'+3.1 ± 0.8' ('+3.1' when the SE is unknown, '—' when the mean is)."""
    if mean is None or math.isnan(mean):
        return "—"
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text if se is None or math.isnan(se) else f"{text} ± {se:.1f}"


def edge_notes(edges: list[dict]) -> list[str]:
    """One line naming every point still on an edge of its grid, and whether its method ties with the
    base there (bracketed in effect) or not (the grid stops too early to tell)."""
    if not edges:
        return ["", "Every chosen, matched and best point is interior to its method's grid."]
    said = [f"{e['run']} {'/'.join(e['at'])} at {e['lr']:g} ({e['edge']} edge, "
            f"{'ties with the base there' if e['ties_base'] else 'NOT bracketed: its optimum may lie beyond'})"
            for e in edges]
    return ["", "**Still on an edge of its grid:** " + "; ".join(said) + "."]


def frontier_markdown(rows: list[dict], chosen: dict[str, float], budget: float = MATCHED_RETENTION_LOSS,
                      tie_points: float = BRACKET_TIE_POINTS, sigmas: float = BRACKET_TIE_SIGMAS) -> str:
    """The frontier table (every run × LR) and the main table (chosen and matched points); a point
    still on an edge of its run's grid is marked (⇤ low, ⇥ high) and listed under the table."""
    edges = edge_points(rows, chosen, budget, tie_points, sigmas)
    edge_mark = {(e["run"], e["lr"]): "".join("⇤" if x["edge"] == "low" else "⇥" for x in edges
                                              if (x["run"], x["lr"]) == (e["run"], e["lr"])) for e in edges}
    lines = ["| method | lr | seeds | in-domain gain | OOD gain | retention loss | overall |",
             "|---|---|---|---|---|---|---|"]
    matched = matched_lrs(rows, budget)
    best = best_lrs(rows)
    for r in rows:
        marks = ("★" if chosen.get(r["run"]) == r["lr"] else "") + ("◆" if matched.get(r["run"]) == r["lr"] else "")
        marks += "▲" if best.get(r["run"]) == r["lr"] and not marks else ""
        marks += edge_mark.get((r["run"], r["lr"]), "")
        cells = [r["run"], f"{r['lr']:g}{(' ' + marks) if marks else ''}", str(r["n_seeds"]),
                 pm(r["in_domain_gain"], r["in_domain_gain_se"]), pm(r["ood_gain"], r["ood_gain_se"]),
                 pm(r["retention_loss"], r["retention_loss_se"]),
                 pm(r.get("overall", math.nan), r.get("overall_se", math.nan), signed=False)]
        if "★" in marks:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"★ (bold) validation-chosen LR; ◆ matched point (best in-domain gain with retention loss ≤ {budget:g}); "
              "▲ best point (best in-domain gain at any LR), where it is neither; ⇤ / ⇥ such a point on the "
              "lowest / highest LR its method was swept at.", *edge_notes(edges),
              "", "**Main table** (mean ± SE over seeds): each method at its chosen LR, at its matched point and at "
              "its best point (its best in-domain gain at any LR, whatever it forgets).", "",
              "| method | at | lr | in-domain gain | OOD gain | retention loss |", "|---|---|---|---|---|---|"]
    for t in main_table(rows, chosen, budget):
        lr = "none within budget" if t["lr"] is None else f"{t['lr']:g}" + edge_mark.get((t["run"], t["lr"]), "")
        lines.append(f"| {t['run']} | {t['at']} | {lr} | {pm(t['in_domain_gain'], t['in_domain_gain_se'])} | "
                     f"{pm(t['ood_gain'], t['ood_gain_se'])} | {pm(t['retention_loss'], t['retention_loss_se'])} |")
    return "\n".join(lines) + "\n"
