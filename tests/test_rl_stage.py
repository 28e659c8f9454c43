"""Stage 06 end to end on the test profile: two equal-budget GRPO runs, curves, Table 4, manifest."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from spotlib.config import load_profile
from spotlib.stages import rl_init
from spotlib.world.pretrain import build_model
from spotlib.world.tokenizer import build_tokenizer


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on 2 cores shared by several processes, two threads spin-wait on each
    other and run ~10x slower (measured: the stage test 169 s with 2 threads, 15 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
