"""What a class reads: every figure and lesson of the notebooks in the report, figures a reader can
read (labelled axes, coinciding runs named, step labels apart, integer bins, empty bars explained),
numbers as a reader expects them, and `make lab` as root with current JupyterLab flags."""
import inspect
import json
import math
import re
import subprocess

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from spotlib.report import figures, lessons, plots
from spotlib.config import REPO_ROOT
from spotlib.formatting import number, tidy, value_table
from spotlib.stages import STAGES

NOTEBOOKS = REPO_ROOT / "notebooks"


def drawing_functions() -> set[str]:
    """The public functions of spotlib.report.plots that return a Figure."""
    return {name for name, fn in inspect.getmembers(plots, inspect.isfunction)
            if fn.__module__ == plots.__name__ and not name.startswith("_")
            and "Figure" in str(inspect.signature(fn).return_annotation)}


def test_every_figure_a_notebook_draws_is_in_the_report_list():
    drawn = drawing_functions()
    assert {"tether_lesson", "rewards_against_kl", "gradient_weights"} <= drawn
    for stage in STAGES:
        source = "\n".join("".join(c["source"]) for c in json.loads((NOTEBOOKS / stage.notebook).read_text())["cells"]
                           if c["cell_type"] == "code")
        called = set(re.findall(r"\bplots\.(\w+)\(", source)) & drawn
        listed = {spec.name for spec in figures.FIGURES[stage.name]}
        assert called <= listed, f"{stage.name}: {sorted(called - listed)} drawn by the notebook, not in the report"


def test_the_lessons_are_tagged_and_their_maths_renders_offline():
    from spotlib.report.html import math_svg

    cells = lessons.lesson_cells(NOTEBOOKS / "04_train_spot.ipynb")
    text = "\n".join(cells)
    for words in ("The weights, derived", "Reading the tether", "What the rewards measure",
                  "How far this learning rate goes", "Why three lines coincide"):
        assert words in text, words
    formulas = re.findall(r"\$\$(.+?)\$\$", text, re.S) + re.findall(r"(?<!\$)\$([^$\n]+?)\$(?!\$)",
                                                                    re.sub(r"\$\$.+?\$\$", "", text, flags=re.S))
    assert len(formulas) > 40
    unparsed = [f for f in formulas if math_svg(f, display=True).startswith("<code>")]
    assert not unparsed, unparsed


def test_the_lesson_says_what_its_figure_shows_and_sft_weight_one_way():
    cells = {c["id"]: "".join(c["source"]) for c in json.loads((NOTEBOOKS / "04_train_spot.ipynb").read_text())["cells"]}
    reading = cells["tether-c"]
    # both cases the tiny world shows, by how far y+ lies from the student: r+ below 0 yet above δ, and r+ climbing
    assert "falls below 0" in reading and "rises far above 0" in reading and "relative" in reading
    assert "in the direction the pair asks for" not in reading
    assert "wrecking" in cells["tether-f"]
    exercise = cells["tether-h"]
    assert "exercise_lr" in exercise and "exercise_beta" in exercise and 'output_dir != "scratch"' in exercise
    everything = "\n".join(cells.values())
    assert "weight 1 per token" not in everything and "× 1/β" not in everything
    assert everything.count("1/|y^+|") >= 3


def _drawn_lines(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_run_panels_name_coinciding_runs_label_every_axis_and_draw_seed_bands():
    rows = []
    for run, scale in (("spot_bce", 1.0), ("spot_bco", 1.0), ("spot_bco:ema", 1.0), ("sft", 2.0)):
        for step in range(1, 5):
            rows.append({"run": run, "step": step, "rewards/chosen": scale * step, "rewards/rejected": -step,
                         plots.STD_PREFIX + "rewards/chosen": 0.1, plots.STD_PREFIX + "rewards/rejected": 0.1})
    fig = plots.reward_curves(pd.DataFrame(rows))
    assert plots.unlabelled_axes(fig) == []
    ax = fig.axes[0]
    names = _drawn_lines(ax)
    assert {"SPoT-BCE", "SPoT-BCO (= SPoT-BCE)", "SPoT-BCO :ema (= SPoT-BCE)", "SFT"} == set(names)
    notes = [t.get_text() for t in ax.texts]
    assert any("lines coincide: SPoT-BCE = SPoT-BCO = SPoT-BCO :ema" in n for n in notes), notes
    assert any("± 1 std across seeds" in n for n in notes)
    assert len(ax.collections) == 4  # one band per run


def test_coinciding_needs_the_same_steps_and_values_within_the_panel_scale():
    same = {"a": ([1, 2], [0.0, 1.0]), "b": ([1, 2], [0.0, 1.0 + 1e-6]), "c": ([1, 2], [0.0, 0.5]),
            "d": ([1, 3], [0.0, 1.0])}
    assert plots.coinciding(same) == [["a", "b"]]


def test_every_figure_function_labels_both_axes():
    by_group = {"2 ops": {"accuracy": 0.5, "n": 10}, "3 ops": {"accuracy": 0.25, "n": 8}}
    scored = [{"change_ratio": 0.1 * i, "edit_distance_tokens": i} for i in range(6)]
    nll = {"y_minus": {"nll_per_token": 0.5, "n": 6}, "y_plus_beyond_gamma": {"nll_per_token": None, "n": 0}}
    train = pd.DataFrame([{"run": "spot_bco", "step": s, "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s,
                           "delta": 0.0, "tether/chosen": 0.05, "tether/rejected": 0.05} for s in range(1, 4)])
    probes = pd.DataFrame([{"run": "spot_bco", "step": s, "kl/probe": 0.01 * s, "edit/before": 0.0, "edit/at": -0.1,
                            "edit/after": 0.0, "fixed/margins": 0.1 * s} for s in range(0, 3)])
    figures = [plots.accuracy_by_group(by_group), plots.first_error_positions([0.1, 0.5]),
               plots.oracle_outcomes({"rectified_ok": 5, "rectify_failures": {"no markers": 1}}),
               plots.proximity(scored, {"0.5": 4}, 0.5, "tokens"), plots.student_nll(nll),
               plots.training_data({"pairs": 10, "direct": 8}, 8), plots.gradient_weights(),
               plots.reward_curves(train), plots.delta_curves(train), plots.tether_weights(train),
               plots.heldout_kl(probes), plots.edit_probes(probes),
               plots.score_bars([{"run": "base", "in_domain": 50, "general": 80}]),
               plots.kl_scatter([{"run": "sft", "kl": 0.01, "general": 70}], 80.0)]
    curves = pd.DataFrame([{"init": "base", "step": s, "reward_mean": 0.1, "heldout_accuracy": 0.5, "kl": 0.0,
                            "entropy": 1.0} for s in range(3)])
    figures += [plots.rl_reward(curves), plots.rl_heldout(curves), plots.rl_distance(curves)]
    for fig in figures:
        assert plots.unlabelled_axes(fig) == [], fig.axes[0].get_title()


def test_the_edit_distance_histogram_bins_whole_tokens_and_an_empty_bar_says_why():
    assert plots.integer_bins([0, 1, 3]) == [-0.5, 0.5, 1.5, 2.5, 3.5]
    wide = plots.integer_bins(list(range(0, 200)))
    assert all(float(e - 0.5).is_integer() for e in wide) and len(wide) <= 42
    scored = [{"change_ratio": 0.1, "edit_distance_tokens": d} for d in (1, 1, 2, 5)]
    edit_ax = plots.proximity(scored, {"0.5": 4}, 0.5, "tokens").axes[2]
    counts = [p.get_height() for p in edit_ax.patches]
    assert counts == [2, 1, 0, 0, 1]  # one bar per whole number of tokens, 1 to 5
    nll = {"y_plus_within_gamma": {"nll_per_token": 0.4, "n": 6}, "y_plus_beyond_gamma": {"nll_per_token": None, "n": 0}}
    texts = [t.get_text() for t in plots.student_nll(nll).axes[0].texts]
    assert "no pairs (n = 0)" in texts and any("empty bar" in t for t in texts)


def test_step_labels_of_the_rewards_against_kl_figure_do_not_collide():
    from spotlib.analysis import tether

    rows = [{"kind": "train", "step": 1, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "delta": 0.0,
             "tether/chosen": 0.05, "tether/rejected": 0.05}]
    for step in range(0, 65, 4):  # probes crowded near the origin, as a slow start makes them
        rows.append({"kind": "probe", "step": step, "kl/probe": 0.001 * math.sqrt(step),
                     "fixed/rewards_chosen": -0.002 * step, "fixed/rewards_rejected": -0.003 * step})
    fig = plots.rewards_against_kl(tether.tether_curve(rows, beta=0.1))
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in fig.axes[0].texts if t.get_text().isdigit()]
    assert {"0", "64"} <= {t.get_text() for t in labels}  # the ends are always labelled
    boxes = [t.get_window_extent(renderer) for t in labels]
    overlapping = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                   for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
    assert not overlapping, overlapping


def test_numbers_read_as_a_reader_expects():
    assert [number(x) for x in (1337.0, 1337, 0.04213, 12.345, 1.2e-5, 0.0, float("nan"))] == \
        ["1337", "1337", "0.0421", "12.3", "1.20e-05", "0", "–"]
    frame = pd.DataFrame({"easy": {"n": 1337, "accuracy": 0.81234}, "hard": {"n": 12, "accuracy": 0.5}}).T
    assert frame["n"].dtype == float  # the transpose that printed 1337.0
    shown = tidy(frame)
    assert shown.loc["easy", "n"] == "1337" and shown.loc["easy", "accuracy"] == "0.812"
    table = value_table({"failures": {"no markers": 2, "cut off": 1}, "cost_usd": 0.0123})
    assert table.loc["failures.no markers", "value"] == "2" and "{" not in table.to_string()


def test_the_report_tables_have_integer_counts_and_no_0_0000_kl():
    from spotlib.report.build import _table, end_of_training_tables

    counts = _table(pd.DataFrame({"n": [1337.0, 12.0], "accuracy": [0.8123, 0.5]}))
    assert "1337" in counts and "e+03" not in counts and "1337.0" not in counts
    final = pd.DataFrame({"kl/probe": [1.2e-5], "fixed/margins": [0.25], "edit/at": [-0.0421]}, index=["sft"])
    text = "\n".join(end_of_training_tables(final))
    assert "1.20e-05" in text and "0.0000" not in text and text.count("**End of training") == 3


def test_a_wide_table_scrolls_in_report_html(tmp_path):
    from spotlib.report.html import markdown_to_html

    wide = "| " + " | ".join(f"column {i}" for i in range(17)) + " |\n|" + "---|" * 17 + "\n|" + " 1 |" * 17 + "\n"
    page = markdown_to_html(wide, base_dir=tmp_path)
    css = re.search(r"table\{([^}]*)\}", page).group(1)
    assert "overflow-x:auto" in css and "display:block" in css


def test_make_lab_starts_as_root_with_the_current_token_flag():
    from jupyter_server.auth.identity import IdentityProvider

    assert "token" in IdentityProvider.class_trait_names()
    out = subprocess.run(["make", "-n", "lab", "TOKEN=abc"], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    line = next(l for l in out.splitlines() if "jupyter lab" in l)
    assert "--IdentityProvider.token=abc" in line and "ServerApp.token" not in line and "NotebookApp" not in line
    import os

    assert ("--allow-root" in line) == (os.geteuid() == 0)


def test_the_report_names_the_command_for_each_empty_section(tmp_path):
    from spotlib.config import load_profile
    from spotlib.report.build import build_report

    text = build_report(load_profile("test", overrides={"output_dir": str(tmp_path / "out")})).read_text()
    assert "make sweep PROFILE=test" in text
    for stage in STAGES:
        assert f"make reproduce PROFILE=test STAGES={stage.name[:2]}" in text, stage.name
    claims = text[text.index("## What the study says about each claim"):]
    assert "make sweep" in claims and "make reproduce" in claims


def test_the_report_reads_notebook_04_in_order_without_the_exercise(tmp_path):
    from spotlib.analysis import tether
    from spotlib.io import write_jsonl

    items = lessons.read(NOTEBOOKS / "04_train_spot.ipynb", set(figures.figure_names()))
    printed = [i.value for i in items if i.kind == "printed"]
    assert printed == ["lesson_summary", "stage_run_summary", "kl_summary", "kl_comparison"]
    drawn = [i.value for i in items if i.kind == "figure"]
    assert drawn == [spec.name for spec in figures.FIGURES["04_train_spot"]]  # each once, in the report's order
    records = [{"kind": "train", "step": s, "rewards/chosen": -0.1 * s, "rewards/rejected": -0.3 * s,
                "delta": -0.2 * s, "tether/chosen": 0.04, "tether/rejected": 0.03} for s in (1, 2)]
    records += [{"kind": "probe", "step": s, "kl/probe": 0.1 * s, "fixed/rewards_chosen": -0.1 * s,
                 "fixed/rewards_rejected": -0.2 * s} for s in (0, 2)]
    for run_dir in (tmp_path / "04_train_spot" / "tether" / "spot_bco" / "seed0", tmp_path / "04_train_spot" / "spot_bco" / "seed0"):
        write_jsonl(run_dir / "metrics.jsonl", records)
    lesson = {"dir": tmp_path / "04_train_spot" / "tether" / "spot_bco" / "seed0", "lr": 1e-3, "stage_lr": 1e-5,
              "seed": 0, "own_run": True, "beta": 0.1}
    texts = tether.lesson_texts(lesson)
    assert set(printed) <= set(texts) and all(texts.values())
    # r⁺ fell below 0 yet sits above δ: the reading says the tether let go relative to δ
    assert "only because δ fell further" in texts["lesson_summary"] and "r⁺ fell below 0 at step 1" in texts["lesson_summary"]


def test_the_kl_scatter_draws_the_noise_band_and_names_equal_runs():
    table = [{"run": "base", "general": 80.0, "general_se": 1.0, "in_domain": 50.0},
             {"run": "spot_bce", "general": 79.0, "in_domain": 52.0}, {"run": "spot_bco", "general": 79.0, "in_domain": 52.0}]
    noise = plots.retention_noise(table, 2.0)
    assert noise == pytest.approx(2 * math.sqrt(2))
    assert plots.same_rows(table) == [["spot_bce", "spot_bco"]]
    rows = [{"run": r, "seed": s, "kl": 0.01 * (s + 1), "general": 79.0} for r in ("spot_bce", "spot_bco", "sft")
            for s in (0, 1)]
    rows = [dict(r, kl=0.05) if r["run"] == "sft" else r for r in rows]
    ax = plots.kl_scatter(rows, 80.0, noise).axes[0]
    names = _drawn_lines(ax)
    assert "SPoT-BCO (= SPoT-BCE)" in names and any(n.startswith("within noise of the base (± 2.8)") for n in names)
    assert any("same points: SPoT-BCE = SPoT-BCO" in t.get_text() for t in ax.texts)
    bars = plots.score_bars(table).axes[0]
    assert "SPoT-BCO (= SPoT-BCE)" in _drawn_lines(bars)
