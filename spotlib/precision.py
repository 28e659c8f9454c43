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


def machine() -> dict:
    """The machine a manifest was written on (informative only: nothing depends on it).

    `kernels` is the instruction set torch's CPU kernels dispatch to (AVX512, AVX2, ...; lowered by
    ATEN_CPU_CAPABILITY): fp32 reductions differ between them, so two runs compare bit for bit only
    when it matches."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "native_bf16": cpu_has_native_bf16(),
            "kernels": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "cuda_devices": torch.cuda.device_count()}


def record(profile) -> dict:
    """Precision and threads of each part of the study, as the profile sets them."""
    on_gpu = profile.device == "cuda" or (profile.device == "auto" and torch.cuda.is_available())
    train_bf16 = profile.train.bf16 if on_gpu else profile.train.bf16_autocast
    return {
        "world_pretrain": {"precision": precision_name(profile.world.bf16_autocast),
                           "threads": profile.world.num_threads},
        "train": {"precision": precision_name(train_bf16), "workers": profile.train.cpu_workers},
        "rl": {"precision": precision_name(profile.rl.bf16_autocast)},
        "weights_dtype": profile.model.dtype,
    }
