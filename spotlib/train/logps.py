"""Summed completion log-probs, fast: the LM head runs on completion positions only.

log π(y|x) = Σ_{t ∈ completion} log p(y_t | x, y_<t)   (docs/method.md), in fp32.

The decoder runs on the whole sequence, but the vocabulary projection and the
log-softmax only where a completion token is predicted: the prompt's logits (often
most of the sequence, and [T, V] with V = 151k for Qwen) are never built. The result
equals `spotlib.tokens.sequence_logps`.
"""
from __future__ import annotations

import os

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from spotlib.io import shared_mode
from spotlib.losses import token_kl
from spotlib.precision import autocast_for

from .data import Tokenized, collate


@dataclass
class CompletionLogps:
    sums: torch.Tensor          # [B] summed completion log-probs, fp32
    counts: torch.Tensor        # [B] completion tokens
    token_logps: torch.Tensor   # [N] every completion token's log-prob, row-major
    rows: torch.Tensor          # [N] which row each token belongs to
    logits: torch.Tensor | None = None  # [N, V] when asked for
    token_kl: torch.Tensor | None = None  # [N] KL(π ‖ π_ref) per completion token, when a reference is given


class CompletionLogpsModel(torch.nn.Module):
    """The causal LM (`.lm`) whose forward returns completion log-probs.

    The trainer hands this module to `accelerator.prepare`, so the forward that produces
    the loss goes through the DDP / DeepSpeed wrapper (`model(...)`): DDP prepares its
    gradient all-reduce and ZeRO-2's hooks run, while the LM head still runs on completion
    positions only, `head_chunk` of them at a time. Returns a tuple (wrappers pass tuples of
    tensors through as they are).
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids=None, attention_mask=None, completion_mask=None, autocast: bool = False,
                keep_logits: bool = False, head_chunk: int | None = None, reference=None, layout=None):
        if layout is not None:
            out = layout_logps(self.lm, layout, autocast=autocast, head_chunk=head_chunk, reference=reference)
        else:
            out = _completion_logps(self.lm, input_ids, attention_mask, completion_mask, autocast=autocast,
                                    keep_logits=keep_logits, head_chunk=head_chunk, reference=reference)
        return out.sums, out.counts, out.token_logps, out.rows, out.logits, out.token_kl


def completion_logps(model, batch: dict[str, torch.Tensor], *, autocast: bool = False,
                     keep_logits: bool = False, head_chunk: int | None = None,
                     reference=None) -> CompletionLogps:
    """Summed completion log-probs of `batch` under `model`: a plain causal LM, or a
    `CompletionLogpsModel`, bare or inside a DDP / DeepSpeed wrapper (then called through it).

    `head_chunk`: the LM head and log-softmax run on that many completion tokens at a time,
    so at most [head_chunk, V] logits exist at once; with gradients each chunk runs under
    `torch.utils.checkpoint` (its logits are rebuilt in backward), so one chunk's logits and
    their gradient are alive at a time. Same values and gradients as one chunk.
    `reference` (a causal LM, no grad): also each completion token's KL(π ‖ π_ref) over the
    whole vocabulary, by the same chunks (`token_kl`).
    `batch` may also be a `spotlib.train.packing.Layout` (padded or packed, on the device)."""
    if not isinstance(batch, dict):  # a packing.Layout
        if isinstance(getattr(model, "module", model), CompletionLogpsModel):
            return CompletionLogps(*model(autocast=autocast, head_chunk=head_chunk, reference=reference,
                                          layout=batch))
        return layout_logps(model, batch, autocast=autocast, head_chunk=head_chunk, reference=reference)
    if isinstance(getattr(model, "module", model), CompletionLogpsModel):
        return CompletionLogps(*model(batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                      autocast=autocast, keep_logits=keep_logits, head_chunk=head_chunk,
                                      reference=reference))
    return _completion_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                             autocast=autocast, keep_logits=keep_logits, head_chunk=head_chunk, reference=reference)


def _completion_logps(lm, input_ids, attention, completion_mask, *, autocast: bool, keep_logits: bool,
                      head_chunk: int | None = None, reference=None) -> CompletionLogps:
    if keep_logits and head_chunk is not None:
        raise ValueError("keep_logits and head_chunk exclude each other")
    if head_chunk is not None and head_chunk < 1:
        raise ValueError(f"head_chunk (train.logits_chunk_tokens): expected a positive integer, got {head_chunk}")
    target_mask = completion_mask[:, 1:].bool()
    targets = input_ids[:, 1:][target_mask]
    ref_hidden = ref_head = None
    with autocast_for(input_ids.device, autocast):
        if reference is not None:  # first, so its activations are gone before the policy's are kept
            with torch.no_grad():
                ref_hidden = _completion_hidden(reference, input_ids, attention, target_mask)
            ref_head = reference.get_output_embeddings()
        hidden = _completion_hidden(lm, input_ids, attention, target_mask)
        head = lm.get_output_embeddings()
        if keep_logits:
            logits = head(hidden).float()
            token_logps, token_kl = _chunk_logps(head, ref_head, hidden, ref_hidden, targets, logits=logits)
        else:
            logits = None
            token_logps, token_kl = _head_by_chunks(head, ref_head, hidden, ref_hidden, targets, head_chunk)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(target_mask)[target_mask]
    sums = torch.zeros(input_ids.shape[0], device=input_ids.device, dtype=torch.float32)
    sums = sums.index_add(0, rows, token_logps)
    return CompletionLogps(sums, target_mask.sum(-1).float(), token_logps, rows, logits, token_kl)


def _head_by_chunks(head, ref_head, hidden, ref_hidden, targets, head_chunk):
    """Token log-probs (and KL) of `hidden`'s rows, `head_chunk` rows at a time."""
    step = head_chunk or max(hidden.shape[0], 1)
    # Several chunks under grad: keep only each chunk's hidden states, its logits are rebuilt in
    # backward. One chunk: its logits are alive at the start of backward either way, so it is
    # not recomputed (the same peak, one LM-head forward less).
    rebuild = torch.is_grad_enabled() and hidden.shape[0] > step
    parts = []
    for i in range(0, max(hidden.shape[0], 1), step):  # no completion token: one empty chunk
        chunk = (head, ref_head, hidden[i:i + step], None if ref_hidden is None else ref_hidden[i:i + step],
                 targets[i:i + step])
        parts.append(checkpoint(_chunk_logps, *chunk, use_reentrant=False) if rebuild else _chunk_logps(*chunk))
    token_logps = torch.cat([p[0] for p in parts])
    token_kl = torch.cat([p[1] for p in parts]) if ref_head is not None else None
    return token_logps, token_kl


def layout_logps(lm, layout, *, autocast: bool = False, head_chunk: int | None = None,
                 reference=None) -> CompletionLogps:
    """Summed log-probs of a `spotlib.train.packing.Layout` (padded or packed) already on the device.

    The scored positions come from the layout's host-built index (`select`), so nothing here
    reads a device tensor: no host sync. Same values as `completion_logps` on the padded batch."""
    if head_chunk is not None and head_chunk < 1:
        raise ValueError(f"head_chunk (train.logits_chunk_tokens): expected a positive integer, got {head_chunk}")
    kwargs = layout.model_kwargs()
    ref_hidden = ref_head = None
    with autocast_for(layout.input_ids.device, autocast):
        if reference is not None:  # first, so its activations are gone before the policy's are kept
            with torch.no_grad():
                ref_hidden = _selected_hidden(reference, layout, kwargs)
            ref_head = reference.get_output_embeddings()
        hidden = _selected_hidden(lm, layout, kwargs)
        token_logps, token_kl = _head_by_chunks(lm.get_output_embeddings(), ref_head, hidden, ref_hidden,
                                                layout.targets, head_chunk)
    sums = torch.zeros(layout.num_sequences, device=token_logps.device, dtype=torch.float32)
    sums = sums.index_add(0, layout.rows, token_logps)
    return CompletionLogps(sums, layout.counts, token_logps, layout.rows, None, token_kl)


def _selected_hidden(lm, layout, kwargs) -> torch.Tensor:
    """The decoder's last hidden states at the layout's scored positions: [N, h]."""
    from .packing import VARLEN

    if layout.segments is not None and lm.config._attn_implementation != VARLEN:
        raise ValueError(f"a packed batch needs attention by segments: call spotlib.train.packing.use_varlen "
                         f"on the model (its attention is {lm.config._attn_implementation!r})")
    hidden = lm.get_decoder()(input_ids=layout.input_ids, use_cache=False, **kwargs).last_hidden_state
    return hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, layout.select)


def _completion_hidden(lm, input_ids, attention, target_mask) -> torch.Tensor:
    """The decoder's last hidden states at the positions that predict a completion token: [N, h]."""
    # use_cache=False: a scoring pass never reads a KV cache; building one holds every layer's
    # keys and values until the pass returns (about 45 MB of the tiny reference pass's peak RSS)
    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention, use_cache=False).last_hidden_state
    return hidden[:, :-1][target_mask]


def _chunk_logps(head, ref_head, hidden, ref_hidden, targets, logits=None):
    """log p(target) of one chunk of positions (fp32) and, with a reference, each position's
    KL(π ‖ π_ref) over the vocabulary (`spotlib.losses.token_kl`, every position a row)."""
    logits = head(hidden).float() if logits is None else logits
    token_logps = _token_logps(logits, targets)
    if ref_head is None:
        return token_logps, None
    with torch.no_grad():
        ref_logits = ref_head(ref_hidden)
    ones = torch.ones(logits.shape[0], 1, device=logits.device)
    return token_logps, token_kl(logits.unsqueeze(1), ref_logits.unsqueeze(1), ones)


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_budget_batches(tok: Tokenized, rows: list[int], max_tokens: int) -> list[list[int]]:
    """`rows` sorted by length, cut into batches of at most `max_tokens` padded tokens
    (rows × longest row); a row longer than the budget goes alone."""
    batches, current, longest = [], [], 0
    for i in sorted(rows, key=lambda i: (len(tok.ids[i]), i)):
        width = max(longest, len(tok.ids[i]))
        if current and width * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, width = [], len(tok.ids[i])
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def reference_sums(model, tok: Tokenized, pad_id: int, device: torch.device, *, max_tokens: int = 16384,
                   autocast: bool = False, progress=None, head_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and token counts of every sequence, once (no grad).

    Batches hold at most `max_tokens` padded tokens; the LM head runs `head_chunk` tokens at
    a time, so no batch's full logits exist. Under torch.distributed each process scores
    every P-th batch and a sum over processes gives every process all N results; each row is
    scored by exactly one process (checked), however N divides.
    """
    import torch.distributed as dist

    if max_tokens < 1 or head_chunk < 1:
        raise ValueError(f"reference_sums: max_tokens and head_chunk must be positive, got {max_tokens}, {head_chunk}")
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    batches = token_budget_batches(tok, list(range(len(tok))), max_tokens)
    # sums, counts, times scored: one row of three per sequence, summed over processes
    table = torch.zeros(len(tok), 3, dtype=torch.float64)
    for b, rows in enumerate(batches):
        if b % world == rank:
            batch = {k: v.to(device) for k, v in collate(tok, rows, pad_id).items()}
            out = completion_logps(model, batch, autocast=autocast, head_chunk=head_chunk)
            table[rows, 0] = out.sums.double().cpu()
            table[rows, 1] = out.counts.double().cpu()
            table[rows, 2] = 1.0
        if progress is not None:
            progress.update(len(rows))
    if distributed:
        backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        gathered = table.to(backend_device)
        dist.all_reduce(gathered, op=dist.ReduceOp.SUM)
        table = gathered.cpu()
    if not torch.all(table[:, 2] == 1):
        raise RuntimeError(f"reference log-probs: rows scored {sorted(set(table[:, 2].tolist()))} times, expected once")
    return table[:, 0].float(), table[:, 1].float()


def cache_key(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:20]


def load_cache(path: Path) -> tuple[bool, object]:
    """(True, value) when `path` holds a readable cache; (False, None) when absent, torn or corrupt."""
    if not path.is_file():
        return False, None
    try:
        return True, torch.load(path, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - a torn or corrupt cache is recomputed, never trusted
        print(f"{path}: unreadable cache ({type(exc).__name__}), computing it again")
        return False, None


def cached(path: Path, compute):
    """torch.load(path) if present and readable, else compute(), saved atomically."""
    found, value = load_cache(path)
    if found:
        return value
    value = compute()
    save_cache(path, value)
    return value


def save_cache(path: Path, value) -> None:
    """torch.save atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel workers never share a temp file
    torch.save(value, tmp)
    os.chmod(tmp, shared_mode())
    tmp.replace(path)
