"""Preflight: each check fails with its one line under a monkeypatched machine, and all
failures come together; reproduce refuses to start the paper profile on too few GPUs."""
import importlib.util
import types

import pytest

from spotlib.plan import preflight as pf
from spotlib.config import load_profile
from spotlib.plan.memory import GIB

# An 8 x H200 machine (140 GiB), where every stage of the paper plan fits; these tests are
# about the checks (test_memory_plan covers what fits on which card).
FITTING = {"hardware.gpu_memory_gib": 140.0, "rl.micro_batch": 1, "train.per_device_batch": 1, "train.grad_accum": 4,
           "train.methods": ["sft", "sft_plus", "rft", "dpo", "spot_bco"],
           "train.accelerate_config": "params/accelerate_zero2.yaml", "oracle.max_cost_usd": 500.0}


@pytest.fixture
def ready(monkeypatch, tmp_path):
    """A machine where the paper profile passes: 8 GPUs, packages, key, GPQA access, disk."""
    monkeypatch.setattr(pf, "cuda_memory_gib", lambda: [139.8] * 8)
    real = importlib.util.find_spec
    monkeypatch.setattr(pf.importlib.util, "find_spec",
                        lambda name, *a: object() if name in ("vllm", "deepspeed") else real(name, *a))
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    monkeypatch.setattr(pf, "free_disk_bytes", lambda path: 10_000 * GIB)
    from spotlib.evals import gpqa
    monkeypatch.setattr(gpqa, "check_access", lambda eval_cfg, api=None: None)  # no Hub call in tests
    return load_profile("paper", overrides={**FITTING, "output_dir": str(tmp_path / "out")})


def test_ready_machine_passes(ready):
    assert pf.preflight(ready) == []


def test_no_gpu_is_one_clear_line(ready, monkeypatch, capsys):
    """Validation says it; the preflight does not say it again."""
    from spotlib import reproduce

    monkeypatch.setattr(pf, "cuda_memory_gib", lambda: [])
    monkeypatch.setattr("spotlib.plan.validate.cuda_devices", lambda: 0)
    assert pf.preflight(ready) == []
    monkeypatch.setattr(reproduce, "load_profile", lambda name: ready)
    assert reproduce.main(["--profile", "paper", "--dry-run"]) == 0
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("not ready:", "  - "))]
    assert [line for line in problems if "GPU" in line] == ["not ready: the profile needs CUDA GPUs (device: cuda) and this machine has none visible: "
                     "use a GPU machine, or a CPU profile such as tiny"]


def test_too_few_and_too_small_gpus(ready, monkeypatch):
    monkeypatch.setattr(pf, "cuda_memory_gib", lambda: [23.6] * 4)
    lines = pf.preflight(ready)
    assert "4 CUDA GPU(s) visible: profile paper needs 8 (hardware.gpus)" in lines
    assert any(line.startswith("the smallest visible GPU has 23.6 GiB") for line in lines)


def test_plan_that_does_not_fit_is_a_failure(ready):
    lines = pf.preflight(ready.replace(hardware=ready.hardware.__class__(**{**ready.hardware.__dict__,
                                                                           "gpu_memory_gib": 24.0})))
    assert "the smallest visible GPU" not in "\n".join(lines)   # the cards are as planned before
    assert any(line.startswith("stage 04_train_spot does not fit") for line in lines)


def test_missing_packages(ready, monkeypatch):
    monkeypatch.setattr(pf.importlib.util, "find_spec", lambda name, *a: None)
    lines = pf.preflight(ready)
    assert any(line.startswith("vllm is not installed") for line in lines)
    assert any(line.startswith("deepspeed is not installed: params/accelerate_zero2.yaml") for line in lines)


def test_training_without_a_launcher_config(ready):
    lines = pf.preflight(ready.replace(train=ready.train.__class__(**{**ready.train.__dict__,
                                                                     "accelerate_config": None})))
    assert any(line.startswith("train.accelerate_config is not set: with 8 GPUs") for line in lines)


def test_cost_cap_and_key_variable(ready):
    oracle = ready.oracle.__class__(**{**ready.oracle.__dict__, "max_cost_usd": None})
    assert [line for line in pf.preflight(ready.replace(oracle=oracle))
            if line.startswith("oracle.max_cost_usd is not set in ")]
    unnamed = ready.oracle.__class__(**{**ready.oracle.__dict__, "api_key_env": None})
    assert pf.preflight(ready.replace(oracle=unnamed)) == [
        "oracle.api_key_env is not set: name the environment variable that holds the Oracle's key"]


def test_unset_key_is_one_line(ready, monkeypatch, capsys):
    """An unset key variable is validation's line (it knows whether stage 02 runs); the preflight
    does not say it again."""
    from spotlib import reproduce

    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setattr("spotlib.plan.validate.cuda_devices", lambda: 8)
    assert pf.preflight(ready) == []
    monkeypatch.setattr(reproduce, "load_profile", lambda name: ready)
    assert reproduce.main(["--profile", "paper", "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "GEMINI_API_KEY" in line and "not set" in line]
    assert len(lines) == 1 and lines[0].startswith("not ready: environment variable GEMINI_API_KEY")


def test_gpqa_access_is_the_benchmark_check(ready, monkeypatch):
    """The benchmark's own check (token, accepted terms, offline cache) decides; a local copy needs none."""
    from spotlib.evals import gpqa

    asked = []

    def refuse(eval_cfg):
        asked.append(eval_cfg)
        return "GPQA-Diamond (Idavidrein/gpqa) is gated and no Hugging Face token is set: accept the terms"
    monkeypatch.setattr(gpqa, "check_access", refuse)
    assert pf.preflight(ready) == [refuse(None)] and asked[0] is ready.eval
    local = ready.eval.__class__(**{**ready.eval.__dict__, "data_files": {"gpqa_diamond": "gpqa.parquet"}})
    asked.clear()
    assert pf.preflight(ready.replace(eval=local)) == [] and asked == []

    def broken(eval_cfg):
        raise PermissionError("403: accept the terms of Idavidrein/gpqa")
    monkeypatch.setattr(gpqa, "check_access", broken)
    assert pf.preflight(ready) == ["GPQA-Diamond: 403: accept the terms of Idavidrein/gpqa"]


def test_free_disk(ready, monkeypatch):
    # 8.19B params x 2 B = 15.3 GiB per model: base + 5 runs + 2 GRPO starts, + one resumable
    # GRPO checkpoint (weights + fp32 master, m, v = 14 B/param) and one of stage 04 (train.save_every)
    # = 8 x 15.3 + 2 x 106.8 GiB
    monkeypatch.setattr(pf, "free_disk_bytes", lambda path: 200 * GIB)
    (line,) = pf.preflight(ready)
    assert line.startswith("free disk 200 GiB under ") and "about 336 GiB of checkpoints" in line


def test_all_failures_listed_together(ready, monkeypatch):
    monkeypatch.setattr(pf, "cuda_memory_gib", lambda: [])
    monkeypatch.delenv("GEMINI_API_KEY")
    monkeypatch.setattr(pf, "free_disk_bytes", lambda path: 0)
    oracle = ready.oracle.__class__(**{**ready.oracle.__dict__, "max_cost_usd": None})
    # the cost cap and the disk; no GPU and the unset key are validation's lines
    assert len(pf.preflight(ready.replace(oracle=oracle))) == 2


def test_reproduce_refuses_paper_without_gpus(ready, monkeypatch, capsys):
    from spotlib import reproduce

    monkeypatch.setattr(pf, "cuda_memory_gib", lambda: [79.6] * 4)
    monkeypatch.setattr("spotlib.plan.validate.cuda_devices", lambda: 4)  # past validation: the plan's check refuses
    monkeypatch.setattr(reproduce, "load_profile", lambda name: ready)
    monkeypatch.setattr(reproduce, "run_stage", lambda *a: pytest.fail("a stage ran"))
    assert reproduce.main(["--profile", "paper"]) == 1
    captured = capsys.readouterr()
    assert "4 CUDA GPU(s) visible: profile paper needs 8 (hardware.gpus)" in captured.out
    assert "cannot start" in captured.err


def test_cpu_profiles_have_no_preflight(monkeypatch):
    from spotlib import reproduce

    args = types.SimpleNamespace(gpus=None, gpu_memory_gib=None)
    assert reproduce.memory_plan_and_preflight(load_profile("tiny"), args) == ("", [], True)
