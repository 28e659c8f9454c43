"""vLLM's engine arguments from the profile's `engine:` section, on a GPU and on vLLM's CPU build.

The same `LLM(...)` call serves both devices; only recorded profile settings differ, never
anything the machine switches on its own:

- `gpu_memory_utilization` is each engine's share of the GPU on a GPU and of the machine's
  RAM on the CPU build (its KV cache is carved from RAM: 0.92 is refused there, and two
  workers side by side need a small share, e.g. 0.05);
- `enable_chunked_prefill` must be off on the CPU build when requests carry their own seeds
  (a prefill split over steps fails: "CPU Generator does not use offset"), so a CPU profile
  has to say `false`; `check` refuses anything else;
- `enforce_eager` skips the compile step (about a minute on the CPU build for a small model).

`worker_env` gives each CPU engine worker its own cores (`VLLM_CPU_OMP_THREADS_BIND`), so two
workers do not spin on the same ones.
"""
from __future__ import annotations

import os

CPU_BUILD_MEMORY_MAX = 0.5  # the workers' RAM shares together: the trainer and the OS need the rest


def on_cpu(device: str) -> bool:
    """Whether engines run on vLLM's CPU build: a `device: cpu` profile, or no CUDA at all."""
    if device == "cpu":
        return True
    if device == "cuda":
        return False
    import torch

    return not torch.cuda.is_available()


def engine_args(engine_cfg) -> dict:
    """Keyword arguments for `vllm.LLM` (besides model and seed)."""
    args = {"dtype": engine_cfg.dtype, "gpu_memory_utilization": engine_cfg.gpu_memory_utilization,
            "enforce_eager": engine_cfg.enforce_eager}
    if engine_cfg.enable_chunked_prefill is not None:
        args["enable_chunked_prefill"] = engine_cfg.enable_chunked_prefill
    if engine_cfg.max_model_len:
        args["max_model_len"] = engine_cfg.max_model_len
    return args


def worker_env(engine_cfg, rank: int, cpu: bool) -> dict[str, str]:
    """Environment for engine worker `rank` before vLLM is imported (CPU build: its own cores)."""
    if not cpu or engine_cfg.threads_per_worker <= 0:
        return {}
    first = rank * engine_cfg.threads_per_worker
    cores = range(first, first + engine_cfg.threads_per_worker)
    available = os.cpu_count() or 1
    cores = [c % available for c in cores]
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in cores)}


def problems(profile):
    """A CPU profile that samples with vLLM names the settings vLLM's CPU build needs: (key, message)."""
    uses_vllm = [k for k, v in (("sample.backend", profile.sample.backend), ("eval.backend", profile.eval.backend),
                                ("rl.backend", profile.rl.backend)) if v == "vllm"]
    cfg = profile.engine
    if not 0.0 < cfg.gpu_memory_utilization <= 1.0:
        yield "engine.gpu_memory_utilization", f"expected a share in (0, 1], got {cfg.gpu_memory_utilization}"
        return
    if not uses_vllm or profile.device != "cpu":
        return
    if cfg.workers < 1:
        yield "engine.workers", (f"{uses_vllm[0]} is vllm on a CPU: set how many engine workers to start (e.g. 2), "
                                 f"got {cfg.workers}")
    if cfg.enable_chunked_prefill is not False:
        yield "engine.enable_chunked_prefill", (f"must be false on vLLM's CPU build (per-request seeds fail on a "
                                                f"split prefill), got {cfg.enable_chunked_prefill}")
    if cfg.workers * cfg.gpu_memory_utilization > CPU_BUILD_MEMORY_MAX:
        yield "engine.gpu_memory_utilization", (f"on vLLM's CPU build it is a share of RAM per worker; {cfg.workers} "
                                                f"workers × {cfg.gpu_memory_utilization} exceeds "
                                                f"{CPU_BUILD_MEMORY_MAX} (e.g. 0.05)")


def pool_options(profile) -> dict:
    """`EnginePool` keyword arguments for this profile: devices, engine arguments, per-worker environment."""
    cfg = profile.engine
    cpu = on_cpu(profile.device)
    options: dict = {"engine_args": engine_args(cfg), "worker_envs": None}
    if cfg.workers > 0 or cpu:
        workers = max(1, cfg.workers)
        options["devices"] = [str(r) for r in range(workers)]
        options["worker_envs"] = [worker_env(cfg, r, cpu) for r in range(workers)]
    return options
