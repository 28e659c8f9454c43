"""vLLM's engine settings as profile keys (`engine:`): what a CPU profile must say, what reaches the engine."""
import pytest

from spotlib.config import ConfigError, load_profile
from spotlib.engines.settings import engine_args, pool_options


def test_rehearsal_records_the_cpu_builds_settings():
    profile = load_profile("rehearsal")
    assert profile.sample.backend == profile.eval.backend == "vllm"
    options = pool_options(profile)
    assert options["devices"] == ["0", "1"]
    assert options["engine_args"] == {"dtype": "float32", "gpu_memory_utilization": 0.05, "enforce_eager": True,
                                      "enable_chunked_prefill": False, "max_model_len": 1280}
    # each worker binds its own core, so two engines do not spin on the same one
    assert [env["VLLM_CPU_OMP_THREADS_BIND"] for env in options["worker_envs"]] == ["0", "1"]


@pytest.mark.parametrize("override, message", [
    ({"engine.enable_chunked_prefill": None}, "engine.enable_chunked_prefill: must be false"),
    ({"engine.enable_chunked_prefill": True}, "engine.enable_chunked_prefill: must be false"),
    ({"engine.workers": 0}, "engine.workers"),
    ({"engine.gpu_memory_utilization": 0.3}, "share of RAM"),
    ({"engine.gpu_memory_utilization": 0.0}, "engine.gpu_memory_utilization"),
])
def test_a_cpu_profile_on_vllm_names_what_the_cpu_build_needs(override, message):
    with pytest.raises(ConfigError, match=message):
        load_profile("rehearsal", overrides=override)


def test_gpu_profiles_keep_vllms_defaults():
    paper = load_profile("paper")
    args = engine_args(paper.engine)
    assert args["dtype"] == "bfloat16" and args["enforce_eager"] is False
    assert "enable_chunked_prefill" not in args  # vLLM's own default on GPUs
    tiny = load_profile("tiny")  # no vLLM at all: nothing to check
    assert tiny.sample.backend != "vllm"


def test_a_cpu_profile_on_vllm_needs_no_gpu_but_the_cpu_engines(monkeypatch):
    import importlib.util

    from spotlib.plan import validate

    rehearsal = load_profile("rehearsal")
    assert validate.needs_gpu(rehearsal) is None  # vLLM's CPU build
    assert validate.needs_gpu(load_profile("paper", overrides={"device": "auto"})) == "sample.backend: vllm"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("vllm", "deepspeed") else real(name, *a))
    problems = validate.cpu_engine_problems(rehearsal)
    assert len(problems) == 2 and all("make setup-engines" in p for p in problems)
