"""Generation behind one function: transformers `generate` on CPU, vLLM on GPUs.

vLLM runs in engine worker processes (`spotlib.engines.pool`, one per GPU) and is imported
only there: it pins its own torch and is never part of the CPU environment. Every sample
has its own seed derived from its item (`sample_seed`), in both paths.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from typing import Sequence

import torch

from spotlib.engines.rows import generate_rows
from spotlib.models import chat_prompt
from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner


ENGINE_BACKENDS = ("vllm", "vllm_standin")  # generation in engine worker processes (spotlib.engines.pool)


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
    `engine_options`: the pool's devices and engine arguments (`spotlib.engines.settings.pool_options`)."""
    from spotlib.models import load_model, load_tokenizer

    backend = choose_backend(backend)
    if backend not in ENGINE_BACKENDS:
        model, tokenizer = load_model(model_path, dtype=dtype, device=device)
        try:
            yield model, tokenizer
        finally:
            del model
        return
    from spotlib.engines.pool import EnginePool

    with EnginePool(backend, str(model_path), seed=seed, log_dir=log_dir, **(engine_options or {})) as pool:
        yield pool, load_tokenizer(model_path)


def _generate_engines(model, tokenizer, prompts, seeds, *, backend, temperature, top_p, top_k, max_new_tokens,
                      seed, progress: bool = False) -> list[list[str]]:
    """One request per sample (n=1, its own seed), sent to a pool of engine workers or an in-process engine."""
    from spotlib.engines.pool import EnginePool, engine_generate

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
