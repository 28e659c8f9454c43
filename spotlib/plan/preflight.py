"""Preflight: what a GPU profile needs before any compute, each missing thing one line.

`reproduce` runs it for profiles that name GPUs (`hardware.gpus > 0`) and refuses to
start while any line is left (`--skip-preflight` for experts); `--dry-run` prints them.
Nothing here imports vLLM or DeepSpeed (find_spec only); the one network call is
GPQA-Diamond's access check on the Hub (`evals.gpqa.check_access`), when a run needs it.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from spotlib.config import REPO_ROOT, Profile
from spotlib.plan.memory import GIB, MemoryPlan, build_plan
from spotlib.plan.model_shape import BF16, FP32, model_shape


def cuda_memory_gib() -> list[float]:
    """Total memory of each visible CUDA device, in GiB (empty without CUDA)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_properties(i).total_memory / GIB for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA install means no usable GPU
        return []


def free_disk_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path != path.parent:   # outputs/<profile> may not exist yet
        path = path.parent
    return shutil.disk_usage(path).free


def check_gpus(profile: Profile, plan: MemoryPlan | None) -> list[str]:
    need = profile.hardware.gpus
    cards = cuda_memory_gib()
    failures = plan.failures() if plan is not None else []
    if not cards:  # validation (spotlib.plan.validate) reports a machine without GPUs, once
        return failures
    if len(cards) < need:
        failures.append(f"{len(cards)} CUDA GPU(s) visible: profile {profile.name} needs {need} (hardware.gpus)")
    smallest = min(cards)
    # 2% slack: an "80 GB" card reports 79.2-79.6 GiB.
    if smallest < 0.98 * profile.hardware.gpu_memory_gib:
        failures.append(f"the smallest visible GPU has {smallest:.1f} GiB: profile {profile.name} plans for "
                        f"{profile.hardware.gpu_memory_gib:g} GiB (hardware.gpu_memory_gib)")
    return failures


def uses_vllm(profile: Profile) -> bool:
    return "vllm" in (profile.sample.backend, profile.eval.backend, profile.rl.backend)


def accelerate_uses_deepspeed(profile: Profile) -> bool:
    path = profile.train.accelerate_config
    if not path:
        return False
    file = Path(path) if Path(path).is_absolute() else REPO_ROOT / path
    return file.is_file() and "DEEPSPEED" in file.read_text()


def check_packages(profile: Profile) -> list[str]:
    failures = []
    if uses_vllm(profile) and importlib.util.find_spec("vllm") is None:
        failures.append("vllm is not installed: the profile samples with backend vllm (make setup on a GPU machine)")
    if profile.hardware.gpus > 1 and not profile.train.accelerate_config:
        failures.append(f"train.accelerate_config is not set: with {profile.hardware.gpus} GPUs training would run "
                        f"in one process on one GPU (set it to params/accelerate_zero2.yaml)")
    if accelerate_uses_deepspeed(profile) and importlib.util.find_spec("deepspeed") is None:
        failures.append(f"deepspeed is not installed: {profile.train.accelerate_config} trains under DeepSpeed")
    return failures


def check_oracle(profile: Profile) -> list[str]:
    """What the paid Oracle's settings lack. A key variable that is named but unset is
    validation's line (spotlib.plan.validate: only when stage 02 is to run), said once."""
    o = profile.oracle
    if o.kind != "openai":
        return []
    failures = []
    if not o.api_key_env:
        failures.append("oracle.api_key_env is not set: name the environment variable that holds the Oracle's key")
    if o.max_cost_usd is None:
        failures.append(f"oracle.max_cost_usd is not set in {profile.source}: set a spending cap for the paid Oracle")
    return failures


def check_gated_data(profile: Profile) -> list[str]:
    """GPQA-Diamond's access (token, accepted terms, a local copy): `evals.gpqa.check_access`."""
    if "gpqa_diamond" not in profile.eval.benchmarks or "gpqa_diamond" in profile.eval.data_files:
        return []
    from spotlib.evals import gpqa

    try:
        problem = gpqa.check_access(profile.eval)   # its lines name GPQA-Diamond already
    except Exception as exc:  # noqa: BLE001 - any refusal is the line to show
        problem = f"GPQA-Diamond: {str(exc) or type(exc).__name__}"
    return [problem] if problem else []


def needed_disk_bytes(profile: Profile) -> float:
    """Checkpoints the run writes: one bf16 model per training run and seed and per GRPO start, the
    downloaded base model, and one resumable checkpoint (weights + fp32 master, m, v) per loop."""
    from spotlib.train.runspec import plan_runs

    model = BF16 * model_shape(profile).params
    resumable = model + 3 * FP32 * model_shape(profile).params
    runs = len(plan_runs(profile.train)) * len(profile.seeds)
    count = 1 + runs + len(profile.rl.init_methods)
    return count * model + (resumable if profile.train.save_every else 0) + (resumable if profile.rl.save_every else 0)


def check_disk(profile: Profile) -> list[str]:
    need, free = needed_disk_bytes(profile), free_disk_bytes(profile.out)
    if free >= need:
        return []
    return [f"free disk {free / GIB:.0f} GiB under {profile.out}: the run writes about {need / GIB:.0f} GiB "
            f"of checkpoints (set output_dir to a larger disk)"]


def preflight(profile: Profile, plan: MemoryPlan | None = None) -> list[str]:
    """Every problem at once, one line each; empty when the profile can start."""
    if plan is None and profile.hardware.gpus > 0:
        plan = build_plan(profile)
    return (check_gpus(profile, plan) + check_packages(profile) + check_oracle(profile)
            + check_gated_data(profile) + check_disk(profile))
