import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from spotlib.report import figures, plots
from spotlib.train.runspec import METHODS

RUNS = ["sft", "rft", "sft_plus", "kl_sft", "reward_sft", "dpo", "spot_bce", "spot_bco", "spot_bco@direct",
        "spot_bco:ema"]
PAIR_RUNS = {"dpo", "spot_bce", "spot_bco", "spot_bco@direct", "spot_bco:ema"}


def training_frame():
    rows = []
    for k, run in enumerate(RUNS):  # each run its own curve (coinciding runs are named together)
        for step in range(3):
            row = {"run": run, "step": step, "rewards/chosen": 0.1 * step + 0.01 * k,
                   "tether/chosen": 1.0 - 0.1 * step - 0.01 * k}
            if run in PAIR_RUNS:
                row.update({"rewards/rejected": -0.1 * step - 0.01 * k, "tether/rejected": 0.5 + 0.01 * k})
            if plots.method_of(run) == "spot_bco":
                row["delta"] = 0.01 * step + 0.001 * k
            rows.append(row)
    return pd.DataFrame(rows)


def drawn(ax):
    """(label, colour) of every line the panel draws, and the labels its legend lists."""
    lines = [(line.get_label(), to_hex(line.get_color())) for line in ax.get_lines()]
    legend = ax.get_legend()
    return lines, [t.get_text() for t in legend.get_texts()] if legend else []


def test_every_method_has_its_own_colour_and_variants_keep_it():
    colours = {m: plots.color(m) for m in [*METHODS, "base"]}
    assert len(set(colours.values())) == len(colours)
    assert plots.color("spot_bco@direct") == plots.color("spot_bco:ema") == plots.color("spot_bco")
    assert plots.linestyle("spot_bco") != plots.linestyle("spot_bco@direct") != plots.linestyle("spot_bco:ema")
    assert plots.label("spot_bco@direct") == "SPoT-BCO @direct"


def test_tether_panels_each_hold_the_legend_of_what_they_draw():
    fig = plots.tether_weights(training_frame())
    left, right = [ax for ax in fig.axes if ax.get_visible()]
    for ax, runs in ((left, RUNS), (right, sorted(PAIR_RUNS))):
        lines, legend = drawn(ax)
        assert sorted(legend) == sorted(plots.label(r) for r in runs)
        assert sorted(name for name, _ in lines) == sorted(legend)
        for name, colour in lines:  # the colour of a line is its method's, whatever the panel
            run = next(r for r in runs if plots.label(r) == name)
            assert colour == to_hex(plots.color(run))


def test_delta_panel_draws_only_runs_that_have_delta():
    fig = plots.delta_curves(training_frame())
    lines, legend = drawn(fig.axes[0])
    assert sorted(legend) == sorted(plots.label(r) for r in RUNS if plots.method_of(r) == "spot_bco")
    no_delta = training_frame().drop(columns="delta")
    assert plots.delta_curves(no_delta) is None


def test_gradient_weights_coinciding_curves_stay_distinguishable():
    fig = plots.gradient_weights(beta=1.0)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    same = [lines["Reward-SFT"], lines["SPoT-BCE"], lines["DPO (r⁻ = 0)"]]
    ys = [tuple(line.get_ydata()) for line in same]
    assert ys[0] == pytest.approx(ys[1]) and ys[0] == pytest.approx(ys[2])  # the same βσ(−r⁺)
    styles = {(line.get_linestyle(), line.get_marker()) for line in same}
    assert len(styles) == 3


def legible(fig):
    assert fig.get_size_inches()[0] <= plots.MAX_WIDTH + 1e-9
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        assert all(t.get_fontsize() >= 9 for t in legend.get_texts())
        box, data = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not box.overlaps(data), f"legend covers the data of {ax.get_title()!r}"


def test_figures_are_legible_with_legends_outside_the_data():
    table = [{"run": r, "in_domain": 40.0, "ood": 30.0, "general": 60.0, "overall": 45.0, "in_domain_std": 1.0}
             for r in ["base", *RUNS]]
    rows = [{"run": r, "kl": 0.01 * i, "general": 60.0 - i} for i, r in enumerate(RUNS)]
    curves = pd.DataFrame([{"init": i, "step": s, "reward_mean": 0.1 * s, "heldout_accuracy": 0.5, "kl": 0.01,
                            "entropy": 1.0} for i in ("base", "spot_bco") for s in range(3)])
    frame = training_frame()
    for fig in (plots.score_bars(table), plots.kl_scatter(rows, 60.0), plots.tether_weights(frame),
                plots.reward_curves(frame), plots.gradient_weights(), plots.rl_distance(curves),
                plots.rl_reward(curves)):
        legible(fig)


def test_the_registry_names_drawing_functions():
    for stage, specs in figures.FIGURES.items():
        for spec in specs:
            assert callable(getattr(plots, spec.name)), f"{stage}: no plots.{spec.name}"
