"""The CPU rehearsal of the paper path, run for real.

Fast: stages 01-03 of the `rehearsal` profile (its public-format files, the engine pool with the
vLLM stand-in engine, math-verify grading, the Oracle over HTTP against the package's local
server, the filter) with a briefly pre-trained student. Slow (`make test-engines`): the whole
`python -m spotlib.reproduce --profile rehearsal` on the real engines (vLLM's CPU build for
sampling and evaluation, DeepSpeed ZeRO-2 on 2 torchrun processes for training and GRPO,
papermill, the report) into a temporary output folder.
"""
import json

import pytest
import yaml

from spotlib.config import PARAMS_DIR, load_profile
from spotlib.io import read_jsonl

# Sizes, and the stand-in engine for the fast suite (the same engine pool, no vLLM install).
FAST = {"world.pretrain_steps": 150, "world.pretrain_batch": 16, "world.manifest_eval_items": 0,
        "world.num_threads": 1, "sample.num_problems": 8, "filter.nll_max_items": 8,
        "sample.backend": "vllm_standin"}


def test_stages_01_to_03_on_the_paper_path(tmp_path):
    from spotlib.stages import filter as pair_filter
    from spotlib.stages import rectify, sample

    profile = load_profile("rehearsal", overrides={"output_dir": str(tmp_path), **FAST})
    assert (profile.sample.backend, profile.oracle.kind, profile.sample.grading) == \
        ("vllm_standin", "local_server", "math_verify")
    student = sample.ensure_student(profile)
    assert (tmp_path / "base_model" / "config.json").is_file() and student == str(tmp_path / "base_model")
    assert (tmp_path / "public_data" / "dapo_math_17k_en.parquet").is_file()

    summary = sample.run(profile, progress=False)
    assert summary["samples"] == 8 and summary["correct"] + summary["errors"] == 8
    rows = read_jsonl(tmp_path / "01_sample" / "all.jsonl")
    assert all(r["prompt"].startswith("Solve the following math problem step by step.") for r in rows)

    fixed = rectify.run(profile, progress=False)
    assert fixed["errors"] == summary["errors"] and fixed["rectified_ok"] == summary["errors"]
    assert fixed["prompt_tokens"] > 0  # counted from the HTTP replies' usage

    filtered = pair_filter.run(profile, progress=False)
    pairs = read_jsonl(tmp_path / "03_filter" / "pairs.jsonl")
    assert len(pairs) == filtered["pairs"] > 0
    assert all(p["chosen"] != p["rejected"] for p in pairs)


def test_the_rehearsal_profile_names_the_real_engines():
    profile = load_profile("rehearsal")
    assert profile.sample.backend == profile.eval.backend == "vllm"
    assert profile.train.deepspeed_config == "params/deepspeed_zero2.json"
    assert profile.train.deepspeed_config == load_profile("paper").train.deepspeed_config  # the paper's config
    assert profile.train.num_processes == profile.rl.num_processes == 2


@pytest.mark.slow
@pytest.mark.engines
def test_whole_rehearsal_into_a_temporary_folder(tmp_path):
    """`python -m spotlib.reproduce --profile rehearsal`, as `make reproduce PROFILE=rehearsal` runs it."""
    pytest.importorskip("vllm", reason="vLLM's CPU build is not installed (make setup-engines)")
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup-engines)")
    from spotlib import reproduce

    spec = yaml.safe_load((PARAMS_DIR / "rehearsal.yaml").read_text())
    spec["output_dir"] = str(tmp_path / "out")
    profile_file = tmp_path / "rehearsal.yaml"
    profile_file.write_text(yaml.safe_dump(spec))
    assert reproduce.main(["--profile", str(profile_file)]) == 0, "the rehearsal failed: see its stage notebooks"

    out = tmp_path / "out"
    profile = load_profile(str(profile_file))
    assert read_jsonl(out / "03_filter" / "pairs.jsonl"), "no pairs: the student answered nothing wrong"
    assert read_jsonl(out / "03_filter" / "rft.jsonl"), "no RFT data: the student answered nothing right"
    for method in profile.train.methods:
        for seed in profile.seeds:
            assert (out / "04_train_spot" / method / f"seed{seed}" / "model.safetensors").is_file(), method
    table = (out / "05_eval_forgetting" / "table.md").read_text()
    for bench in profile.eval.benchmarks:
        assert bench in table, f"05 table lacks {bench}"
    assert (out / "06_rl_init" / "table4.md").is_file()
    assert (out / "report.md").is_file()
    timings = json.loads((out / "reproduce_timings.json").read_text())
    assert set(timings) == {s.name for s in reproduce.available_stages()}
