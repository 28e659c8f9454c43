"""The tiny world's families as benchmarks: in-domain arithmetic, its out-of-domain word
problems, knowledge retention (facts) and instruction following (format)."""
from __future__ import annotations

from functools import partial

from spotlib.evals.base import Benchmark

WORLD_GROUPS = {"arith": "in_domain", "arith_ood": "ood", "facts": "general", "format": "general"}


def load_world(family: str, eval_cfg, n: int, profile=None) -> list[dict]:
    from spotlib import world

    world_cfg = profile.world if profile is not None else None
    return world.make_items(family, n, split="eval", seed=0, world_cfg=world_cfg)


def score_world(item: dict, response: str) -> dict:
    from spotlib import world

    return {"score": float(world.score(item, response or ""))}


def world_benchmarks() -> list[Benchmark]:
    return [Benchmark(name=family, group=group, load=partial(load_world, family), score=score_world, k=1,
                      dataset="spotlib.world")
            for family, group in WORLD_GROUPS.items()]
