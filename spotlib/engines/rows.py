"""Sampling with transformers, one seed per row: `generate_rows`.

`model.generate` draws a whole batch from one global RNG; here row r is drawn from its own
generator, so a sample is a function of its seed whatever else shares its batch. The engines
build on it: `spotlib.engines.sampling` (the transformers backend) and the CPU stand-in for
vLLM (`spotlib.engines.standin`), which therefore agree sample for sample.
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import (LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper)

from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner


class _RowSampler(LogitsProcessor):
    """Samples each row with its own generator, then leaves only that token for greedy search.

    A batch shares one global RNG in `model.generate`; drawing row r from generator r instead
    makes a sample a function of its own seed, whatever else is in the batch."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, top_k: int):
        self.seeds = list(seeds)
        self.generators = None  # made on the logits' device at the first step (no copy to the CPU per step)
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_k and top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids, scores):
        scores = scores.float()
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        if self.generators is None:
            self.generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        probs = torch.softmax(scores, dim=-1)
        picks = torch.stack([torch.multinomial(probs[r], 1, generator=g)[0] for r, g in enumerate(self.generators)])
        chosen = torch.full_like(scores, float("-inf"))
        chosen[torch.arange(len(picks), device=scores.device), picks] = 0.0
        return chosen


@torch.no_grad()
def generate_rows(model, tokenizer, texts: Sequence[str], seeds: Sequence[int], *, temperature: float,
                  top_p: float, top_k: int, max_new_tokens: int, batch_size: int,
                  progress: bool = False, with_finish_reasons: bool = False):
    """One completion per (already templated) text, row i drawn with seeds[i]; transformers.
    `with_finish_reasons`: (texts, reasons), "stop" where the row wrote eos, else "length"."""
    order = sorted(range(len(texts)), key=lambda i: (len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]), i))
    out: list[str | None] = [None] * len(texts)
    reasons: list[str | None] = [None] * len(texts)
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    # Our processor does the sampling; transformers' own search is greedy over its one-hot output.
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    try:
        bar = tqdm(total=len(texts), desc="generate", disable=not progress, leave=False)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]  # sorted by length so a batch pads little
            enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            processors = LogitsProcessorList()
            if temperature > 0:
                processors.append(_RowSampler([seeds[i] for i in rows], temperature, top_p, top_k))
            generated = model.generate(**enc, **kwargs, logits_processor=processors)
            new_tokens = generated[:, enc["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            wrote_eos = (new_tokens == tokenizer.eos_token_id).any(dim=1).tolist()
            for i, text, stopped in zip(rows, decoded, wrote_eos):
                out[i] = text.strip()
                reasons[i] = "stop" if stopped else "length"
            bar.update(len(rows))
        bar.close()
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return (out, reasons) if with_finish_reasons else out  # type: ignore[return-value]
