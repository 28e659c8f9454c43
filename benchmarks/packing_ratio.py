"""tokens_real / tokens_computed of stage 04's micro-batches, padded against packed.

Builds a profile's training data the way stage 03 words it in the world (student-worded
solutions as y⁺, the same with one slipped step as y⁻; the Oracle's direct solutions for
SFT), tokenizes it as stage 04 does (`spotlib.train.data.prepare`, the profile's lengths and
completion format) and walks the profile's optimiser steps (`step_rows`, micro-batches of
`train.per_device_batch`), counting the data's tokens and the positions each layout runs.
No model runs: seconds.

    python benchmarks/packing_ratio.py --profile tiny
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def world_data(profile, n: int):
    from spotlib import world
    from spotlib.train import data as D
    from spotlib.world.tokenizer import build_tokenizer

    t = profile.train
    tok = build_tokenizer(profile.world)
    rng = random.Random(0)
    pairs, direct = [], []
    for it in world.make_items("arith", n, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        lines = good.split("\n")   # one slipped step, as in benchmarks/train_throughput.py
        i = 1 + rng.randrange(max(1, len(lines) - 2))
        lines[i] = lines[i] + "1"
        pairs.append({"id": it["id"], "prompt": it["prompt"], "chosen": good, "rejected": "\n".join(lines)})
        direct.append({"id": it["id"], "prompt": it["prompt"], "chosen": world.oracle_solution(it, rng),
                       "rejected": None})
    kw = dict(completion_format=t.completion_format)
    return (D.prepare(tok, pairs, t.max_len, t.max_prompt_len, True, **kw),
            D.prepare(tok, direct, t.max_len, t.max_prompt_len, False, **kw))


def ratios(train_cfg, data, pairs: bool) -> dict:
    from spotlib.train import packing as P
    from spotlib.train.data import step_rows

    micro = train_cfg.per_device_batch
    effective = micro * train_cfg.grad_accum
    steps = train_cfg.max_steps or math.ceil(train_cfg.epochs * len(data) / effective)
    out = {}
    for packing in (False, True):
        real = computed = 0
        for step in range(steps):
            rows = step_rows(len(data), 0, step, effective)
            for m in range(train_cfg.grad_accum):
                part = rows[m * micro:(m + 1) * micro]
                parts = [(data.chosen, part)] + ([(data.rejected, part)] if pairs else [])
                layout = P.layout(parts, 0, packing)
                real, computed = real + layout.tokens_real, computed + layout.tokens_computed
        out["packed" if packing else "padded"] = {"tokens_real": real, "tokens_computed": computed,
                                                  "ratio": round(real / computed, 4)}
    return out


def main(argv=None) -> dict:
    from spotlib.config import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    n = profile.train.n_examples or profile.filter.max_examples
    pairs, direct = world_data(profile, n)
    result = {"profile": args.profile, "examples": n, "pairs": ratios(profile.train, pairs, True),
              "sft_direct": ratios(profile.train, direct, False)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
