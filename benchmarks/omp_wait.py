"""How idle OpenMP threads wait: spinning (OpenMP's default) against passive (the study's setting).

    PYTHONPATH=. python benchmarks/omp_wait.py --profile tiny --rounds 2

Each measurement is a fresh child process on the profile's pinned kernels with
OMP_WAIT_POLICY=ACTIVE (spin) or PASSIVE, two torch threads, doing what the study does with two
threads: pre-training steps of the tiny world and sampling (stage 01's generate). Each runs on a
quiet machine and beside a busy neighbour (a one-thread process multiplying matrices, as a
second stage or a test run would be). Rounds alternate the variants; the figures are medians,
and the ratios compare spin and passive under the same condition. Every child also prints a
digest of what it computed: passive waiting must not change a number.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r'''
import hashlib, json, sys, time, torch
from spotlib.config import load_profile
from spotlib.world import pretrain as P
from spotlib.engines.sampling import generate
from spotlib.world.families import make_items
world = load_profile(sys.argv[1]).world
steps, prompts = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(2)
torch.manual_seed(world.seed)
tok = P.build_tokenizer(world); model = P.build_model(world, tok)
enc = P.encode_examples(tok, P.pretrain_examples(world, steps * world.pretrain_batch))
opt = P.make_optimizer(model, world); model.train()
start, tokens = time.perf_counter(), 0
for s in range(steps):
    tokens += P.pretrain_step(model, opt, enc[s * world.pretrain_batch:(s + 1) * world.pretrain_batch],
                              tok.pad_token_id, world, s, False)[1]
pretrain_s = time.perf_counter() - start
model.eval()
recs = make_items("arith", prompts, "val", seed=0, world_cfg=world)
start = time.perf_counter()
out = generate(model, tok, [r["prompt"] for r in recs], n=1, temperature=0.7, top_p=0.8, top_k=-1,
               max_new_tokens=64, seed=0, batch_size=64, backend="transformers", progress=False)
sample_s = time.perf_counter() - start
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())
                        + "".join(o[0] for o in out).encode()).hexdigest()[:12]
print(json.dumps({"pretrain_tok_s": tokens / pretrain_s, "samples_s": prompts / sample_s, "digest": digest}))
'''

NEIGHBOUR = "import torch\ntorch.set_num_threads(1)\nx = torch.randn(256, 256)\nwhile True:\n    x = torch.tanh(x @ x)\n"


def measure(profile: str, policy: str, busy: bool, steps: int, prompts: int, env: dict) -> dict:
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if busy else None
    try:
        if neighbour:
            time.sleep(1.0)
        done = subprocess.run([sys.executable, "-c", CHILD, profile, str(steps), str(prompts)],
                              env={**env, "OMP_WAIT_POLICY": policy}, capture_output=True, text=True, check=True)
    finally:
        if neighbour:
            neighbour.kill()
            neighbour.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    from spotlib import precision
    from spotlib.config import load_profile
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="pre-training steps per child")
    parser.add_argument("--prompts", type=int, default=64, help="prompts sampled per child")
    args = parser.parse_args(argv)
    level = load_profile(args.profile).world.cpu_kernels
    env = {**os.environ, **precision.kernel_env(level)}
    variants = [(policy, busy) for busy in (False, True) for policy in ("ACTIVE", "PASSIVE")]
    results = {v: [] for v in variants}
    for _ in range(args.rounds):
        for policy, busy in variants:
            results[(policy, busy)].append(measure(args.profile, policy, busy, args.steps, args.prompts, env))
    m = precision.machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores; kernels {level}; 2 torch threads; "
          f"{args.rounds} rounds x ({args.steps} pre-training steps, {args.prompts} prompts)")
    print(f"{'condition':<10} {'wait':<8} {'pretrain tok/s':>15} {'samples/s':>10}  digest")
    med = {}
    for (policy, busy), runs in results.items():
        med[(policy, busy)] = (statistics.median(r["pretrain_tok_s"] for r in runs),
                               statistics.median(r["samples_s"] for r in runs))
        digests = sorted({r["digest"] for r in runs})
        print(f"{'busy' if busy else 'quiet':<10} {policy.lower():<8} {med[(policy, busy)][0]:>15,.0f} "
              f"{med[(policy, busy)][1]:>10.1f}  {', '.join(digests)}")
    for busy in (False, True):
        (pa, sa), (pp, sp) = med[("ACTIVE", busy)], med[("PASSIVE", busy)]
        print(f"passive / spin, {'busy' if busy else 'quiet'}: pre-training {pp / pa:.2f}x, sampling {sp / sa:.2f}x")
    same = len({r["digest"] for runs in results.values() for r in runs}) == 1
    print(f"same weights and samples under every variant: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
