"""Live training curves: every run's metrics.jsonl records, read back from TensorBoard's event files."""
from __future__ import annotations

import dataclasses
import random

import pytest

from pairs_helpers import change_one_result, save_untrained_student
from spotlib import world
from spotlib.config import ConfigError, load_profile
from spotlib.io import read_jsonl, write_jsonl
from spotlib.train import tracking

pytestmark = pytest.mark.usefixtures("one_thread")

# What people watch while a pair run trains (TRL's names under train/), and the held-out KL.
WATCHED = ["train/loss", "train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins",
           "train/delta", "train/tether/chosen", "train/tether/rejected", "train/lr", "train/grad_norm",
           "train/tokens_per_s", "probe/kl/probe"]


def event_scalars(run_dir) -> dict[str, dict[int, float]]:
    """tag -> {step: value} as TensorBoard reads the run's event files (purged steps dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice {steps}"
        out[tag] = {e.step: e.value for e in events}
    return out


def assert_events_match_metrics(events: dict, records: list[dict], kind: str | None = None) -> None:
    """Every number of every record is in the event files at its step (float32, as TensorBoard keeps it)."""
    expected = {}
    for record in records:
        for tag, value in tracking.scalars(record, kind).items():
            expected.setdefault(tag, {})[record["step"]] = value
    assert expected, "no records"
    for tag, by_step in expected.items():
        assert tag in events, f"{tag} not in the event files (have {sorted(events)})"
        assert sorted(events[tag]) == sorted(by_step), tag
        for step, value in by_step.items():
            assert events[tag][step] == pytest.approx(value, rel=1e-6, abs=1e-6), (tag, step)


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory):
    """A micro base model and stage 03's files for a few arithmetic pairs."""
    profile = load_profile("test")
    base = tmp_path_factory.mktemp("base")
    save_untrained_student(base, profile.world)
    rng = random.Random(0)
    pairs, direct = [], []
    for it in world.make_items("arith", 8, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        pairs.append({"id": it["id"], "prompt": it["prompt"], "rejected": change_one_result(good, rng),
                      "chosen": good, "answer": it["answer"], "source": "rectified"})
        direct.append({"id": it["id"], "prompt": it["prompt"], "rejected": None,
                       "chosen": world.oracle_solution(it, rng), "answer": it["answer"], "source": "direct"})
    filter_dir = tmp_path_factory.mktemp("filter")
    write_jsonl(filter_dir / "pairs.jsonl", pairs)
    write_jsonl(filter_dir / "sft_plus.jsonl", [dict(p) for p in pairs])
    write_jsonl(filter_dir / "sft_direct.jsonl", direct)
    write_jsonl(filter_dir / "rft.jsonl", [dict(p, source="rft") for p in direct])
    probes = world.make_items("facts", 2, "probe", world_cfg=profile.world)
    write_jsonl(filter_dir / "probe.jsonl", probes)
    return base, filter_dir


def stage_profile(out, stage_inputs, **overrides):
    import shutil

    base, filter_dir = stage_inputs
    shutil.copytree(filter_dir, out / "03_filter")
    values = {"output_dir": str(out), "model.name_or_path": str(base),
              "train.kl_probe_file": str(out / "03_filter" / "probe.jsonl"), "train.kl_probe_max_tokens": 8,
              "train.methods": ["sft", "spot_bco"], "train.max_steps": 3, "train.kl_probe_every": 2,
              "train.edit_diag_pairs": 2}
    values.update(overrides)
    return load_profile("test", overrides=values)


def test_stage_04_runs_leave_event_files_with_the_values_of_their_metrics(tmp_path, stage_inputs):
    from spotlib.stages import train_methods

    profile = stage_profile(tmp_path / "out", stage_inputs)
    assert profile.train.report_to == "tensorboard"        # the default of every profile
    train_methods.run(profile, progress=False)
    root = profile.out / "tensorboard"
    runs = ["04_train_spot/sft/seed0", "04_train_spot/spot_bco/seed0", "04_train_spot/tether/spot_bco/seed0"]
    for name in runs:
        events = event_scalars(root / name)
        records = read_jsonl(profile.out / name / "metrics.jsonl")
        assert_events_match_metrics(events, records)
    pair_events = event_scalars(root / "04_train_spot/spot_bco/seed0")
    assert set(WATCHED) <= set(pair_events), sorted(set(WATCHED) - set(pair_events))
    assert sorted(pair_events["train/loss"]) == [1, 2, 3] and sorted(pair_events["probe/kl/probe"]) == [0, 2, 3]


def test_resumed_run_shows_each_step_once_with_the_resumed_values(tmp_path, stage_inputs):
    from spotlib.stages import train_methods
    from spotlib.train.trainer import train_run

    profile = stage_profile(tmp_path / "out", stage_inputs, **{"train.methods": ["spot_bco"], "train.max_steps": 4,
                                                               "train.save_every": 2, "train.tether_lr": None})
    plan = train_methods.plan_stage(profile)
    inputs = train_methods.shared_inputs(profile, plan)
    run_spec = plan.runs[0]
    run_dir = profile.out / "04_train_spot" / run_spec.dirname / "seed0"
    spec = tracking.training_tracking(profile, run_spec, 0, 4, run_dir)
    args = (profile.train, profile.model, run_spec, 0, inputs[run_spec.name], run_dir)
    # killed after step 3: its checkpoint is step 2's, and step 3 is trained (and logged) again
    assert not train_run(*args, steps=4, device="cpu", progress=False, stop_after=3, tracking=spec)["complete"]
    assert train_run(*args, steps=4, device="cpu", progress=False, tracking=spec)["complete"]
    events = event_scalars(profile.out / "tensorboard" / spec.run_name)
    assert_events_match_metrics(events, read_jsonl(run_dir / "metrics.jsonl"))
    assert sorted(events["train/loss"]) == [1, 2, 3, 4]


def test_grpo_run_logs_its_steps_and_heldout_accuracy(tmp_path):
    from rl_helpers import FixedRollouts, micro_model, says_a, toy_items
    from spotlib.config import RLConfig
    from spotlib.rl.grpo import train_grpo

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    cfg = RLConfig(num_prompts=4, rollouts_per_prompt=2, prompts_per_step=2, mini_batch=2, lr=1e-2,
                   max_new_tokens=4, max_steps=2, eval_every=1, micro_batch=8, bf16_autocast=False, save_every=0)
    run_dir = profile.out / "06_rl_init" / "spot_bco" / "seed0"
    spec = tracking.run_tracking(profile, run_dir, {"init": "spot_bco", "rl": dataclasses.asdict(cfg)})
    assert spec.run_name == "06_rl_init/spot_bco/seed0" and spec.project == "spotlib-test"
    train_grpo(micro_model(tmp_path / "init"), run_dir, toy_items(4), says_a, cfg, heldout=toy_items(2),
               device="cpu", max_len=64, progress=False, engine=FixedRollouts(), tracking=spec)
    events = event_scalars(profile.out / "tensorboard" / spec.run_name)
    assert_events_match_metrics(events, read_jsonl(run_dir / "metrics.jsonl"), kind="train")
    assert_events_match_metrics(events, read_jsonl(run_dir / "heldout.jsonl"), kind="heldout")
    assert {"train/reward_mean", "train/kl", "train/grad_norm", "heldout/heldout_accuracy"} <= set(events)


def test_report_to_none_writes_no_events_and_bad_names_fail_at_load(tmp_path, stage_inputs):
    from spotlib.stages import train_methods

    profile = stage_profile(tmp_path / "out", stage_inputs, **{"train.report_to": "none", "train.methods": ["sft"],
                                                               "train.max_steps": 1})
    assert tracking.run_tracking(profile, profile.out / "x", {}) is None
    train_methods.run(profile, progress=False)
    assert (profile.out / "04_train_spot" / "sft" / "seed0" / "metrics.jsonl").is_file()
    assert not (profile.out / "tensorboard").exists()
    with pytest.raises(ConfigError, match="train.report_to: 'tensorbord' is not one of"):
        load_profile("test", overrides={"train.report_to": "tensorbord"})
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        load_profile("test", overrides={"train.report_to": ["none", "wandb"]})
    assert load_profile("test", overrides={"train.report_to": ["tensorboard", "mlflow"]}).train.report_to == \
        ["tensorboard", "mlflow"]


def test_a_tracker_that_is_not_installed_is_named_before_training(tmp_path, monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "train.report_to": ["tensorboard", "wandb"]})
    spec = tracking.run_tracking(profile, tmp_path / "04_train_spot" / "sft" / "seed0", {})
    with pytest.raises(RuntimeError, match=r"train.report_to: wandb is not installed \(pip install wandb\)"):
        tracking.RunTracker(spec)
    from spotlib.plan.validate import validate   # and a run stops before its first stage (a dry run lists it)
    assert any("train.report_to names wandb, not installed here" in p for p in validate(profile))
    assert not any("report_to" in p for p in validate(profile, ["01_sample"]))


def test_run_settings_become_flat_hyperparameters():
    flat = tracking.flat_config({"lr": 1e-4, "train": {"adam_betas": [0.9, 0.95], "max_steps": None,
                                                       "lr": {"default": 1e-6}}})
    assert flat == {"lr": 1e-4, "train.adam_betas": "[0.9, 0.95]", "train.max_steps": "None",
                    "train.lr.default": 1e-6}
    assert tracking.scalars({"kind": "probe", "step": 3, "kl/probe": 0.5, "edit/at": "x", "ok": True}) == \
        {"probe/kl/probe": 0.5}
