"""Summed completion log-probs, fast: the LM head runs on completion positions only.

log π(y|x) = Σ_{t ∈ completion} log p(y_t | x, y_<t)   (PAPER.md §2), in fp32.

The decoder runs on the whole sequence, but the vocabulary projection and the
log-softmax only where a completion token is predicted: the prompt's logits (often
most of the sequence, and [T, V] with V = 151k for Qwen) are never built. The result
equals `spotlib.tokens.sequence_logps`.
"""
from __future__ import annotations

import os

import contextlib
import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spotlib.io import shared_mode

from .data import Tokenized, collate


@functools.lru_cache(maxsize=None)
def cpu_bf16_is_fast() -> bool:
    """Whether this CPU multiplies in bf16 natively (AVX512-BF16/AMX): there autocast is ~2x
    faster; without it bf16 is emulated and ~10x *slower*. Linux: the CPU flags; elsewhere
    a timing (noisy on a busy machine)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(cpuinfo.read_text(errors="ignore").split())
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    a32 = torch.randn(192, 192)
    a16 = a32.to(torch.bfloat16)

    def best(a):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(4):
                a @ a
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a16) < 0.8 * best(a32)


def use_autocast(device: torch.device, wanted: bool) -> bool:
    """bf16 autocast where asked; on CPU only where it pays (see `cpu_bf16_is_fast`)."""
    if device.type == "cpu":
        return wanted and cpu_bf16_is_fast()
    return wanted


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast over fp32 weights (CPU: ~2x faster; GPU: tensor cores); a no-op when off."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass
class CompletionLogps:
    sums: torch.Tensor          # [B] summed completion log-probs, fp32
    counts: torch.Tensor        # [B] completion tokens
    token_logps: torch.Tensor   # [N] every completion token's log-prob, row-major
    rows: torch.Tensor          # [N] which row each token belongs to
    logits: torch.Tensor | None = None  # [N, V] when asked for


def _parts(model):
    inner = getattr(model, "module", model)  # DDP / DeepSpeed wrappers keep the model in .module
    return inner.get_decoder(), inner.get_output_embeddings()


def completion_logps(model, batch: dict[str, torch.Tensor], *, autocast: bool = False,
                     keep_logits: bool = False) -> CompletionLogps:
    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    target_mask = batch["completion_mask"][:, 1:].bool()
    decoder, head = _parts(model)
    with autocast_for(input_ids.device, autocast):
        hidden = decoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
        logits = head(hidden[:, :-1][target_mask])
    logits = logits.float()
    targets = input_ids[:, 1:][target_mask]
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(target_mask)[target_mask]
    sums = torch.zeros(input_ids.shape[0], device=input_ids.device, dtype=torch.float32)
    sums = sums.index_add(0, rows, token_logps)
    return CompletionLogps(sums, target_mask.sum(-1).float(), token_logps, rows,
                           logits if keep_logits else None)


@torch.no_grad()
def reference_sums(model, tok: Tokenized, pad_id: int, device: torch.device, *, batch_size: int = 32,
                   autocast: bool = False, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and token counts of every sequence, once (no grad)."""
    order = sorted(range(len(tok)), key=lambda i: len(tok.ids[i]))  # similar lengths pad little
    sums = torch.zeros(len(tok))
    counts = torch.zeros(len(tok))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(tok, rows, pad_id).items()}
        out = completion_logps(model, batch, autocast=autocast)
        sums[rows] = out.sums.cpu()
        counts[rows] = out.counts.cpu()
        if progress is not None:
            progress.update(len(rows))
    return sums, counts


def cache_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:20]


def cached(path: Path, compute):
    """torch.load(path) if present and readable, else compute(), saved atomically."""
    if path.is_file():
        try:
            return torch.load(path, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a torn or corrupt cache is recomputed, never trusted
            print(f"{path}: unreadable cache ({type(exc).__name__}), computing it again")
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel workers never share a temp file
    torch.save(value, tmp)
    os.chmod(tmp, shared_mode())
    tmp.replace(path)
    return value
