"""How every figure of the study looks: one colour per method (a variant keeps its method's colour
and changes the line style or hatch), its name in a legend, at most 10 inches wide, 9-point
legends outside the data, and the checks that no panel is left unlabelled.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

if not matplotlib.get_backend().lower().startswith(("module://matplotlib_inline", "module://ipykernel")):
    matplotlib.use("Agg")  # no display outside a notebook; inline backends stay as they are
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

MAX_WIDTH = 10.0
LEGEND_SIZE = 9
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": LEGEND_SIZE,
         "xtick.labelsize": 9, "ytick.labelsize": 9}

# One colour per method, the same in every figure of the study (base model and its GRPO run: grey).
METHOD_COLORS = {
    "base": "#7f7f7f", "sft": "#1f77b4", "rft": "#17becf", "sft_plus": "#9467bd", "kl_sft": "#8c564b",
    "dpo": "#ff7f0e", "reward_sft": "#2ca02c", "spot_bce": "#e377c2", "spot_bco": "#d62728",
}
METHOD_NAMES = {
    "base": "base", "sft": "SFT", "rft": "RFT", "sft_plus": "SFT+", "kl_sft": "KL-SFT", "dpo": "DPO",
    "reward_sft": "Reward-SFT", "spot_bce": "SPoT-BCE", "spot_bco": "SPoT-BCO",
}
_EXTRA = ["#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173"]


def method_of(run: str) -> str:
    """`spot_bco@direct:ema` -> `spot_bco`."""
    return run.split("@")[0].split(":")[0].split("~")[0]


def color(run: str) -> str:
    method = method_of(run)
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    return _EXTRA[sum(map(ord, method)) % len(_EXTRA)]


def label(run: str) -> str:
    """Display name: `spot_bco@direct` -> `SPoT-BCO @direct`."""
    method = method_of(run)
    return METHOD_NAMES.get(method, method) + run[len(method):].replace("@", " @").replace(":", " :")


def linestyle(run: str) -> str:
    return ":" if ":" in run else "--" if "@" in run else "-"


def hatch(run: str) -> str | None:
    return ".." if ":" in run else "//" if "@" in run else None


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kwargs):
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(min(width, MAX_WIDTH), height), squeeze=False,
                                 layout="constrained", **kwargs)
    fig.set_dpi(100)
    return fig, axes


def _legend_below(ax, ncol: int = 2, **kwargs) -> None:
    handles, names = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
                  fontsize=LEGEND_SIZE, frameon=False, **kwargs)


def _legend_right(ax, **kwargs) -> None:
    handles, names = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LEGEND_SIZE,
                  frameon=False, **kwargs)


def unlabelled_axes(fig: Figure) -> list[str]:
    """The visible panels of `fig` missing an x or a y label, by title: what a reader cannot read."""
    missing = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        absent = [name for name, text in (("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if not text.strip()]
        if absent:
            missing.append(f"{ax.get_title() or 'untitled panel'}: no {'/'.join(absent)} label")
    return missing


def coinciding(series: dict, tolerance: float = 1e-3) -> list[list[str]]:
    """Groups of names whose curves lie on top of each other: the same steps and every value within
    `tolerance` × the panel's range. `series`: name -> (xs, ys). Groups of one are left out."""
    import numpy as np

    values = [np.asarray(ys, dtype=float) for _, ys in series.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    scale = max(float(np.ptp(finite)) if finite.size else 0.0, 1e-12)
    groups: list[list[str]] = []
    for name, (xs, ys) in series.items():
        for group in groups:
            other_xs, other_ys = series[group[0]]
            if (len(xs) == len(other_xs) and np.array_equal(np.asarray(xs), np.asarray(other_xs))
                    and np.allclose(np.asarray(ys, float), np.asarray(other_ys, float), rtol=0,
                                    atol=tolerance * scale, equal_nan=True)):
                group.append(name)
                break
        else:
            groups.append([name])
    return [g for g in groups if len(g) > 1]


def same_as(groups: list[list[str]]) -> dict[str, str]:
    """Legend suffixes for runs that draw the same line or bar: each but the first of its group says
    which run it equals (`SPoT-BCO (= SPoT-BCE)`), so the legend explains the hidden lines."""
    return {run: f" (= {label(group[0])})" for group in groups for run in group[1:]}


def _close(fig: Figure) -> Figure:
    """Detach from pyplot: the notebook shows the returned figure once, the report saves it."""
    plt.close(fig)
    return fig


def save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
