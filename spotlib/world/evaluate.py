"""Held-out accuracy of a model on the tiny world's families (the base model's report card)."""
from __future__ import annotations

from .families import FAMILIES, make_items
from .scoring import score


def score_model(model, tokenizer, n_per_family: int = 100, temperature: float = 0.0, seed: int = 0,
                world_cfg=None, families=FAMILIES, split: str = "eval", max_new_tokens: int = 128,
                batch_size: int = 64, return_samples: bool = False, prompt_prefix: str = ""):
    """family -> accuracy on n_per_family held-out items (temperature 0 = greedy, top-p 1), each
    prompt after `prompt_prefix` (e.g. the context of the oracle-worded pre-training examples).

    With return_samples=True, returns (accuracies, {family: [(record, response), ...]}).
    """
    from spotlib.engines.sampling import generate
    accuracies, samples = {}, {}
    for family in families:
        records = make_items(family, n_per_family, split, seed=seed, world_cfg=world_cfg)
        prompts = [prompt_prefix + r["prompt"] for r in records]
        outputs = generate(model, tokenizer, prompts, n=1, temperature=temperature, top_p=1.0, top_k=-1,
                           max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                           backend="transformers", progress=False)
        pairs = [(r, o[0]) for r, o in zip(records, outputs)]
        accuracies[family] = sum(score(r, text) for r, text in pairs) / max(1, len(pairs))
        samples[family] = pairs
    return (accuracies, samples) if return_samples else accuracies


def style_nll(model, tokenizer, n: int = 64, seed: int = 0, world_cfg=None, max_len: int = 320) -> dict:
    """Mean NLL (nats per response token) of correct held-out arith solutions written in the
    student's styles and in the oracle's style: how far off-policy the oracle's wording is."""
    import random

    import torch

    from spotlib.tokens import build_completion_batch, sequence_logps
    from .styles import oracle_solution, student_solution
    records = make_items("arith", n, "val", seed=seed, world_cfg=world_cfg)
    rng = random.Random(seed)
    result = {}
    for name, writer in (("student", student_solution), ("oracle", oracle_solution)):
        texts = [writer(r, rng) for r in records]
        batch = build_completion_batch(tokenizer, [r["prompt"] for r in records], texts, max_len)
        with torch.no_grad():
            logps, counts = sequence_logps(model, batch)
        result[name] = round(float(-logps.sum() / counts.sum()), 4)
    return result
