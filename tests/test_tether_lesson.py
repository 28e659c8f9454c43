"""The tether lesson of notebook 04: stage 04's SPoT-BCO run at `train.tether_lr`, its weights
against βσ(·) of `spotlib.losses`, and the notebook's lesson cells under papermill."""
import json

import pytest
import torch
import yaml

from spotlib.analysis import tether
from spotlib.config import PARAMS_DIR, ConfigError, load_profile
from spotlib.io import read_jsonl
from spotlib.losses import gradient_weights

from pairs_helpers import micro_pair_inputs

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(profile, tmp_path):
    return micro_pair_inputs(profile, tmp_path)


def test_tether_lr_defaults_to_the_top_of_the_grid_and_is_checked(tmp_path):
    out = {"output_dir": str(tmp_path)}
    grid = load_profile("test", overrides={**out, "train.tether_lr": None, "train.lr_grid": [1e-5, 3e-4, 1e-4]})
    assert tether.demonstration_lr(grid.train) == 3e-4 and tether.demonstration_needed(grid.train)
    none = load_profile("test", overrides={**out, "train.tether_lr": None, "train.lr_grid": []})
    assert tether.demonstration_lr(none.train) is None and not tether.demonstration_needed(none.train)
    same = load_profile("test", overrides={**out, "train.tether_lr": 1e-4})  # = the stage's SPoT-BCO LR
    assert not tether.demonstration_needed(same.train) and tether.demonstration_finished(same)
    with pytest.raises(ConfigError, match="train.tether_lr: expected a learning rate > 0"):
        load_profile("test", overrides={**out, "train.tether_lr": -1e-3})


def test_the_demonstration_run_is_keyed_by_its_lr_and_its_weights_are_beta_sigma(tmp_path):
    from spotlib.train.runspec import plan_runs

    # One pair per step: the weight each step logs is exactly βσ(·) of its logged rewards and δ.
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "train.per_device_batch": 1,
                                              "train.kl_probe_every": 0, "train.edit_diag_pairs": 0})
    beta, lr = profile.train.beta, profile.train.tether_lr
    assert tether.demonstration_needed(profile.train) and not tether.demonstration_finished(profile)
    inputs = {"spot_bco": _inputs(profile, tmp_path)}
    runs = plan_runs(profile.train)
    summary = tether.train_demonstration(profile, runs, inputs, steps=3, progress=False)
    assert summary["lr"] == pytest.approx(lr) and tether.demonstration_finished(profile)
    lesson = tether.lesson_run(profile)
    assert lesson["dir"] == tether.demonstration_dir(profile) and lesson["own_run"]
    assert lesson["lr"] == lr and lesson["stage_lr"] == 1e-4

    records = read_jsonl(lesson["dir"] / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    r_pos = torch.tensor([r["rewards/chosen"] for r in train])
    r_neg = torch.tensor([r["rewards/rejected"] for r in train])
    for i, r in enumerate(train):
        w_pos, w_neg = gradient_weights("bco", r_pos[i:i + 1], r_neg[i:i + 1], beta=beta, delta=r["delta"])
        assert r["tether/chosen"] == pytest.approx(float(w_pos), rel=1e-5)    # βσ(δ − r⁺)
        assert r["tether/rejected"] == pytest.approx(float(w_neg), rel=1e-5)  # βσ(r⁻ − δ)
    # At this LR the rewards leave 0 within 3 steps: the weights move visibly off β/2.
    moved = max(abs(r[k] - beta / 2) for r in train for k in ("tether/chosen", "tether/rejected"))
    assert moved > 0.05 * beta / 2, moved
    curve = tether.tether_curve(records, beta=beta)
    assert "λ⁺ ranged from" in tether.lesson_summary(curve, lesson)

    # The same LR keeps the finished run; another LR trains it anew (its key holds the LR).
    before = (lesson["dir"] / "summary.json").stat().st_mtime_ns
    tether.train_demonstration(profile, runs, inputs, steps=3, progress=False)
    assert (lesson["dir"] / "summary.json").stat().st_mtime_ns == before
    other = profile.replace(train=profile.train.__class__(**{**profile.train.__dict__, "tether_lr": 1e-3}))
    assert not tether.demonstration_finished(other)
    assert tether.train_demonstration(other, runs, inputs, steps=3, progress=False)["lr"] == pytest.approx(1e-3)


def test_the_lesson_figures_draw_the_run_with_legends_outside_the_data():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from spotlib.report import plots

    beta, rows = 0.1, [{"kind": "probe", "step": 0, "kl/probe": 0.0, "fixed/rewards_chosen": 0.0,
                        "fixed/rewards_rejected": 0.0}]
    for step in range(1, 5):
        rc, rr, delta = 0.3 * step, -0.4 * step, -0.05 * step
        rows.append({"kind": "train", "step": step, "rewards/chosen": rc, "rewards/rejected": rr, "delta": delta,
                     "tether/chosen": float(gradient_weights("bco", torch.tensor([rc]), torch.tensor([rr]), beta=beta,
                                                             delta=delta)[0]), "tether/rejected": 0.03})
    rows.append({"kind": "probe", "step": 4, "kl/probe": 0.1, "fixed/rewards_chosen": 0.5,
                 "fixed/rewards_rejected": -0.9})
    curve = tether.tether_curve(rows, beta=beta)
    lesson, against_kl = plots.tether_lesson(curve, lr=1e-3), plots.rewards_against_kl(curve)
    weights = lesson.axes[1]
    assert [round(y, 6) for y in weights.get_lines()[0].get_ydata()] == \
        [round(w, 6) for w in curve["train"]["lambda_chosen"]]
    assert list(against_kl.axes[0].get_lines()[1].get_ydata()) == pytest.approx([0.0, -9.0])  # r⁻/β
    for fig in (lesson, against_kl):
        assert fig.get_size_inches()[0] <= plots.MAX_WIDTH
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None and not legend.get_window_extent(canvas.get_renderer()).overlaps(
                ax.get_window_extent(canvas.get_renderer())), ax.get_title()


@pytest.mark.slow
def test_notebook_04_teaches_the_tether_under_papermill(sampled_profile, tmp_path):
    """Stages 02-03 by their modules, then 04 through its notebook: the lesson's cells print their
    numbers and draw their figures. (The fast suite runs notebook 04 in test_reliability_notebooks,
    which checks the same two figures.)"""
    from spotlib import reproduce
    from spotlib.stages import filter as filter_stage
    from spotlib.stages import rectify

    rectify.run(sampled_profile, progress=False)
    filter_stage.run(sampled_profile, progress=False)
    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(sampled_profile.out))
    yaml_path = tmp_path / "test_profile.yaml"
    yaml_path.write_text(yaml.safe_dump(raw))
    assert reproduce.main(["--profile", str(yaml_path), "--stages", "04"]) == 0

    assert (tether.demonstration_dir(sampled_profile) / "summary.json").is_file()
    nb = json.loads((sampled_profile.out / "notebooks" / "04_train_spot.ipynb").read_text())
    cells = {c.get("id"): c for c in nb["cells"]}
    for cell_id, words in (("tether-b", "λ⁺ ranged from"), ("tether-b", "the study's own SPoT-BCO run"),
                           ("tether-e", "held-out KL")):
        outputs = cells[cell_id]["outputs"]
        text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
        assert words in text, (cell_id, text)
        assert any("image/png" in o.get("data", {}) for o in outputs), cell_id
        assert all(o.get("output_type") != "error" for o in outputs), cell_id
