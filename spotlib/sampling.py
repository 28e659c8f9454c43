"""Generation behind one function: transformers `generate` on CPU, vLLM on GPUs.

vLLM is imported only on the GPU path: it pins its own torch and is never part of the
CPU environment.
"""
from __future__ import annotations

import os
from typing import Sequence

import torch
from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner

from spotlib.models import chat_prompt


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


def generate(model, tokenizer, prompts: Sequence[str], *, n: int = 1, temperature: float = 0.7,
             top_p: float = 1.0, top_k: int = -1, max_new_tokens: int = 256, seed: int = 0,
             batch_size: int = 64, backend: str = "auto", progress: bool = True) -> list[list[str]]:
    """`n` completions for each user prompt (chat template applied here), decoded text.

    `model` is a loaded transformers model; for vLLM, a path (one engine per GPU) or an engine.
    temperature 0 means greedy decoding.
    """
    backend = choose_backend(backend)
    if backend == "vllm":
        return _generate_vllm(model, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                              top_k=top_k, max_new_tokens=max_new_tokens, seed=seed)
    if backend != "transformers":
        raise ValueError(f"unknown generation backend {backend!r} (expected transformers or vllm)")
    return _generate_hf(model, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                        top_k=top_k, max_new_tokens=max_new_tokens, seed=seed,
                        batch_size=batch_size, progress=progress)


@torch.no_grad()
def _generate_hf(model, tokenizer, prompts, *, n, temperature, top_p, top_k, max_new_tokens, seed,
                 batch_size, progress) -> list[list[str]]:
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    # Each prompt repeated n times; sort by length so a batch pads little.
    jobs = [(i, j) for i in range(len(texts)) for j in range(n)]
    lengths = {i: len(tokenizer(t, add_special_tokens=False)["input_ids"]) for i, t in enumerate(texts)}
    jobs.sort(key=lambda job: (lengths[job[0]], job))
    out: list[list[str | None]] = [[None] * n for _ in texts]
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    sampling = temperature > 0
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=sampling,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if sampling:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k and top_k > 0 else 0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    try:
        bar = tqdm(total=len(jobs), desc="generate", disable=not progress, leave=False)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            enc = tokenizer([texts[i] for i, _ in chunk], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            # Seed per batch: results depend only on (seed, batch position), not on history.
            torch.manual_seed(seed * 1_000_003 + start)
            generated = model.generate(**enc, **kwargs)
            new_tokens = generated[:, enc["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for (i, j), text in zip(chunk, decoded):
                out[i][j] = text.strip()
            bar.update(len(chunk))
        bar.close()
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out  # type: ignore[return-value]


def _generate_vllm(model_path, tokenizer, prompts, *, n, temperature, top_p, top_k, max_new_tokens,
                   seed) -> list[list[str]]:
    """One vLLM engine per GPU (data parallel): each worker process sees one device."""
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    request = dict(n=n, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_new_tokens)
    if not isinstance(model_path, (str, os.PathLike)):  # an engine already built (RL pushes weights into it)
        from vllm import SamplingParams

        results = model_path.generate(texts, SamplingParams(seed=seed, **request))
        return [[c.text.strip() for c in r.outputs] for r in results]
    gpus = torch.cuda.device_count()
    if gpus <= 1:
        return _vllm_worker(str(model_path), texts, request, seed, None)
    import multiprocessing as mp

    shards = [list(range(g, len(texts), gpus)) for g in range(gpus)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(gpus) as pool:
        parts = pool.starmap(_vllm_worker, [(str(model_path), [texts[i] for i in idx], request,
                                             seed + g, str(g)) for g, idx in enumerate(shards)])
    out: list[list[str]] = [[] for _ in texts]
    for idx, part in zip(shards, parts):
        for i, completions in zip(idx, part):
            out[i] = completions
    return out


def _vllm_worker(model_path: str, texts: list[str], request: dict, seed: int,
                 device: str | None) -> list[list[str]]:
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    from vllm import LLM, SamplingParams  # GPU extra, imported lazily

    engine = LLM(model=model_path, seed=seed, dtype="bfloat16",
                 gpu_memory_utilization=float(os.environ.get("SPOT_VLLM_MEM", "0.85")))
    results = engine.generate(texts, SamplingParams(seed=seed, **request))
    return [[c.text.strip() for c in r.outputs] for r in results]


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
