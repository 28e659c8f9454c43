"""Precision and torch threads: the profile decides, never the CPU the run happens to meet.

A study must come out the same on every machine, so fp32 versus bf16 autocast and the
number of torch threads are profile settings (`world.bf16_autocast`, `world.num_threads`,
`train.bf16_autocast` / `train.bf16`, `rl.bf16_autocast`). The CPU's capabilities are read
only to *warn*: asking bf16 on a CPU without native bf16 (AVX-512 BF16 / AMX) is obeyed,
and one line says it will be slow (emulated bf16 is several times slower than fp32).

API for every call site:
  use_bf16(device, wanted, setting)  -> bool   the profile's choice, unchanged (warns once)
  autocast_for(device, enabled)      -> ctx    bf16 autocast over fp32 weights, or a no-op
  precision_name(enabled)            -> str    "bf16-autocast" | "fp32", for manifests
  torch_threads(n)                   -> ctx    n torch threads inside (0: leave as is)
  machine()                          -> dict   CPU model, cores, native bf16, torch threads, kernel ISA
  record(profile)                    -> dict   precision and threads of every part, for reports
  kernel_env(level)                  -> dict   environment that caps CPU kernels at `level` (world.cpu_kernels)
  effective_kernels(level)           -> str    the instruction set a run at `level` computes with here
  run_on_kernels(level, module, argv)         restart a command on `level`'s kernels (entry points)
  kernel_signature()                 -> dict   the kernels this process computes with (run cache keys)

CPU kernels. fp32 sums are ordered differently by the AVX2 and AVX-512 kernels of torch, MKL
and oneDNN, so a model pre-trained on one is a different model on the other (the tiny world's
arithmetic came out at 65 % on AVX-512 kernels and 97 % on AVX2, same recipe). `world.cpu_kernels`
pins the instruction set (avx2 | avx512) for every x86 CPU that has it; `native` takes the CPU's
best and the manifests say which one that was. Pinned, MKL also runs on its strict reproducible
path (MKL_CBWR=<isa>,STRICT), where the number of threads does not change a bit of a matrix
product: measured, 1 and 2 threads pre-train bit-identical weights (tests/test_kernels.py), so
the tiny world pre-trains on both cores of a laptop and still makes the one-thread model.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from pathlib import Path

import torch

_warned: set[str] = set()


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX). Only ever used to warn."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text(errors="ignore").split())
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(device, wanted: bool, setting: str) -> bool:
    """The profile's choice `wanted`, returned as is. On a CPU without native bf16 a request
    for bf16 is kept, with a one-line warning naming the `setting` that asked for it."""
    device = torch.device(device)
    if wanted and device.type == "cpu" and not cpu_has_native_bf16() and setting not in _warned:
        _warned.add(setting)
        print(f"warning: {setting}: true asks bf16 autocast, but this CPU has no native bf16 "
              f"(AVX-512 BF16/AMX); obeying the profile, expect it to run several times slower than fp32",
              file=sys.stderr, flush=True)
    return bool(wanted)


def autocast_for(device, enabled: bool):
    """bf16 autocast over fp32 weights when `enabled`; a no-op context otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def precision_name(enabled: bool) -> str:
    return "bf16-autocast" if enabled else "fp32"


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with n torch threads (0: unchanged), restoring the count afterwards."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


KERNEL_LEVELS = ("native", "avx2", "avx512")
# What each library reads, once, when it first dispatches (so set before torch computes).
# MKL_CBWR asks MKL for its bit-reproducible code path of that instruction set on any CPU that has it;
# STRICT makes its matrix products independent of the thread count too (measured: 1 and 2 threads
# pre-train bit-identical weights), so a profile may use every core it names without a new model.
_KERNEL_ENV = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2,STRICT",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_ENABLE_INSTRUCTIONS": "AVX512", "MKL_CBWR": "AVX512,STRICT",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}


def kernel_env_spec(level: str) -> dict[str, str]:
    """The environment `level` stands for, without checking this CPU (part of the world hash, so a
    change of these words makes a new base model)."""
    _check_level(level)
    return dict(_KERNEL_ENV.get(level, {}))


class KernelsUnavailable(RuntimeError):
    """The profile pins CPU kernels this CPU cannot run."""


def _check_level(level: str) -> None:
    if level not in KERNEL_LEVELS:
        raise ValueError(f"world.cpu_kernels: {level!r} is not one of {', '.join(KERNEL_LEVELS)}")


@functools.lru_cache(maxsize=None)
def cpu_isa() -> str:
    """The best kernel level this CPU runs: avx512, avx2 or the machine's name (ARM, old x86)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text(errors="ignore").split())
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
            return "avx512"
        if {"avx2", "fma"} <= flags:
            return "avx2"
    return platform.machine().lower() or "unknown"


def effective_kernels(level: str) -> str:
    """The instruction set a computation at `level` uses on this CPU (part of the world hash)."""
    _check_level(level)
    return cpu_isa() if level == "native" else level


def kernel_env(level: str) -> dict[str, str]:
    """Environment variables that cap torch, MKL and oneDNN at `level` ({} for native).

    Raises KernelsUnavailable when this CPU lacks the instruction set (an AVX2 laptop asked for
    avx512, or an ARM machine asked for either)."""
    _check_level(level)
    if level == "native":
        return {}
    have = cpu_isa()
    if have not in ("avx2", "avx512") or (level == "avx512" and have != "avx512"):
        raise KernelsUnavailable(
            f"world.cpu_kernels: {level} asks for {level.upper()} kernels, but this CPU's best is {have}: "
            f"the base model would be a different model from the one the profile was calibrated on. "
            f"Set world.cpu_kernels: native to pre-train with this CPU's kernels (stage 01's base gate "
            f"then checks the model it gets).")
    return dict(_KERNEL_ENV[level])


# The kernel variables as this process started (torch reads them once, when it first computes).
_ENV_AT_START = {name: os.environ.get(name) for env in _KERNEL_ENV.values() for name in env}


def process_has_kernels(level: str) -> bool:
    """Whether this process was started with `level`'s kernel environment (native: always)."""
    return all(_ENV_AT_START.get(name) == value for name, value in kernel_env(level).items())


def run_on_kernels(level: str, module: str, argv: list[str]) -> None:
    """Restart this command (`python -m module argv...`; `python script.py argv...` for a script) on
    `level`'s kernels unless it already runs on them: for the entry points that compute (base model, sweep, calibration), so a pinned profile
    gives the same numbers from the command line as under `make reproduce`. Returns when it may go on."""
    if process_has_kernels(level):
        return
    env = {**os.environ, **kernel_env(level)}
    print(f"restarting on {level} kernels (world.cpu_kernels)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    target = [module] if module.endswith(".py") else ["-m", module]   # a script (benchmarks/) or a module
    os.execve(sys.executable, [sys.executable, *target, *argv], env)


def kernel_signature() -> dict:
    """The CPU kernels this process computes with: torch's dispatch level and the kernel variables
    it started with. Part of every trained run's cache key, so a run trained in a notebook kernel
    on the CPU's own kernels is never taken for one trained on the profile's pinned kernels."""
    return {"torch": torch.backends.cpu.get_cpu_capability(),
            **{name: value for name, value in sorted(_ENV_AT_START.items()) if value}}


def machine() -> dict:
    """The machine a manifest was written on (informative only: nothing depends on it).

    `kernels` is the instruction set torch's CPU kernels dispatch to (AVX512, AVX2, ...; lowered by
    ATEN_CPU_CAPABILITY): fp32 reductions differ between them, so two runs compare bit for bit only
    when it matches."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "native_bf16": cpu_has_native_bf16(),
            "kernels": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "cuda_devices": torch.cuda.device_count()}


def record(profile) -> dict:
    """Precision, threads and CPU kernels of each part of the study, as the profile sets them."""
    on_gpu = profile.device == "cuda" or (profile.device == "auto" and torch.cuda.is_available())
    train_bf16 = profile.train.bf16 if on_gpu else profile.train.bf16_autocast
    return {
        "world_pretrain": {"precision": precision_name(profile.world.bf16_autocast),
                           "threads": profile.world.num_threads},
        "train": {"precision": precision_name(train_bf16), "workers": profile.train.cpu_workers},
        "rl": {"precision": precision_name(profile.rl.bf16_autocast)},
        "weights_dtype": profile.model.dtype,
        "cpu_kernels": profile.world.cpu_kernels,
    }

