"""The learning-rate sweep's figure: in-domain gain against retention loss, one line per method over
its learning rates (mean ± SE), the chosen, matched and best points marked (`spotlib.analysis.frontier`
computes them; `spotlib.stages.sweep` draws this into its folder).
"""
from __future__ import annotations

import math
from pathlib import Path

from spotlib.analysis import frontier
from spotlib.report import plots


def plot_frontier(rows: list[dict], chosen: dict[str, float], path: Path,
                  budget: float = frontier.MATCHED_RETENTION_LOSS) -> Path:
    """In-domain gain against retention loss, one line per method over its LRs (mean ± SE): the whole
    range on the left, and on the right the window around the base where the methods are told apart
    (a collapse tens of points away would otherwise squeeze them into one dot)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (whole, zoom) = plt.subplots(1, 2, figsize=(10, 5.4))
    lines = frontier.frontier_lines(rows)
    matched = frontier.matched_lrs(rows, budget)
    best = frontier.best_lrs(rows)
    for ax in (whole, zoom):
        _draw_frontier(ax, lines, chosen, matched, best, budget, annotate=ax is zoom)
    zoom.set_xlim(*_zoom_window([x for d in lines.values() for x in d["x"]], -2.0, 4 * budget))
    lo, hi = zoom.get_xlim()
    inside = [y for d in lines.values() for x, y in zip(d["x"], d["y"]) if lo <= x <= hi and not math.isnan(y)]
    if inside:
        zoom.set_ylim(max(min(inside) - 2, -15.0), max(inside) + 2)
    whole.set_title("all learning rates", fontsize=9)
    zoom.set_title(f"near the base (★ chosen, ◇ matched, ▲ best, dashed: {budget:g}-point budget)", fontsize=8)
    handles, labels = zoom.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=6, frameon=False)
    fig.suptitle("LR frontier on the validation split: in-domain gain against retention loss", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _zoom_window(xs: list[float], lo: float, hi: float) -> tuple[float, float]:
    """[lo, hi] widened to the points that lie just outside it (by at most half the window each side)."""
    near = [x for x in xs if not math.isnan(x) and lo - (hi - lo) / 2 <= x <= hi + (hi - lo) / 2]
    return min([lo] + [x - 0.5 for x in near if x < lo]), max([hi] + [x + 0.5 for x in near if x > hi])


# The pair objective taken apart: one colour per term variant, dashed lines (plots.color keeps methods').
VARIANT_COLORS = {"+chosen_only": "#bcbd22", "+rejected_only": "#393b79", "+edit_only": "#7b4173"}


def _draw_frontier(ax, lines: dict, chosen: dict[str, float], matched: dict[str, float], best: dict[str, float],
                   budget: float, annotate: bool) -> None:
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(budget, color="grey", lw=0.8, ls="--")
    ax.plot([0], [0], "kx", ms=8, label="base")
    for run, line_data in lines.items():
        xs, ys = line_data["x"], line_data["y"]
        xerr = [0.0 if math.isnan(e) else e for e in line_data["x_se"]]
        yerr = [0.0 if math.isnan(e) else e for e in line_data["y_se"]]
        color = VARIANT_COLORS.get(run[run.find("+"):], plots.color(run)) if "+" in run else plots.color(run)
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", ls="--" if "+" in run else "-", ms=4, lw=1.2,
                    elinewidth=0.7, capsize=2, color=color, mfc="white" if "+" in run else color, label=plots.label(run))
        for lr, x, y in zip(line_data["lr"], xs, ys):
            if annotate:
                ax.annotate(f"{lr:g}", (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points",
                            annotation_clip=True)
            if lr == chosen.get(run):
                ax.plot([x], [y], "*", ms=14, color=color, markeredgecolor="black")
            if lr == matched.get(run):
                ax.plot([x], [y], "D", ms=8, mfc="none", color=color, markeredgecolor="black")
            if lr == best.get(run) and lr not in (chosen.get(run), matched.get(run)):
                ax.plot([x], [y], "^", ms=9, color=color, markeredgecolor="black")
    ax.set_xlabel("retention loss (base − model, general, points) →")
    ax.set_ylabel("in-domain gain (model − base, points)")
