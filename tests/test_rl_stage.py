"""Stage 06 end to end on the test profile: two equal-budget GRPO runs, curves, Table 4, manifest."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
import torch

from spotlib.config import load_profile
from spotlib.launch import relaunch
from spotlib.stages import rl_init
from spotlib.world.pretrain import build_model
from spotlib.world.tokenizer import build_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rl_init_stage_runs_both_inits_with_equal_budgets(tmp_path):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "rl.max_new_tokens": 24,
                                              "rl.heldout_items": 4, "eval.n_items": {"default": 4},
                                              "eval.max_new_tokens": 24})
    tokenizer = build_tokenizer(profile.world)
    base = profile.base_model_path()
    build_model(profile.world, tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    shutil.copytree(base, profile.out / "04_train_spot" / "spot_bco" / "seed0")

    summary = rl_init.run(profile, progress=False)

    stage = profile.out / "06_rl_init"
    prompts = {}
    for init in ("base", "spot_bco"):
        steps = [json.loads(x) for x in (stage / init / "seed0" / "metrics.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == [1, 2]
        assert (stage / init / "seed0" / "final" / "config.json").is_file()
        prompts[init] = summary["runs"][init]["steps"]
    assert prompts["base"] == prompts["spot_bco"] == 2
    table = pd.read_csv(stage / "table4.csv")
    assert list(table["model"]) == ["base", "GRPO", "SPoT", "SPoT + GRPO"]
    assert {"arith", "arith_ood", "facts", "format", "in_domain", "ood", "general", "avg"} <= set(table.columns)
    assert (stage / "table4.md").read_text().startswith("| model |")
    curves = pd.read_csv(stage / "curves.csv")
    assert set(curves["init"]) == {"base", "spot_bco"}
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["train_prompts"] == profile.rl.num_prompts
    # unchanged inputs and params: the stage is skipped
    assert rl_init.run(profile, progress=False)["table4"] == summary["table4"]


def _test_profile(tmp_path, **overrides):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "rl.max_new_tokens": 24,
                                              "rl.heldout_items": 4, "eval.n_items": {"default": 4},
                                              "eval.max_new_tokens": 24, **overrides})
    tokenizer = build_tokenizer(profile.world)
    base = profile.base_model_path()
    build_model(profile.world, tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    shutil.copytree(base, profile.out / "04_train_spot" / "spot_bco" / "seed0")
    return profile


def test_rollout_engines_are_released_before_evaluation(tmp_path, monkeypatch):
    """Stage 06 on one process: every run's engine is released before the next run starts
    and before any model is evaluated (on a GPU, vLLM's start-up memory check needs it)."""
    from spotlib.rl import grpo
    from spotlib.engines.rollout import RolloutEngine

    events, live = [], set()

    class RecordingEngine(RolloutEngine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            assert not live, "a new run built its engine while another was still held"
            live.add(id(self))
            events.append("built")

        def release(self):
            if id(self) in live:
                events.append("released")
            live.discard(id(self))
            super().release()

    def evaluate(profile, path, **_):  # the order is under test here; scores are the other test's
        assert not live, f"evaluating {path} while a rollout engine is held"
        events.append("evaluate")
        return {"arith": 0.5}

    monkeypatch.setattr(grpo, "RolloutEngine", RecordingEngine)
    monkeypatch.setattr(rl_init, "score_model", evaluate)
    profile = _test_profile(tmp_path, **{"eval.benchmarks": ["arith"], "rl.max_steps": 1})
    rl_init.run(profile, progress=False)
    assert events == ["built", "released", "built", "released"] + ["evaluate"] * 4


def test_a_failing_run_still_releases_its_engine(tmp_path):
    from rl_helpers import FixedRollouts, micro_model, toy_items

    from spotlib.config import RLConfig
    from spotlib.rl.grpo import train_grpo

    def broken_grader(records, responses):
        raise RuntimeError("grader down")

    engine = FixedRollouts()
    cfg = RLConfig(rollouts_per_prompt=2, prompts_per_step=2, mini_batch=2, max_new_tokens=4, max_steps=1,
                   save_every=0, bf16_autocast=False)
    with pytest.raises(RuntimeError, match="grader down"):
        train_grpo(micro_model(tmp_path / "init"), tmp_path / "run", toy_items(2), broken_grader, cfg,
                   device="cpu", max_len=32, progress=False, engine=engine)
    assert engine.released == 1


def test_launch_commands(tmp_path, monkeypatch):
    """CPU: torchrun with the asked process count; GPUs: accelerate launch with the train
    config by absolute path (papermill runs in notebooks/)."""
    from spotlib.config import REPO_ROOT

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "rl.num_processes": 2,
                                              "train.accelerate_config": "params/accelerate_zero2.yaml"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert rl_init.num_processes(profile) == 2
    cmd = relaunch.grpo_command(profile, 2, tmp_path / "p.yaml")
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[cmd.index("--nproc_per_node") + 1] == "2"
    assert cmd[-4:] == ["spotlib.stages.rl_init", "--profile", str(tmp_path / "p.yaml"), "--train-only"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = relaunch.grpo_command(profile.replace(device="cuda"), 8, tmp_path / "p.yaml")
    config = yaml.safe_load(Path(gpu[gpu.index("--config_file") + 1]).read_text())
    json_path = Path(config["deepspeed_config"]["deepspeed_config_file"])  # opened from any working folder
    assert json_path.is_absolute() and json_path == REPO_ROOT / "params" / "deepspeed_zero2.json"
    assert gpu[gpu.index("--num_processes") + 1] == "8"
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert rl_init.num_processes(profile) == 1  # a launched rank never relaunches


@pytest.mark.slow
def test_stage_on_two_processes_matches_the_in_process_layout(tmp_path):
    """Stage 06 with rl.num_processes=2 on CPU: torchrun (gloo) trains, this process evaluates."""
    profile = _test_profile(tmp_path, **{"rl.num_processes": 2, "eval.benchmarks": ["arith"], "rl.max_steps": 1})
    summary = rl_init.run(profile, progress=False)
    stage = profile.out / "06_rl_init"
    for init in ("base", "spot_bco"):
        steps = [json.loads(x) for x in (stage / init / "seed0" / "metrics.jsonl").read_text().splitlines()]
        assert [s["processes"] for s in steps] == [2]
        assert json.loads((stage / init / "seed0" / "final" / "done.json").read_text())["processes"] == 2
    assert [r["model"] for r in summary["table4"]] == ["base", "GRPO", "SPoT", "SPoT + GRPO"]


def test_paper_profile_runs_grpo_on_every_gpu_with_its_memory_settings():
    from spotlib.rl.schedule import layout

    rl = load_profile("paper").rl
    assert rl.num_processes == 0 and rl.gradient_checkpointing and rl.offload_reference
    assert 0 < rl.vllm_gpu_memory < 0.5
    per_rank_prompts, micro_batches = layout(rl, 8)      # 8 GPUs: whole groups on every rank
    assert per_rank_prompts * 8 == rl.mini_batch
    assert micro_batches * rl.micro_batch == per_rank_prompts * rl.rollouts_per_prompt
