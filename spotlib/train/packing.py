"""Padding-free micro-batches: a micro-batch's sequences end to end in one row.

A packed row holds every sequence of the micro-batch (for pair objectives the chosen ones,
then the rejected ones), each with its own position ids (0, 1, …, from its first token) and
its own causal attention: attention runs per sequence (`varlen_attention`), so no token
attends across a boundary and no position is padding. The decoder's other layers act per
token, so every sequence's hidden states, log-probs, their sums and gradients equal the
padded batch's (tests/test_packing.py, fp32).

Both layouts come with the LM head's gather built on the host (`Layout.select`, `targets`,
`rows`, `counts`): the trainer never reads a device tensor to find completion positions (a
boolean-mask index is a host sync on a GPU).

Attention: the model's attention implementation becomes `spot_varlen` (registered with
transformers' `AttentionInterface`): with segment lengths in the call (`spot_segments`) it
runs causal attention segment by segment — torch's flash `varlen_attn` on a GPU in bf16/fp16
where this torch has it, else SDPA per segment — and without them it is plain SDPA (probes,
reference passes, generation see the model unchanged).
"""
from __future__ import annotations

import inspect
import itertools
import warnings
from dataclasses import dataclass

import torch

from .data import Tokenized, collate

VARLEN = "spot_varlen"
_FLASH_FAILED: list[str] = []   # why torch's flash varlen kernel could not run here (then: SDPA per segment)


@dataclass
class Layout:
    """One micro-batch ready for the model, and where its scored tokens are.

    `select` indexes the flattened [rows × (width − 1)] positions that predict a scored token,
    `targets` those tokens, `rows` their sequence (0 … num_sequences − 1, in the order the
    sequences were given), `counts` each sequence's scored tokens."""
    input_ids: torch.Tensor            # [R, W]
    attention_mask: torch.Tensor | None  # [R, W] padded; None packed
    position_ids: torch.Tensor | None  # [1, W] packed
    select: torch.Tensor               # [N]
    targets: torch.Tensor              # [N]
    rows: torch.Tensor                 # [N]
    counts: torch.Tensor               # [S] float
    segments: tuple[int, ...] | None   # packed: each sequence's length, in row order
    tokens_real: int                   # the sequences' tokens (prompt + completion)
    tokens_computed: int               # positions the model runs, padding included

    @property
    def num_sequences(self) -> int:
        return int(self.counts.shape[0])

    def to(self, device) -> "Layout":
        moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return Layout(**moved)

    def model_kwargs(self) -> dict:
        """What the decoder is called with besides `input_ids`."""
        if self.segments is None:
            return {"attention_mask": self.attention_mask}
        # A dict of masks skips transformers' mask building (no [W, W] mask, no packed-sequence
        # detection, which reads the device): attention is per segment.
        return {"attention_mask": {"full_attention": None, "sliding_attention": None},
                "position_ids": self.position_ids, "spot_segments": self.segments,
                "spot_cu_seqlens": _cu_seqlens(self.segments, self.input_ids.device)}


def _cu_seqlens(segments, device) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(segments)], dtype=torch.int32).to(device, non_blocking=True)


def _gather_index(completion: torch.Tensor, input_ids: torch.Tensor, row_of_position: torch.Tensor):
    """(select, targets, rows) of the positions that predict a scored token, on the host."""
    target_mask = completion[:, 1:].bool()
    select = target_mask.reshape(-1).nonzero().squeeze(-1)
    targets = input_ids[:, 1:].reshape(-1)[select]
    rows = row_of_position[:, 1:].reshape(-1)[select]
    return select, targets, rows


def padded_layout(parts: list[tuple[Tokenized, list[int]]], pad_id: int) -> Layout:
    """The sequences right-padded to the longest of all parts, one per row (chosen, then rejected)."""
    batches = [collate(tok, rows, pad_id) for tok, rows in parts]
    width = max(b["input_ids"].shape[1] for b in batches)
    batch = {k: torch.cat([_pad(b[k], width, pad_id if k == "input_ids" else 0) for b in batches])
             for k in batches[0]}
    n = batch["input_ids"].shape[0]
    row_of_position = torch.arange(n).unsqueeze(1).expand(n, width)
    select, targets, rows = _gather_index(batch["completion_mask"], batch["input_ids"], row_of_position)
    counts = batch["completion_mask"][:, 1:].sum(-1).float()
    return Layout(batch["input_ids"], batch["attention_mask"], None, select, targets, rows, counts, None,
                  tokens_real=int(batch["attention_mask"].sum()), tokens_computed=n * width)


def packed_layout(parts: list[tuple[Tokenized, list[int]]], pad_id: int) -> Layout:
    """The same sequences end to end in one row, position ids restarting at each."""
    ids, positions, completion, seq_of = [], [], [], []
    segments = []
    for tok, rows in parts:
        for i in rows:
            seq = tok.ids[i]
            start = tok.prompt_lens[i]
            if start < 1:  # the first token of a sequence is never a target: nothing predicts it
                raise ValueError(f"packing: sequence {i} has no prompt token; every sequence needs one")
            scored = [0] * start + (list(tok.score_masks[i]) if tok.score_masks is not None
                                    else [1] * (len(seq) - start))
            ids.extend(seq)
            positions.extend(range(len(seq)))
            completion.extend(scored)
            seq_of.extend([len(segments)] * len(seq))
            segments.append(len(seq))
    input_ids = torch.tensor([ids], dtype=torch.long)
    completion_mask = torch.tensor([completion], dtype=torch.long)
    # The last token of one sequence "predicts" the next sequence's first token: a prompt token,
    # never scored, so the shifted completion mask keeps every target inside its own sequence.
    select, targets, rows = _gather_index(completion_mask, input_ids, torch.tensor([seq_of]))
    counts = torch.zeros(len(segments)).index_add_(0, rows, torch.ones(rows.shape[0]))
    total = len(ids)
    return Layout(input_ids, None, torch.tensor([positions], dtype=torch.long), select, targets, rows, counts,
                  tuple(segments), tokens_real=total, tokens_computed=total)


def layout(parts: list[tuple[Tokenized, list[int]]], pad_id: int, packing: bool) -> Layout:
    return packed_layout(parts, pad_id) if packing else padded_layout(parts, pad_id)


def _pad(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return x if x.shape[1] == width else torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


# ---------------------------------------------------------------- attention by segments

def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     spot_segments=None, spot_cu_seqlens=None, **kwargs):
    """Causal attention within each segment of a packed row; plain SDPA without segments.

    query [1, H, T, d], key/value [1, H_kv, T, d] (transformers' layout); returns [1, T, H, d]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if spot_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"packed attention: expected one row, got {query.shape[0]}")
    flash = None
    if not _FLASH_FAILED:
        try:
            flash = _flash_varlen(query, key, value, spot_segments, spot_cu_seqlens, scaling)
        except (RuntimeError, TypeError, ValueError) as exc:  # a GPU or build without the kernel: SDPA by segments
            _FLASH_FAILED.append(repr(exc))
            warnings.warn(f"packed attention: torch's varlen_attn failed ({exc!r}); SDPA per segment from now on")
    if flash is not None:
        return flash, None
    groups = query.shape[1] // key.shape[1]
    outputs, start = [], 0
    for length in spot_segments:
        end = start + length
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        outputs.append(torch.nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout if module.training else 0.0, scale=scaling, is_causal=length > 1,
            enable_gqa=groups > 1))
        start = end
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _flash_varlen(query, key, value, segments, cu_seqlens, scaling):
    """torch's flash varlen kernel where it applies (CUDA, bf16/fp16, this torch has it), else None."""
    if not query.is_cuda or query.dtype not in (torch.bfloat16, torch.float16) or cu_seqlens is None:
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    q = query[0].transpose(0, 1)   # [T, H, d]
    k, v = key[0].transpose(0, 1), value[0].transpose(0, 1)
    if k.shape[1] != q.shape[1]:   # grouped-query attention: repeat the kv heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    longest = max(segments)
    # causal: window_size (-1, 0) in newer torch, is_causal in the first releases of varlen_attn
    causal = {"window_size": (-1, 0)} if "window_size" in inspect.signature(varlen_attn).parameters \
        else {"is_causal": True}
    out = varlen_attn(q, k, v, cu_seqlens, cu_seqlens, longest, longest, scale=scaling, **causal)
    return out.unsqueeze(0)       # [1, T, H, d]


def register() -> None:
    """Make `spot_varlen` known to transformers (attention and mask functions)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(VARLEN, sdpa_mask)


def use_varlen(lm) -> None:
    """Let `lm` (a causal LM) take packed rows; unpacked calls behave as SDPA."""
    register()
    lm.set_attn_implementation(VARLEN)
