"""Everything about a profile that can be checked before any compute (`reproduce --dry-run`).

`validate` raises `ConfigError` for a profile no run can use (an unknown method or
benchmark, a zero count, no seeds: one line naming the file and key), and returns the
problems of *this machine* for the chosen stages (an unset key variable, no GPU where
the profile needs CUDA, an output folder that cannot be written). A dry run lists
those and still prints the plan; a real run stops on them before the first stage.
"""
from __future__ import annotations

import os
from pathlib import Path

from spotlib.config import REPO_ROOT, ConfigError, check_ranges, check_values
from spotlib.plan.names import NAME_RULES
from spotlib.models import looks_local, saved_model_problem

ORACLE_STAGE = "02_rectify"


def validate(profile, stages: list[str] | None = None) -> list[str]:
    """Raise ConfigError for profile errors; return this machine's problems for `stages` (names)."""
    source = profile.source or profile.name
    check_values(profile, source)
    _check_names(profile, source)
    check_ranges(profile, source, extra_rules=NAME_RULES)
    _check_paths(profile, source)
    stages = list(stages) if stages is not None else None
    return _environment_problems(profile, stages)


def _check_names(profile, source: str) -> None:
    from spotlib import evals
    from spotlib.train.runspec import plan_runs

    try:
        runs = plan_runs(profile.train)
    except ValueError as exc:
        raise ConfigError(f"{source}: key train.methods/train.ablations: {exc}") from None
    names = {r.name for r in runs} | {r.dirname for r in runs}
    for method in profile.rl.init_methods:
        if method != "base" and method not in names:
            raise ConfigError(f"{source}: key rl.init_methods: {method!r} is neither 'base' nor a run of "
                              f"train.methods ({', '.join(sorted(r.name for r in runs))})")
    unknown = [b for b in profile.eval.benchmarks if b not in evals.REGISTRY]
    if unknown:
        raise ConfigError(f"{source}: key eval.benchmarks: unknown {', '.join(map(repr, unknown))} "
                          f"(expected some of {', '.join(evals.REGISTRY)})")
    if profile.oracle.kind == "openai" and not profile.oracle.base_url:
        raise ConfigError(f"{source}: key oracle.base_url: required when oracle.kind is openai")


def _built_by_the_run(profile, path: str) -> bool:
    """Inputs the rehearsal's stage 01 writes into the output folder exist only after it ran."""
    out = str(profile.out)
    return profile.assets == "rehearsal" and (path == out or path.startswith(out.rstrip(os.sep) + os.sep))


def _check_paths(profile, source: str) -> None:
    """Every file or folder the profile names exists (a model given as a Hub id is the Hub's to find)."""
    name = profile.model.name_or_path
    if name != "world" and looks_local(name) and not _built_by_the_run(profile, name):
        problem = saved_model_problem(name, hint="expected 'world', a Hub id such as Qwen/Qwen3-8B, or a folder "
                                                  "save_pretrained wrote")
        if problem:
            raise ConfigError(f"{source}: key model.name_or_path: {problem}")
    files = [("sample.data_files", profile.sample.data_files), ("train.kl_probe_file", profile.train.kl_probe_file),
             ("train.accelerate_config", profile.train.accelerate_config)]
    files += [(f"eval.data_files.{k}", v) for k, v in profile.eval.data_files.items()]
    for key, value in files:
        if not value or _built_by_the_run(profile, value):
            continue
        path = Path(value).expanduser()
        if not path.is_absolute() and not path.exists():
            path = REPO_ROOT / path   # relative to the repository, as the stages read them
        if not path.exists():
            raise ConfigError(f"{source}: key {key}: {value} does not exist")


def needs_gpu(profile) -> str | None:
    """Why the profile needs CUDA GPUs (None when it runs on CPU)."""
    if profile.device == "cuda":
        return "device: cuda"
    for key in ("sample", "eval", "rl"):
        if getattr(profile, key).backend == "vllm" and profile.device != "cpu":  # device cpu: vLLM's CPU build
            return f"{key}.backend: vllm"
    return None


def cuda_devices() -> int:
    """How many CUDA devices are visible (0 without CUDA): the one count `reproduce` shows too."""
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA install means no usable GPU
        return 0


def _environment_problems(profile, stages: list[str] | None) -> list[str]:
    problems = []
    wants = (lambda name: True) if stages is None else (lambda name: name in stages)
    env = profile.oracle.api_key_env
    if env and profile.oracle.kind == "openai" and wants(ORACLE_STAGE) and not os.environ.get(env):
        problems.append(f"environment variable {env} (oracle.api_key_env) is not set: stage 02 needs the "
                        f"Oracle's API key in it")
    reason = needs_gpu(profile)
    gpu_stages = stages is None or any(s != ORACLE_STAGE for s in stages)
    if reason and gpu_stages and cuda_devices() == 0:
        problems.append(f"the profile needs CUDA GPUs ({reason}) and this machine has none visible: "
                        f"use a GPU machine, or a CPU profile such as tiny")
    problems.extend(cpu_engine_problems(profile))
    folder = writable_problem(profile.out)
    if folder:
        problems.append(folder)
    if stages is None or any(s.startswith(("04", "06")) for s in stages):   # the stages that train
        from spotlib.train.tracking import missing_trackers
        missing = missing_trackers(profile.train.report_to)
        if missing:
            problems.append(f"train.report_to names {', '.join(missing)}, not installed here: pip install "
                            f"{' '.join(missing)}, or set train.report_to: none")
    return problems


def cpu_engine_problems(profile) -> list[str]:
    """A CPU profile on the real engines needs them installed (`make setup-engines`)."""
    import importlib.util

    problems = []
    vllm_keys = [k for k in ("sample", "eval", "rl") if getattr(profile, k).backend == "vllm"]
    if profile.device == "cpu" and vllm_keys and importlib.util.find_spec("vllm") is None:
        problems.append(f"{vllm_keys[0]}.backend is vllm on a CPU and vLLM's CPU build is not installed: "
                        f"run `make setup-engines`")
    if profile.train.deepspeed_config and importlib.util.find_spec("deepspeed") is None:
        problems.append(f"train.deepspeed_config is set and DeepSpeed is not installed: run `make setup-engines` "
                        f"(CPU) or `make setup` (GPU)")
    return problems


def writable_problem(out: Path) -> str | None:
    """Why the output folder cannot be written (None when it can, or can be created)."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"output folder {out}: {probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"output folder {out}: {probe} is not writable (set output_dir in the profile to a folder you can write)"
    return None
