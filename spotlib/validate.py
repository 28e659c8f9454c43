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

from spotlib.config import ConfigError, check_values

ORACLE_STAGE = "02_rectify"


def validate(profile, stages: list[str] | None = None) -> list[str]:
    """Raise ConfigError for profile errors; return this machine's problems for `stages` (names)."""
    source = profile.source or profile.name
    check_values(profile, source)
    _check_names(profile, source)
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


def needs_gpu(profile) -> str | None:
    """Why the profile needs CUDA GPUs (None when it runs on CPU)."""
    if profile.device == "cuda":
        return "device: cuda"
    for key in ("sample", "eval", "rl"):
        if getattr(profile, key).backend == "vllm":
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
