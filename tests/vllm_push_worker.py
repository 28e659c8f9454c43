"""GRPO's weight push on vLLM's CPU build, in its own process (the engine lives in-process, as
colocated with a training rank): perturb a micro model, push it into an engine built from the
original, sample greedily, save the pushed weights.

    python tests/vllm_push_worker.py --base BASE --out DIR [--no-repack]

Writes DIR/pushed/ (the pushed weights, saved like any model) and DIR/result.json (the
greedy completions after the push, and how many GEMMs were packed again).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

PROMPTS = [f"What is {a} + {b}?" for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 1), (2, 2), (4, 5), (6, 3)]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-repack", action="store_true", help="skip packing the kept-weight GEMMs again")
    args = parser.parse_args()
    out = Path(args.out)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spotlib.engines import rollout, vllm_weights
    from spotlib.config import load_profile
    from spotlib.engines.settings import engine_args

    repacked = []
    original = vllm_weights.repack_cpu_heads  # the engine core runs in this process: patched here, seen there
    vllm_weights.repack_cpu_heads = (lambda model: 0) if args.no_repack else \
        (lambda model: repacked.append(original(model)) or repacked[-1])

    settings = engine_args(load_profile("rehearsal").engine)
    settings["max_model_len"] = 384
    engine = rollout.RolloutEngine("vllm", args.base, seed=0, engine_args=settings)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    policy = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a different model: every weight moved by a third of its own spread
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * param.std().clamp_min(1e-3) / 3)
        # Special tokens' embeddings (tied: also their logits) set to zero, so that greedy decoding
        # writes text instead of stopping at once: the comparison sees every token.
        # So are tokens that are only whitespace (the answer is compared stripped).
        quiet = [i for i in range(len(tokenizer)) if not tokenizer.decode([i]).strip()]
        quiet += [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens]
        policy.get_input_embeddings().weight[quiet] = 0.0
    texts = engine.sample(policy, tokenizer, PROMPTS, n=1, temperature=0.0, top_p=1.0, top_k=-1,
                          max_new_tokens=16, seed=0, batch_size=8, autocast=None)
    engine.release()
    policy.save_pretrained(out / "pushed")
    tokenizer.save_pretrained(out / "pushed")
    (out / "result.json").write_text(json.dumps({"texts": [t[0] for t in texts], "repacked": repacked,
                                                 "sleeps": engine.sleeps}))


if __name__ == "__main__":
    main()
