"""Generation behind one function: transformers `generate` on CPU, vLLM on GPUs.

vLLM runs in engine worker processes (`spotlib.engine_pool`, one per GPU) and is imported
only there: it pins its own torch and is never part of the CPU environment. Every sample
has its own seed derived from its item (`sample_seed`), in both paths.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Sequence

import torch
from transformers import (LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                          TopPLogitsWarper)

from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner

from spotlib.models import chat_prompt


ENGINE_BACKENDS = ("vllm", "vllm_standin")  # generation in engine worker processes (spotlib.engine_pool)


def choose_backend(backend: str = "auto") -> str:
    if backend != "auto":
        return backend
    if torch.cuda.is_available():
        try:
            import vllm  # noqa: F401
            return "vllm"
        except ImportError:
            pass
    return "transformers"


def sample_seed(seed: int, key, index: int) -> int:
    """The seed of sample `index` of the item named `key`: a function of the item, never of its
    position in a list, batch or resumed remainder (so a resumed stage repeats an uninterrupted one)."""
    digest = hashlib.sha256(f"{seed}|{key}|{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF  # 31 bits: safe for every engine's seed type


def request_seeds(seed: int, keys: Sequence, n: int) -> list[list[int]]:
    return [[sample_seed(seed, key, j) for j in range(n)] for key in keys]


def generate(model, tokenizer, prompts: Sequence[str], *, n: int = 1, temperature: float = 0.7,
             top_p: float = 1.0, top_k: int = -1, max_new_tokens: int = 256, seed: int = 0,
             keys: Sequence | None = None, batch_size: int = 64, backend: str = "auto",
             progress: bool = True, with_finish_reasons: bool = False):
    """`n` completions for each user prompt (chat template applied here), decoded text.

    `model` is a loaded transformers model; for the engine backends (vllm, vllm_standin) an
    `EnginePool` (see `open_generator`), an in-process vLLM engine, or a model path (a pool is
    then started for this call only). Sample j of prompt i is drawn with its own seed,
    `sample_seed(seed, keys[i], j)`: pass the items' ids as `keys` so that results do not depend
    on the list's order, its batching or a resume point (default: the prompts' positions).
    temperature 0 means greedy decoding. `with_finish_reasons` (transformers backend): also
    each sample's finish reason as vLLM names it, "stop" (it wrote eos) or "length" (cut at
    `max_new_tokens`), grouped the same way: (texts, reasons).
    """
    backend = choose_backend(backend)
    keys = list(range(len(prompts))) if keys is None else list(keys)
    if len(keys) != len(prompts):
        raise ValueError(f"generate: {len(keys)} keys for {len(prompts)} prompts (expected one key per prompt)")
    seeds = request_seeds(seed, keys, n)
    if backend in ENGINE_BACKENDS:
        return _generate_engines(model, tokenizer, prompts, seeds, backend=backend, temperature=temperature,
                                 top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed,
                                 progress=progress)
    if backend != "transformers":
        raise ValueError(f"unknown generation backend {backend!r} (expected transformers, vllm or vllm_standin)")
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    jobs = [(i, j) for i in range(len(texts)) for j in range(n)]
    flat, reasons = generate_rows(model, tokenizer, [texts[i] for i, _ in jobs], [seeds[i][j] for i, j in jobs],
                                  temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size, progress=progress, with_finish_reasons=True)
    out: list[list[str]] = [[] for _ in texts]
    why: list[list[str]] = [[] for _ in texts]
    for (i, _), text, reason in zip(jobs, flat, reasons):
        out[i].append(text)
        why[i].append(reason)
    return (out, why) if with_finish_reasons else out


@contextmanager
def open_generator(backend: str, model_path, *, dtype=None, device: str = "auto", seed: int = 0,
                   log_dir=None, engine_options: dict | None = None):
    """(model, tokenizer) for `generate`, kept for a whole stage: a loaded transformers model, or
    a pool of engine workers (one per GPU, each building its engine once) shut down on exit.
    `engine_options`: the pool's devices and engine arguments (`spotlib.engine_settings.pool_options`)."""
    from spotlib.models import load_model, load_tokenizer

    backend = choose_backend(backend)
    if backend not in ENGINE_BACKENDS:
        model, tokenizer = load_model(model_path, dtype=dtype, device=device)
        try:
            yield model, tokenizer
        finally:
            del model
        return
    from spotlib.engine_pool import EnginePool

    with EnginePool(backend, str(model_path), seed=seed, log_dir=log_dir, **(engine_options or {})) as pool:
        yield pool, load_tokenizer(model_path)


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


def _generate_engines(model, tokenizer, prompts, seeds, *, backend, temperature, top_p, top_k, max_new_tokens,
                      seed, progress: bool = False) -> list[list[str]]:
    """One request per sample (n=1, its own seed), sent to a pool of engine workers or an in-process engine."""
    from spotlib.engine_pool import EnginePool, engine_generate

    texts = [chat_prompt(tokenizer, p) for p in prompts]
    jobs = [(i, j) for i in range(len(texts)) for j in range(len(seeds[i]))]
    settings = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_new_tokens)
    requests = [(texts[i], seeds[i][j]) for i, j in jobs]
    if isinstance(model, (str, os.PathLike)):  # a path: engines for this call only
        with EnginePool(backend, str(model), seed=seed) as pool:
            flat = pool.generate(requests, settings)
    elif isinstance(model, EnginePool):
        with tqdm(total=len(requests), desc="generate", disable=not progress, leave=False) as bar:
            flat = model.generate(requests, settings, on_progress=bar.update)
    else:  # an engine already built in this process (RL pushes weights into it)
        flat = engine_generate(model, backend, requests, settings)
    out: list[list[str]] = [[] for _ in texts]
    for (i, _), text in zip(jobs, flat):
        out[i].append(text)
    return out


_ENGINES: dict[str, object] = {}


def vllm_engine(model_path: str, seed: int = 0, memory_fraction: float | None = None):
    """A cached in-process vLLM engine (for RL, whose trainer pushes weights into it)."""
    if model_path not in _ENGINES:
        from vllm import LLM  # GPU extra, imported lazily

        _ENGINES.clear()
        fraction = memory_fraction or float(os.environ.get("SPOT_VLLM_MEM", "0.85"))
        _ENGINES[model_path] = LLM(model=model_path, seed=seed, dtype="bfloat16",
                                   gpu_memory_utilization=fraction)
    return _ENGINES[model_path]
