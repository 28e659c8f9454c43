"""Every figure of the study: one function per figure, called by the notebooks and by the report.

Drawing functions take plain data (dicts, DataFrames) and return a matplotlib Figure; the
`load_*` helpers read a stage folder into that data, so the report draws from stored files
exactly what the notebook showed (`spotlib.report.figures` lists them by stage). One colour per method across all figures (`color`); a
variant of a method (other data `@direct`, another δ `:ema`) keeps the method's colour and
changes the line style or hatch. Figures are at most 10 inches wide, legends use 9-point
type and sit outside the data, each listing only what its own panel draws.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# The look of every figure (it picks the backend first); plots.color, plots.label, ... as the notebooks call them.
from spotlib.report.plot_style import (LEGEND_SIZE, MAX_WIDTH, METHOD_COLORS, METHOD_NAMES, STYLE,  # noqa: F401
                                       _close, _figure, _legend_below, _legend_right, coinciding, color, hatch,
                                       label, linestyle, method_of, same_as, save, unlabelled_axes)


# ------------------------------------------------------------------ 01 sampling
def accuracy_by_group(by_group: dict) -> Figure:
    groups = list(by_group)
    fig, axes = _figure(6, 3.4)
    ax = axes[0, 0]
    acc = [by_group[g]["accuracy"] for g in groups]
    ax.bar(range(len(groups)), acc, color=METHOD_COLORS["base"])
    for i, g in enumerate(groups):
        ax.text(i, acc[i] + 0.02, f"n={int(by_group[g]['n'])}", ha="center", fontsize=9)
    ax.set_xticks(range(len(groups)), groups)
    ax.set(ylabel="accuracy", ylim=(0, 1.1), xlabel="group", title="Student accuracy by difficulty")
    return _close(fig)


def first_error_positions(positions: list[float]) -> Figure:
    fig, axes = _figure(6, 3.4)
    ax = axes[0, 0]
    ax.hist(positions, bins=[i / 10 for i in range(11)], color="#d62728", edgecolor="white")
    ax.set(xlabel="first wrong step / number of steps", ylabel="wrong answers",
           title="Where the first error falls")
    return _close(fig)


# ------------------------------------------------------------------ 02 rectify
def oracle_outcomes(summary: dict) -> Figure:
    counts = {"rectified": summary.get("rectified_ok", 0),
              **{f"failed: {k}": v for k, v in (summary.get("rectify_failures") or {}).items()}}
    fig, axes = _figure(7, 1.6 + 0.4 * len(counts))
    ax = axes[0, 0]
    names = list(counts)
    ax.barh(range(len(names)), list(counts.values()), color=["#2ca02c"] + ["#d62728"] * (len(names) - 1))
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    cost = summary.get("cost_usd") or 0.0
    ax.set(xlabel="student errors", ylabel="outcome", title=f"Oracle outcomes (cost ≈ ${cost:.2f})")
    return _close(fig)


# ------------------------------------------------------------------ 03 filter
def proximity(scored: list[dict], kept_by_gamma: dict, gamma: float, unit: str) -> Figure:
    fig, axes = _figure(10, 3.6, ncols=3)
    ratio_ax, kept_ax, edit_ax = axes[0]
    ratio_ax.hist([s["change_ratio"] for s in scored], bins=[i / 20 for i in range(21)], color="#1f77b4")
    ratio_ax.axvline(gamma, color="black", ls="--", label=f"γ = {gamma}")
    ratio_ax.set(xlabel=f"change ratio R ({unit})", ylabel="pairs", title="How much y⁺ changes y⁻")
    _legend_below(ratio_ax, ncol=1)
    kept_ax.plot([float(g) for g in kept_by_gamma], list(kept_by_gamma.values()), marker="o", color="#1f77b4")
    kept_ax.set(xlabel="γ", ylabel="pairs kept (R ≤ γ)", title="Pairs kept by the filter")
    distances = [int(s["edit_distance_tokens"]) for s in scored]
    edit_ax.hist(distances, bins=integer_bins(distances), color="#2ca02c", edgecolor="white")
    for ax in (ratio_ax, kept_ax, edit_ax):  # counts of pairs: whole numbers
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    edit_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    edit_ax.set(xlabel="token edit distance (tokens)", ylabel="pairs", title="Tokens edited")
    return _close(fig)


def integer_bins(values: list[int], most: int = 40) -> list[float]:
    """Bin edges at half-integers, so each bar holds whole counts (one value per bar up to `most` values,
    then equal runs of whole numbers)."""
    if not values:
        return [-0.5, 0.5]
    lo, hi = min(values), max(values)
    width = max(1, math.ceil((hi - lo + 1) / most))
    return [lo - 0.5 + width * i for i in range(math.ceil((hi - lo + 1) / width) + 1)]


NLL_TARGETS = {"y_minus": "y⁻ (own)", "y_plus": "y⁺ (rectified)", "direct": "direct",
               "y_plus_within_gamma": "y⁺, R ≤ γ", "y_plus_beyond_gamma": "y⁺, R > γ"}


def student_nll(nll: dict) -> Figure:
    keys = [k for k in NLL_TARGETS if k in nll]
    values = [nll[k]["nll_per_token"] if nll[k].get("nll_per_token") is not None else math.nan for k in keys]
    fig, axes = _figure(7, 3.4)
    ax = axes[0, 0]
    ax.bar(range(len(keys)), values, color=["#7f7f7f", "#9467bd", "#1f77b4", "#c5b0d5", "#5b3a8c"][:len(keys)])
    top = max((v for v in values if not math.isnan(v)), default=1.0)
    for i, (key, value) in enumerate(zip(keys, values)):
        n = nll[key].get("n")
        if math.isnan(value):  # an empty bar says why it is empty
            ax.text(i, 0.02 * top, "no pairs" + (f" (n = {n})" if n is not None else ""), ha="center",
                    va="bottom", fontsize=8, color="#444444")
        elif n is not None:
            ax.text(i, value, f"n = {n}", ha="center", va="bottom", fontsize=8)
    if any(math.isnan(v) for v in values):
        ax.text(0.99, 0.99, "an empty bar: no pair of that kind in this run", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="#444444")
    ax.set_xticks(range(len(keys)), [NLL_TARGETS[k] for k in keys])
    ax.set(xlabel="target text", ylabel="student NLL, nats per token",
           title="How surprising each target is to the student")
    return _close(fig)


def training_data(available: dict, per_method: int) -> Figure:
    fig, axes = _figure(7, 3.4)
    ax = axes[0, 0]
    names = list(available)
    ax.bar(range(len(names)), [available[n] for n in names], color="#7f7f7f", label="available")
    ax.axhline(per_method, color="black", ls="--", label=f"used per method ({per_method})")
    ax.set_xticks(range(len(names)), names)
    ax.set(xlabel="training data", ylabel="examples", title="Training data: available vs used")
    _legend_right(ax)
    return _close(fig)


POINTS_FILE = "proximity_points.jsonl"  # per pair: what the proximity figure draws


def save_filter_figures(report: dict, scored: list[dict], out_dir: Path, gamma: float) -> list[Path]:
    """Stage 03's figures and the per-pair numbers behind them (the report redraws from those)."""
    from spotlib.io import write_jsonl

    out_dir = Path(out_dir)
    write_jsonl(out_dir / POINTS_FILE, [{"id": s.get("id"), "change_ratio": s["change_ratio"],
                                         "edit_distance_tokens": s["edit_distance_tokens"]} for s in scored])
    files = [save(proximity(scored, report["kept_by_gamma"], gamma, report.get("unit", "tokens")),
                  out_dir / "proximity.png")]
    if report.get("nll"):
        files.append(save(student_nll(report["nll"]), out_dir / "nll.png"))
    else:  # an earlier run's figure must not pass for this run's
        (out_dir / "nll.png").unlink(missing_ok=True)
    return files


# ------------------------------------------------------------------ 04 training
SFT_TOKENS = 60  # a typical |y⁺| on the tiny world: SFT's weight 1/|y⁺| ≈ 0.017 (`tether/chosen` of SFT runs)


def gradient_weights(beta: float = 1.0, delta: float = 1.0, sft_tokens: int = SFT_TOKENS) -> Figure:
    """The weights on ∇log π(y⁺) and −∇log π(y⁻) as functions of the rewards (spotlib.losses).

    All on the sequence log-prob log π(y|x) = Σ_t log π(y_t|…): SFT's token-mean NLL puts 1/|y⁺| on
    it (weight 1 on each token's log-prob, averaged), drawn at |y⁺| = `sft_tokens`."""
    import torch

    from spotlib import losses

    r = torch.linspace(-6, 6, 241)
    fig, axes = _figure(10, 3.8, ncols=2, sharey=True)
    pos_ax, neg_ax = axes[0]
    # Reward-SFT, BCE and DPO at r⁻ = 0 share βσ(−r⁺): drawn with distinct styles and markers.
    curves = [("reward_sft", {}, "-", None, "Reward-SFT"),
              ("bce", {}, "--", "o", "SPoT-BCE"),
              ("dpo", {}, ":", "s", "DPO (r⁻ = 0)"),
              ("bco", {"delta": delta}, "-", None, f"SPoT-BCO (δ = {delta:g})")]
    method = {"reward_sft": "reward_sft", "bce": "spot_bce", "dpo": "dpo", "bco": "spot_bco"}
    for name, kwargs, ls, marker, text in curves:
        rejected = torch.zeros_like(r) if name == "dpo" else -r
        w_pos, w_neg = losses.gradient_weights(name, r, rejected, beta=beta, **kwargs)
        style = dict(color=METHOD_COLORS[method[name]], ls=ls, marker=marker, markevery=20, ms=5, lw=2)
        pos_ax.plot(r, w_pos, label=text, **style)
        if name in ("bce", "bco"):
            neg_ax.plot(-r, w_neg, label=text, **style)
    sft_weight = losses.gradient_weights("sft", r[:1], chosen_counts=torch.tensor([sft_tokens]))[0].item()
    pos_ax.axhline(sft_weight, color=METHOD_COLORS["sft"], lw=1.5, ls="-.",
                   label=f"SFT: 1/|y⁺| = {sft_weight:.3f} at |y⁺| = {sft_tokens}, never falls")
    pos_ax.set(xlabel="r⁺ (reward on y⁺)", ylabel="weight on the sequence log-prob",
               title="Pull on the right answer: weight on ∇log π(y⁺)")
    neg_ax.set(xlabel="r⁻ (reward on y⁻)", ylabel="weight on the sequence log-prob",
               title="Push on the wrong answer: weight on −∇log π(y⁻)")
    neg_ax.yaxis.set_tick_params(labelleft=True)
    _legend_below(pos_ax)
    _legend_below(neg_ax)
    return _close(fig)


def load_training_metrics(stage_dir: Path, runs: list[dict] | None = None) -> tuple:
    """(train, probes): per-run, per-step means over seeds of stage 04's metrics.jsonl files; with
    several seeds, `std:<metric>` holds the std across seeds (the figures' noise bands)."""
    import pandas as pd

    from spotlib.io import read_jsonl

    stage_dir = Path(stage_dir)
    if runs is None:
        runs = read_jsonl(stage_dir / "runs.jsonl") if (stage_dir / "runs.jsonl").is_file() else []
    frames = {"train": [], "probe": []}
    for s in runs:
        # the run folder inside this stage folder (a copied study keeps its old absolute paths)
        run_dir = stage_dir / Path(s["dir"]).parent.name / Path(s["dir"]).name
        if not (run_dir / "metrics.jsonl").is_file():
            run_dir = Path(s["dir"])
        records = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
        for kind in frames:
            recs = [r for r in records if r.get("kind") == kind]
            if recs:
                frames[kind].append(pd.DataFrame(recs).assign(run=s["run"], seed=s["seed"]))
    out = []
    for kind in ("train", "probe"):
        if frames[kind]:
            grouped = pd.concat(frames[kind]).groupby(["run", "step"])
            df = grouped.mean(numeric_only=True).reset_index()
            if grouped["seed"].nunique().max() > 1:
                spread = grouped.std(numeric_only=True).drop(columns="seed", errors="ignore").add_prefix(STD_PREFIX)
                df = df.merge(spread.reset_index(), on=["run", "step"])
        else:
            df = pd.DataFrame(columns=["run", "step"])
        out.append(df)
    return tuple(out)


STD_PREFIX = "std:"  # load_training_metrics: the spread across seeds of a metric, per run and step


def run_panels(df, keys: list[str], titles: list[str], ylabels: list[str],
               ncols: int | None = None, only=None) -> Figure:
    """One panel per metric; each panel draws the runs that have the metric and holds their legend.

    Where the runs have several seeds, a band shows ± one std across seeds around the mean. Runs
    whose lines coincide are named together in the legend and on the panel (one line hides the
    others). `only(run)` restricts every panel to some runs (e.g. δ exists only for BCO)."""
    present = [i for i, k in enumerate(keys) if k in df.columns]
    keys, titles, ylabels = [keys[i] for i in present], [titles[i] for i in present], [ylabels[i] for i in present]
    ncols = ncols or min(len(keys), 3) or 1
    nrows = max(1, math.ceil(len(keys) / ncols))
    legend_ncol = 2 if ncols > 1 else 3
    legend_rows = math.ceil(df["run"].nunique() / legend_ncol) if len(df) else 0
    fig, axes = _figure(10 if ncols > 1 else 6, (3.1 + 0.22 * legend_rows) * nrows, ncols=ncols, nrows=nrows)
    for i, ax in enumerate(axes.flat):
        if i >= len(keys):
            ax.set_visible(False)
            continue
        key = keys[i]
        series = {}
        for run, g in df.groupby("run"):
            if only is not None and not only(run):
                continue
            g = g[g[key].notna()] if key in g else g.iloc[0:0]
            if len(g):
                series[run] = (g["step"].tolist(), g[key].tolist(), g.get(STD_PREFIX + key))
        groups = coinciding({r: v[:2] for r, v in series.items()})
        suffix = same_as(groups)
        for run, (steps, values, spread) in series.items():
            ax.plot(steps, values, color=color(run), ls=linestyle(run), lw=1.8, label=label(run) + suffix.get(run, ""))
            if spread is not None and spread.notna().any():
                import numpy as np

                mean, sd = np.asarray(values, float), np.nan_to_num(np.asarray(spread, float))
                ax.fill_between(steps, mean - sd, mean + sd, color=color(run), alpha=0.15, lw=0)
        notes = ["lines coincide: " + " = ".join(label(r) for r in group) for group in groups]
        if any(spread is not None and spread.notna().any() for _, _, spread in series.values()):
            notes.append("band: ± 1 std across seeds")
        if notes:
            ax.text(0.01, 0.99, "\n".join(sorted(notes)), transform=ax.transAxes, va="top", ha="left",
                    fontsize=7.5, color="#444444")
        ax.set(title=titles[i], xlabel="optimiser step", ylabel=ylabels[i])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_below(ax, ncol=legend_ncol)
    return _close(fig)


REWARD_UNIT = "β·(log π_θ − log π_ref), per sequence"


def reward_curves(train) -> Figure:
    return run_panels(train, ["rewards/chosen", "rewards/rejected"],
                      ["r⁺ on training batches (batch mean)", "r⁻ on training batches (batch mean)"],
                      [f"r⁺ = {REWARD_UNIT}", f"r⁻ = {REWARD_UNIT}"], ncols=2)


def delta_curves(train) -> Figure | None:
    """δ exists only for SPoT-BCO runs."""
    if "delta" not in train.columns or not train["delta"].notna().any():
        return None
    return run_panels(train, ["delta"], ["δ, the moving reward baseline (SPoT-BCO)"],
                      ["δ (reward units: β·nats per sequence)"], ncols=1,
                      only=lambda run: method_of(run) == "spot_bco")


def tether_weights(train) -> Figure:
    return run_panels(train, ["tether/chosen", "tether/rejected"],
                      ["Mean weight on ∇log π(y⁺)", "Mean weight on −∇log π(y⁻) (pair objectives)"],
                      ["weight on the sequence log-prob (SFT-type: 1/|y⁺|)", "weight on the sequence log-prob"],
                      ncols=2)


def heldout_kl(probes) -> Figure:
    keys = [k for k in probes.columns if k.startswith("kl/")]
    return run_panels(probes, keys, [k.replace("kl/", "KL to π_ref: ") for k in keys],
                      ["KL(π_θ ‖ π_ref), nats per token"] * len(keys), ncols=min(2, len(keys)) or 1)


def edit_probes(probes) -> Figure:
    return run_panels(probes, ["edit/before", "edit/at", "edit/after", "fixed/margins"],
                      ["Δ log π on y⁻ before the edit", "Δ log π on y⁻ at the first edit",
                       "Δ log π on y⁻ after the edit", "r⁺ − r⁻ on fixed pairs"],
                      ["log π_θ − log π_ref, nats per token"] * 3 + [REWARD_UNIT], ncols=2)


# ------------------------------------------------------------------ 04 the tether lesson
POSITIVE_COLOR, NEGATIVE_COLOR, DELTA_COLOR = "#1a9850", "#b2182b", "#404040"  # y⁺, y⁻, δ in the lesson


def tether_lesson(curve: dict, lr: float | None = None) -> Figure:
    """One SPoT-BCO run (`spotlib.analysis.tether.tether_curve`): r⁺, r⁻ and δ per step (left); the weights
    λ⁺, λ⁻ the batch received (mean over its examples) and βσ(·) of the batch-mean rewards (right)."""
    train, beta = curve["train"], curve["beta"]
    fig, axes = _figure(10, 3.9, ncols=2)
    left, right = axes[0]
    steps = train["step"]
    left.plot(steps, train["r_chosen"], color=POSITIVE_COLOR, lw=1.8, label="r⁺ (y⁺, batch mean)")
    left.plot(steps, train["r_rejected"], color=NEGATIVE_COLOR, lw=1.8, label="r⁻ (y⁻, batch mean)")
    left.plot(steps, train["delta"], color=DELTA_COLOR, lw=1.8, ls="--", label="δ")
    left.axhline(0, color="grey", lw=0.7)
    left.set(xlabel="step", ylabel="reward  r = β log(π/π_ref)", title="Rewards and δ")
    right.plot(steps, train["lambda_chosen"], color=POSITIVE_COLOR, lw=1.8, label="λ⁺ received")
    right.plot(steps, train["lambda_rejected"], color=NEGATIVE_COLOR, lw=1.8, label="λ⁻ received")
    right.plot(steps, train["w_chosen"], color=POSITIVE_COLOR, lw=1.0, ls=":", label="βσ(δ − r⁺) of the means")
    right.plot(steps, train["w_rejected"], color=NEGATIVE_COLOR, lw=1.0, ls=":", label="βσ(r⁻ − δ) of the means")
    right.axhline(beta / 2, color="grey", lw=0.9, ls="--", label="β/2 (reward = δ)")
    right.set(xlabel="step", ylabel="gradient weight", ylim=(0, beta),
              title="The tether: λ⁺ on ∇log π(y⁺), λ⁻ on −∇log π(y⁻)")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_below(ax)
    if lr is not None:
        fig.suptitle(f"SPoT-BCO at learning rate {lr:g}, β = {beta:g}", fontsize=11)
    return _close(fig)


STEP_LABEL_GAP = 0.08  # axes fraction between two step labels: closer ones are left unlabelled


def rewards_against_kl(curve: dict) -> Figure:
    """At each probe step: the held-out KL(π_θ‖π_ref) per token (x) against r/β on the fixed pairs (y).

    Points carry their step where a label has room (the first and the last always): labels closer
    than `STEP_LABEL_GAP` to one already placed would overlap and are left out."""
    probe, beta = curve["probe"], curve["beta"]
    fig, axes = _figure(6.5, 4.2)
    ax = axes[0, 0]
    kl = probe["kl"]
    series = []
    for key, color_, name, offset in (("fixed_r_chosen", POSITIVE_COLOR, "r⁺/β  (y⁺)", (4, 4)),
                                      ("fixed_r_rejected", NEGATIVE_COLOR, "r⁻/β  (y⁻)", (4, -11))):
        ys = [r / beta for r in probe[key]]
        ax.plot(kl, ys, "o-", color=color_, lw=1.2, ms=4, label=name)
        series.append((ys, color_, offset))
    ax.axhline(0, color="grey", lw=0.7)
    ax.autoscale_view()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float]] = []
    for ys, color_, offset in series:
        points = [(step, x, y) for step, x, y in zip(probe["step"], kl, ys) if not (math.isnan(x) or math.isnan(y))]
        order = points[:1] + points[-1:] + points[1:-1]  # the ends first: they are always labelled
        for step, x, y in order:
            fx, fy = (x - x0) / ((x1 - x0) or 1), (y - y0) / ((y1 - y0) or 1) + offset[1] / 420
            if any(math.hypot(fx - px, fy - py) < STEP_LABEL_GAP for px, py in placed):
                continue
            placed.append((fx, fy))
            ax.annotate(f"{step}", (x, y), fontsize=7, xytext=offset, textcoords="offset points", color=color_)
    ax.set(xlabel="held-out KL(π_θ ‖ π_ref), nats per token", ylabel="log π_θ(y) − log π_ref(y), nats per sequence",
           title="Rewards on the fixed pairs against the held-out KL\n(numbers: optimiser step)")
    _legend_right(ax)
    return _close(fig)


# ------------------------------------------------------------------ 05 evaluation
SCORE_COLUMNS = ("in_domain", "ood", "general", "overall")


def same_rows(table: list[dict], columns=SCORE_COLUMNS) -> list[list[str]]:
    """Groups of runs whose scores are equal in every column (e.g. SPoT-BCO with δ ≈ 0 and SPoT-BCE)."""
    series = {t["run"]: (list(columns), [t.get(c, math.nan) for c in columns]) for t in table}
    return coinciding(series, tolerance=1e-9)


def score_bars(table: list[dict]) -> Figure:
    """Grouped by score column, one bar per run in its method's colour; whiskers: std across seeds."""
    columns = [c for c in SCORE_COLUMNS if any(c in t for t in table)]
    fig, axes = _figure(10, 4.6)
    ax = axes[0, 0]
    width = 0.85 / max(1, len(table))
    same = same_as(same_rows(table, columns))
    for j, t in enumerate(table):
        xs = [i + (j - (len(table) - 1) / 2) * width for i in range(len(columns))]
        ax.bar(xs, [t.get(c, math.nan) for c in columns], width, color=color(t["run"]), hatch=hatch(t["run"]),
               edgecolor="white", lw=0.3, yerr=[t.get(f"{c}_std", 0) or 0 for c in columns],
               error_kw={"capsize": 1.5, "lw": 0.8}, label=label(t["run"]) + same.get(t["run"], ""))
    ax.set_xticks(range(len(columns)), [c.replace("_", "-") for c in columns])
    ax.set(xlabel="score column (benchmark group)", ylabel="score (%)", ylim=(0, 100), title="Scores by method (mean ± std across seeds)")
    _legend_below(ax, ncol=4)
    return _close(fig)


def retention_noise(table: list[dict], tie_sigmas: float) -> float | None:
    """Half-width of the tie band on retention loss for a run as noisy as the base model:
    tie_sigmas · √2 · SE of the base model's general score (`spotlib.analysis.tables`' tie rule)."""
    base = next((t for t in table if t["run"] == "base"), None)
    se = base.get("general_se") if base else None
    return tie_sigmas * math.sqrt(2) * float(se) if se is not None and not math.isnan(float(se)) else None


def _same_points(points: list[dict], base_general: float) -> list[list[str]]:
    """Runs whose checkpoints sit on the same points (every seed's KL and retention loss)."""
    by_run: dict[str, list[dict]] = {}
    for r in points:
        by_run.setdefault(r["run"], []).append(r)
    ordered = {run: sorted(rs, key=lambda r: r.get("seed") or 0) for run, rs in by_run.items()}
    kl = {run: (list(range(len(rs))), [r["kl"] for r in rs]) for run, rs in ordered.items()}
    loss = {run: (list(range(len(rs))), [base_general - r["general"] for r in rs]) for run, rs in ordered.items()}
    pairs = {frozenset((a, b)) for group in coinciding(loss) for a in group for b in group if a != b}
    out = []
    for group in coinciding(kl):
        together = [r for r in group if any(frozenset((r, o)) in pairs for o in group if o != r)]
        if len(together) > 1:
            out.append(together)
    return out


def kl_scatter(rows: list[dict], base_general: float, noise: float | None = None) -> Figure:
    """One point per checkpoint. `noise`: the half-width of the band around 0 retention loss inside which
    a difference from the base model is within noise (`retention_noise`)."""
    fig, axes = _figure(8, 4.2)
    ax = axes[0, 0]
    points = [r for r in rows if r["run"] != "base" and r.get("kl") is not None]
    groups = _same_points(points, base_general)
    suffix = same_as(groups)
    for run in sorted({r["run"] for r in points}):
        mine = [r for r in points if r["run"] == run]
        ax.scatter([r["kl"] for r in mine], [base_general - r["general"] for r in mine], s=40,
                   color=color(run), marker="s" if "@" in run else "^" if ":" in run else "o",
                   label=label(run) + suffix.get(run, ""))
    ax.axhline(0, color="grey", lw=0.8)
    notes = ["same points: " + " = ".join(label(r) for r in group) for group in groups]
    if noise:
        ax.axhspan(-noise, noise, color="grey", alpha=0.15, lw=0, label=f"within noise of the base (± {noise:.1f})")
        notes.append("grey band: loss within noise (a tie)")
    if notes:
        ax.text(0.01, 0.99, "\n".join(sorted(notes)), transform=ax.transAxes, va="top", ha="left", fontsize=7.5,
                color="#444444")
    ax.set(xlabel=r"held-out token KL($\pi_\theta \,\|\, \pi_{\rm ref}$), end of training, nats per token",
           ylabel="retention loss (general, points)", title="Distance moved vs knowledge lost")
    _legend_right(ax)
    return _close(fig)


def load_evaluation(stage_dir: Path) -> dict | None:
    path = Path(stage_dir) / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def base_general(table: list[dict]) -> float:
    return next((t["general"] for t in table if t["run"] == "base"), float("nan"))


# ------------------------------------------------------------------ 06 RL
def _rl_panels(curves, keys: list[str], titles: list[str], ylabels: list[str]) -> Figure:
    fig, axes = _figure(10 if len(keys) > 1 else 6.5, 4.0, ncols=len(keys))
    for ax, key, title, ylabel in zip(axes[0], keys, titles, ylabels):
        if key in curves.columns:
            for init, df in curves.dropna(subset=[key]).groupby("init"):
                ax.plot(df["step"], df[key], marker="o", ms=4, lw=1.8, color=color(init),
                        label=f"GRPO from {label(init)}")
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend_below(ax, ncol=2)
    return _close(fig)


def rl_reward(curves) -> Figure:
    return _rl_panels(curves, ["reward_mean"], ["Training reward (rollouts at T = 1)"], ["mean reward (±1)"])


def rl_heldout(curves) -> Figure:
    return _rl_panels(curves, ["heldout_accuracy"], ["Held-out accuracy (greedy)"], ["accuracy"])


def rl_distance(curves) -> Figure:
    return _rl_panels(curves, ["kl", "entropy"], ["Distance from the start", "Policy entropy"],
                      [r"KL($\pi_\theta \,\|\, \pi_{\rm start}$) per token", "nats per token"])


