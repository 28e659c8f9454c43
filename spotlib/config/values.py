"""The values a loaded profile may hold: choices, positive keys, trackers, and the range rules
(`spotlib.config.checks`) run over them; the first problem names its file and key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spotlib.config.schema import ConfigError, Profile

_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "assets": ("", "rehearsal"),
    "world.prompt_template": ("plain", "paper"),
    "base_gate.mode": ("enforce", "warn"),
    "sample.backend": ("auto", "transformers", "vllm", "vllm_standin"),
    "sample.grading": ("world", "math_verify", "paper_regex"),
    "eval.grading": ("math_verify", "paper_regex"),
    "eval.backend": ("auto", "transformers", "vllm", "vllm_standin"),
    "oracle.kind": ("programmatic", "openai", "local_server"),
    "oracle.prompt_variant": ("with_ground_truth", "without_ground_truth", "simplified"),
    "oracle.server_thinking": ("inline", "gemini", "field"),
    "filter.unit": ("tokens", "chars"),
    "train.delta_mode": ("running_mean", "ema", "none"),
    "train.completion_format": ("conversational", "clean"),
    "train.launcher": ("accelerate", "torchrun"),
    "world.cpu_kernels": ("native", "avx2", "avx512"),
}


def check_choices(profile: Profile, path: Path) -> None:
    for dotted, allowed in _CHOICES.items():
        node: Any = profile
        for part in dotted.split("."):
            node = getattr(node, part)
        if node not in allowed:
            raise ConfigError(f"{path}: key {dotted}: {node!r} is not one of {', '.join(allowed)}")
    if not 0.0 < profile.filter.gamma <= 1.0:
        raise ConfigError(f"{path}: key filter.gamma: expected a value in (0, 1], got {profile.filter.gamma}")


# Names `spotlib.models.torch_dtype` accepts (kept equal by a test; no torch import here).
DTYPE_NAMES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")

# Settings that must be > 0 (counts, sizes, rates); `None` is allowed where the type allows it.
_POSITIVE = (
    "sample.num_problems", "sample.n", "sample.max_new_tokens", "sample.batch_size",
    "oracle.concurrency", "oracle.direct_attempts", "oracle.timeout_s",
    "filter.max_examples",
    "train.epochs", "train.max_steps", "train.per_device_batch", "train.grad_accum", "train.max_len",
    "train.max_prompt_len", "train.n_examples", "train.cpu_workers", "train.logits_chunk_tokens",
    "eval.max_new_tokens", "eval.batch_size",
    "rl.num_prompts", "rl.rollouts_per_prompt", "rl.prompts_per_step", "rl.mini_batch", "rl.lr",
    "rl.max_new_tokens", "rl.epochs", "rl.max_steps", "rl.micro_batch", "rl.rollout_batch", "rl.ppo_epochs",
    "world.pretrain_steps", "world.pretrain_batch", "world.pretrain_lr",
    "model.max_len",
)
# Mappings whose every value must be > 0.
_POSITIVE_MAPS = ("train.lr", "eval.k", "eval.n_items")


def _get(profile: Profile, dotted: str) -> Any:
    node: Any = profile
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


ORACLE_BEHAVIOUR_KEYS = ("restart_rate", "reword_rate", "fail_rate", "wrong_step_rate", "restart_first_rate")

# What `train.report_to` may name (spotlib.train.tracking): one of these, a list of them, or none.
TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")


def report_to_problem(report_to: str | list[str]) -> str | None:
    """Why a `train.report_to` value is not a valid setting (None when it is)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    unknown = [n for n in names if n not in TRACKERS + ("none",)]
    if unknown:
        return f"{unknown[0]!r} is not one of {', '.join(TRACKERS + ('none',))}"
    if "none" in names and len(names) > 1:
        return f"'none' cannot be combined with trackers ({', '.join(names)})"
    return None


def check_values(profile: Profile, path: Path | str) -> None:
    """Values that no run can use: zero or negative counts and rates, no seeds, unknown dtypes."""
    if not profile.seeds:
        raise ConfigError(f"{path}: key seeds: expected at least one seed, got []")
    for dotted in _POSITIVE:
        value = _get(profile, dotted)
        if value is not None and value <= 0:
            raise ConfigError(f"{path}: key {dotted}: expected a value > 0, got {value}")
    for dotted in _POSITIVE_MAPS:
        for name, value in _get(profile, dotted).items():
            if value <= 0:
                raise ConfigError(f"{path}: key {dotted}.{name}: expected a value > 0, got {value}")
    for family, bounds in profile.base_gate.targets.items():
        if len(bounds) != 2 or not 0.0 <= bounds[0] <= bounds[1] <= 1.0:
            raise ConfigError(f"{path}: key base_gate.targets.{family}: expected [low, high] with "
                              f"0 <= low <= high <= 1 (accuracy as a fraction), got {bounds}")
    if not 0.0 <= profile.world.slip_rate < 1.0:
        raise ConfigError(f"{path}: key world.slip_rate: expected a share in [0, 1), got {profile.world.slip_rate}")
    if len(set(profile.train.sweep_seeds)) != len(profile.train.sweep_seeds):
        raise ConfigError(f"{path}: key train.sweep_seeds: each seed once, got {profile.train.sweep_seeds}")
    for i, lr in enumerate(profile.train.lr_grid):
        if lr <= 0:
            raise ConfigError(f"{path}: key train.lr_grid[{i}]: expected a learning rate > 0, got {lr}")
    behaviour = {k: getattr(profile.oracle, k) for k in ORACLE_BEHAVIOUR_KEYS}
    for key, value in behaviour.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{path}: key oracle.{key}: expected a share in [0, 1], got {value}")
    for a, b in (("restart_rate", "reword_rate"), ("fail_rate", "wrong_step_rate")):
        if behaviour[a] + behaviour[b] > 1.0:
            raise ConfigError(f"{path}: keys oracle.{a} + oracle.{b}: shares of one draw, expected a sum <= 1, "
                              f"got {behaviour[a] + behaviour[b]:g}")
    if any(behaviour.values()) and profile.oracle.kind == "openai":
        raise ConfigError(f"{path}: key oracle.{next(k for k, v in behaviour.items() if v)}: the programmatic "
                          "Oracle's behaviour (oracle.kind programmatic or local_server), not an endpoint's")
    for key in ("sweep_bracket", "sweep_bracket_tie"):
        if getattr(profile.train, key) < 0:
            raise ConfigError(f"{path}: key train.{key}: expected a value >= 0, got {getattr(profile.train, key)}")
    if profile.train.tether_lr is not None and profile.train.tether_lr <= 0:
        raise ConfigError(f"{path}: key train.tether_lr: expected a learning rate > 0 (or null: the top of "
                          f"train.lr_grid), got {profile.train.tether_lr}")
    problem = report_to_problem(profile.train.report_to)
    if problem:
        raise ConfigError(f"{path}: key train.report_to: {problem}")
    if profile.model.dtype not in DTYPE_NAMES:
        raise ConfigError(f"{path}: key model.dtype: {profile.model.dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    if not profile.train.methods:
        raise ConfigError(f"{path}: key train.methods: expected at least one method, got []")
    if not profile.eval.benchmarks:
        raise ConfigError(f"{path}: key eval.benchmarks: expected at least one benchmark, got []")
    check_ranges(profile, path)   # every other range and relation, one rule each (spotlib.config.checks)


def check_ranges(profile, path, extra_rules=()) -> None:
    """Raise ConfigError naming the first problem's key. `extra_rules`: rules that read the registries of
    the layers above (spotlib.plan.names), run by `spotlib.plan.validate`."""
    from spotlib.config.checks import problems

    found = problems(profile, extra_rules)
    if found:
        key, message = found[0]
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        raise ConfigError(f"{path}: key {key}: {message}{more}")


def secret_from_env(var_name: str | None, what: str = "API key") -> str | None:
    """Read a secret from the environment variable named in the profile (never from the profile)."""
    if not var_name:
        return None
    value = os.environ.get(var_name)
    if not value:
        raise ConfigError(f"{what}: environment variable {var_name} is not set")
    return value
