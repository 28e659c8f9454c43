"""Benchmark registry: `get(name)` -> Benchmark (loader, prompt, scorer, k); `load_items`.

Paper profile: aime24, aime25, amc23, math500, minerva, olympiadbench (in-domain, math-verify),
gpqa_diamond, connect4 (out-of-domain), ifeval (general). Tiny profile: the world's
families arith (in-domain), arith_ood (OOD), facts and format (general).
"""
from __future__ import annotations

from spotlib.evals.base import GROUPS, Benchmark, setting
from spotlib.evals.connect4 import connect4_benchmark
from spotlib.evals.gpqa import gpqa_benchmark
from spotlib.evals.ifeval import ifeval_benchmark
from spotlib.evals.math import math_benchmarks
from spotlib.evals.world import world_benchmarks

REGISTRY: dict[str, Benchmark] = {
    b.name: b for b in [*math_benchmarks(), gpqa_benchmark(), connect4_benchmark(), ifeval_benchmark(),
                        *world_benchmarks()]
}


def get(name: str) -> Benchmark:
    if name not in REGISTRY:
        raise KeyError(f"unknown benchmark {name!r} (expected one of {', '.join(REGISTRY)})")
    return REGISTRY[name]


def k_for(eval_cfg, name: str) -> int:
    """avg@k: the profile's `eval.k[name]`, else its `default`, else the paper's k."""
    return setting(eval_cfg.k, name, get(name).k)


def load_items(name: str, eval_cfg, world_cfg=None, split: str = "eval") -> list[dict]:
    """The benchmark's items (at most `eval.n_items[name]`), prompts built.

    `split="val"` asks for the validation items used to tune learning rates; only
    benchmarks that list it in `extra["splits"]` (the tiny world's families) have one.
    """
    n = setting(eval_cfg.n_items, name, 10**9)
    bench = get(name)
    if split == "eval":
        return bench.load(eval_cfg, n, world_cfg)
    if split not in bench.extra.get("splits", ()):
        raise ValueError(f"benchmark {name!r} has no {split!r} split (only the test items)")
    return bench.load(eval_cfg, n, world_cfg, split=split)


__all__ = ["REGISTRY", "GROUPS", "Benchmark", "get", "k_for", "load_items"]
