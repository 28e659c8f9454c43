"""The tiny world's families as benchmarks: in-domain arithmetic, its out-of-domain word
problems, knowledge retention (facts) and instruction following (format)."""
from __future__ import annotations

from functools import partial

from spotlib.evals.base import Benchmark

WORLD_GROUPS = {"arith": "in_domain", "arith_ood": "ood", "facts": "general", "format": "general"}


def load_world(family: str, eval_cfg, n: int, world_cfg=None, split: str = "eval") -> list[dict]:
    """`n` items of the family's split. The validation split is small (a few percent of the
    world's problems), so there `n` is capped at what the split holds."""
    from spotlib import world

    if split == "eval":
        return world.make_items(family, n, split="eval", seed=0, world_cfg=world_cfg)
    return _largest_prefix(lambda m: world.make_items(family, m, split=split, seed=0, world_cfg=world_cfg), n)


def _largest_prefix(make, n: int) -> list[dict]:
    """make(n), or make(m) for the largest m < n the split can supply (items are prefix-stable)."""
    try:
        return make(n)
    except ValueError:
        pass
    lo, hi = 0, n  # make(lo) works, make(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            make(mid)
            lo = mid
        except ValueError:
            hi = mid
    return make(lo)


def score_world(item: dict, response: str) -> dict:
    from spotlib import world

    return {"score": float(world.score(item, response or ""))}


def world_benchmarks() -> list[Benchmark]:
    return [Benchmark(name=family, group=group, load=partial(load_world, family), score=score_world, k=1,
                      dataset="spotlib.world", extra={"splits": ("eval", "val")})
            for family, group in WORLD_GROUPS.items()]
