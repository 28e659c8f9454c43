"""Which prompts each GRPO step takes, and how a step's prompt groups split over ranks and micro-batches.

Two runs with the same seed see the same prompts in the same order (equal budgets); on W
processes every rank owns an equal block of whole prompt groups of each mini-batch.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

from spotlib.config import RLConfig


def prompt_schedule(n_items: int, prompts_per_step: int, steps: int, seed: int) -> list[list[int]]:
    """Item indices for every step: epochs of seeded permutations, cut into consecutive slices.

    Two runs with the same seed see the same prompts in the same order (equal budgets).
    """
    order: list[int] = []
    epoch = 0
    while len(order) < steps * prompts_per_step:
        perm = list(range(n_items))
        random.Random(seed * 7919 + epoch).shuffle(perm)
        order.extend(perm)
        epoch += 1
    return [order[s * prompts_per_step:(s + 1) * prompts_per_step] for s in range(steps)]


def total_steps(cfg: RLConfig, n_items: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return math.ceil(n_items * cfg.epochs / cfg.prompts_per_step)


def layout(cfg: RLConfig, world: int) -> tuple[int, int]:
    """(prompts per mini-batch on each rank, micro-batches per mini-batch on each rank).

    A mini-batch (one optimiser step) holds `min(mini_batch, prompts_per_step)` prompt
    groups in all; every rank owns an equal share of whole groups, and splits its share
    into the same number of micro-batches (gradient accumulation steps).
    """
    per_mini = min(cfg.mini_batch, cfg.prompts_per_step)
    if cfg.prompts_per_step % per_mini:
        raise ValueError(f"rl.prompts_per_step={cfg.prompts_per_step}: expected a multiple of "
                         f"rl.mini_batch={per_mini} (every optimiser step sees the same number of groups)")
    if per_mini % world:
        raise ValueError(f"rl.mini_batch={per_mini}: expected a multiple of the {world} training processes "
                         f"(each process owns whole prompt groups)")
    local = per_mini // world
    return local, math.ceil(local * cfg.rollouts_per_prompt / cfg.micro_batch)


def rank_share(step_positions: Sequence[int], per_mini: int, world: int, rank: int) -> list[int]:
    """The prompts of one step that `rank` samples and trains on: a contiguous block of
    `per_mini / world` prompts out of each mini-batch of `per_mini`."""
    local = per_mini // world
    out: list[int] = []
    for start in range(0, len(step_positions), per_mini):
        out.extend(step_positions[start + rank * local:start + (rank + 1) * local])
    return out


def split_even(indices: Sequence[int], parts: int) -> list[list[int]]:
    """`parts` consecutive slices whose sizes differ by at most one."""
    size, extra = divmod(len(indices), parts)
    out, start = [], 0
    for k in range(parts):
        stop = start + size + (1 if k < extra else 0)
        out.append(list(indices[start:stop]))
        start = stop
    return out
