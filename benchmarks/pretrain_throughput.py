"""Pre-training loop throughput, before and after, side by side in one run.

    PYTHONPATH=. python benchmarks/pretrain_throughput.py --profile tiny --steps 12 --rounds 3

Trains the profile's world model on its own pre-training batches with
  old      the loop as it was: full-sequence logits, per-tensor AdamW, 1 torch thread
  new@1t   spotlib.world.pretrain's loop (head on response positions only, fused AdamW), 1 thread
  old@Nt   the old loop with the profile's N threads (what threads alone buy)
  new      the new loop with the profile's threads: what `make reproduce` runs
Each variant runs `--steps` steps per round, rounds interleaved (old, old+2t, new, old, ...)
so a busy machine slows all of them alike (but a machine with more runnable
threads than cores punishes the multi-thread variants: measure threads on idle cores); the figure to read is the ratio of median
tokens/s, not the absolute rate. Every variant starts from the same weights and batches.

It runs on the profile's CPU kernels (`world.cpu_kernels`; it restarts itself on them), and says
whether `new@1t` and `new` end every round with bit-identical weights: on pinned kernels MKL
computes on its strict reproducible path, so the thread count should not change a bit.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import os
import statistics
import sys
import time

import torch

from spotlib import precision
from spotlib.config import load_profile
from spotlib.world.pretrain import (build_model, encode_examples, lr_at, make_optimizer, micro_batches,
                                    pretrain_examples, pretrain_step)
from spotlib.world.tokenizer import build_tokenizer


def old_step(model, optim, batch, pad_id, cfg, step, use_bf16):
    n_target = sum(len(s) - p for s, p in batch)
    for group in optim.param_groups:
        group["lr"] = lr_at(step, cfg)
    tokens = 0
    for ids, mask, labels in micro_batches(batch, pad_id, cfg.micro_batch_tokens):
        with precision.autocast_for("cpu", use_bf16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                                 ignore_index=-100, reduction="sum") / n_target
        loss.backward()
        loss.item()
        tokens += int(mask.sum())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    optim.zero_grad(set_to_none=True)
    return tokens


def new_step(model, optim, batch, pad_id, cfg, step, use_bf16):
    """The package's own step (what `make base-model` runs)."""
    return pretrain_step(model, optim, batch, pad_id, cfg, step, use_bf16)[1]


def old_optimizer(model, cfg):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.pretrain_lr, betas=(0.9, 0.95))


def weights_digest(model) -> str:
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:16]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=12, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = load_profile(args.profile).world
    if argv is None:   # the kernels the study uses
        precision.run_on_kernels(cfg.cpu_kernels, __file__, sys.argv[1:])
    threads = cfg.num_threads or torch.get_num_threads()
    tok = build_tokenizer(cfg)
    base = build_model(cfg, tok)
    encoded = encode_examples(tok, pretrain_examples(cfg, (args.steps + 1) * cfg.pretrain_batch))
    batches = [encoded[i * cfg.pretrain_batch:(i + 1) * cfg.pretrain_batch] for i in range(args.steps + 1)]
    use_bf16 = cfg.bf16_autocast
    variants = {"old": (old_step, old_optimizer, 1), "new@1t": (new_step, make_optimizer, 1),
                f"old@{threads}t": (old_step, old_optimizer, threads), "new": (new_step, make_optimizer, threads)}
    state = {}
    for name, (step_fn, make_opt, _) in variants.items():
        model = copy.deepcopy(base).train()
        state[name] = (model, make_opt(model, cfg))
    rates = {name: [] for name in variants}
    same_weights = []
    for _ in range(args.rounds):
        for name, (step_fn, _, n_threads) in variants.items():
            model, optim = state[name]
            with precision.torch_threads(n_threads):
                step_fn(model, optim, batches[0], tok.pad_token_id, cfg, 0, use_bf16)  # warm-up
                started, tokens = time.perf_counter(), 0
                for i, batch in enumerate(batches[1:], start=1):
                    tokens += step_fn(model, optim, batch, tok.pad_token_id, cfg, i, use_bf16)
                rates[name].append(tokens / (time.perf_counter() - started))
        same_weights.append(weights_digest(state["new@1t"][0]) == weights_digest(state["new"][0]))
    m = precision.machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, native bf16 {'yes' if m['native_bf16'] else 'no'}; "
          f"kernels {m['kernels']}, MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}; "
          f"profile {args.profile}: precision {precision.precision_name(use_bf16)}, {threads} threads, "
          f"{args.rounds} rounds x {args.steps} steps x {cfg.pretrain_batch} sequences")
    old = statistics.median(rates["old"])
    print(f"{'variant':<10} {'tokens/s (median)':>18} {'per round':>30} {'ratio to old':>13}")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"{name:<10} {med:>18,.0f} {', '.join(f'{v:,.0f}' for v in values):>30} {med / old:>12.2f}x")
    print(f"new@1t and new ({threads} threads) bit-identical weights after each round: "
          f"{', '.join('yes' if same else 'NO' for same in same_weights)}")


if __name__ == "__main__":
    main()
