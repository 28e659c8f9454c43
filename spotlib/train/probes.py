"""What training does to the model away from its data: the measurements the paper lacks.

**Held-out KL (the tether, measured).** On fixed prompts from families that are *not*
trained (tiny: facts, format, arith_ood, `split="probe"`), the sequences are the
reference model's own greedy responses — where π_ref actually lives, so the KL says
how far the model has drifted on behaviour it already had. At every completion
position t the exact token-level

    KL_t = Σ_v π_θ(v | x, y<t) · (log π_θ(v | ·) − log π_ref(v | ·))

over the whole vocabulary; the probe reports the mean over positions (per family and
overall). The reference's log-distributions are computed once and cached.

**Where in y⁻ the objective pushes.** On fixed training pairs, the first span where
y⁻ differs from y⁺ (token-level diff) splits y⁻ into *before* (the shared prefix),
*at* (the first edited span) and *after*. The mean per-token change of
log π(y⁻_t) − log π_ref(y⁻_t) in each region separates "surgery" (down at the edit,
prefix untouched) from "pull-up" (the shared prefix of y⁻ raised by positive-only
training). The same pairs give every method's r⁺ and r⁻ on a common set.

**Where probability moves, on both sides.** y⁺ is split the same way (its shared prefix,
its side of the first edit, the rest), and `edit/chosen_*` report the same per-token change
there: a pair objective that lowers y⁻ at the edit may lower the shared prefix of both. At
the first edit the two responses share their context (x and the common prefix), so one
next-token distribution decides between them: `edit/p_correct` is the mean probability of
y⁺'s token there (the correction), `edit/p_wrong` that of y⁻'s (the error), each with its
reference value (`_ref`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from spotlib.proximity import first_edit_span  # noqa: F401 - read here by the edit diagnostic and its tests

from .data import Tokenized, collate, tokenize
from .logps import completion_logps

PROBE_FAMILIES = ("facts", "format", "arith_ood")


@dataclass
class ProbeSet:
    tok: Tokenized
    families: list[str]
    ref_logprobs: torch.Tensor   # [N_tokens, V] reference log-distributions at completion positions


@dataclass
class EditDiagSet:
    chosen: Tokenized
    rejected: Tokenized
    region: torch.Tensor             # [N_rejected_tokens] 0 before, 1 at, 2 after the first edit
    ref_rejected_tokens: torch.Tensor  # [N_rejected_tokens] reference log-probs on y⁻
    ref_chosen_sums: torch.Tensor    # [P]
    ref_rejected_sums: torch.Tensor  # [P]
    # Both sides (None in a set cached before they existed: those metrics are then left out).
    chosen_region: torch.Tensor | None = None      # [N_chosen_tokens] the same split of y⁺
    ref_chosen_tokens: torch.Tensor | None = None  # [N_chosen_tokens]
    first_chosen: torch.Tensor | None = None       # [P] flat index of y⁺'s token at the first edit (−1: none)
    first_rejected: torch.Tensor | None = None     # [P] flat index of y⁻'s token there (−1: none)
    # The pushed tokens where they are right (spotlib.train.collateral.CollateralSet; None: not measured).
    collateral: object | None = None


def probe_items(world_cfg, n_prompts: int, families=PROBE_FAMILIES) -> list[dict]:
    """n_prompts held-out items, split evenly over the probe families (world's probe split)."""
    from spotlib import world

    per = max(1, n_prompts // len(families))
    items = []
    for family in families:
        items += world.make_items(family, per, split="probe", world_cfg=world_cfg)
    return items


@torch.no_grad()
def build_probe_set(ref_model, tokenizer, items: list[dict], *, max_new_tokens: int, max_len: int,
                    max_prompt_len: int | None, device, autocast: bool, batch_size: int = 32) -> ProbeSet:
    from spotlib.engines.sampling import generate

    prompts = [it["prompt"] for it in items]
    responses = [r[0] for r in generate(ref_model, tokenizer, prompts, n=1, temperature=0.0,
                                        max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        backend="transformers", progress=False)]
    tok = tokenize(tokenizer, prompts, responses, max_len, max_prompt_len)
    ref = _distributions(ref_model, tok, tokenizer.pad_token_id, device, autocast, batch_size)
    return ProbeSet(tok, [it["family"] for it in items], ref)


def _distributions(model, tok: Tokenized, pad_id, device, autocast, batch_size) -> torch.Tensor:
    chunks = []
    for start in range(0, len(tok), batch_size):
        rows = list(range(start, min(start + batch_size, len(tok))))
        batch = {k: v.to(device) for k, v in collate(tok, rows, pad_id).items()}
        out = completion_logps(model, batch, autocast=autocast, keep_logits=True)
        chunks.append(F.log_softmax(out.logits, dim=-1).cpu())
    return torch.cat(chunks)


@torch.no_grad()
def probe_kl(model, probe: ProbeSet, pad_id: int, device, *, autocast: bool, batch_size: int = 32) -> dict:
    """Mean token-level KL(π_θ ‖ π_ref) on the probe sequences, overall and per family."""
    was_training = model.training
    model.eval()
    logq = probe.ref_logprobs
    per_token, rows_all, offset = [], [], 0
    for start in range(0, len(probe.tok), batch_size):
        rows = list(range(start, min(start + batch_size, len(probe.tok))))
        batch = {k: v.to(device) for k, v in collate(probe.tok, rows, pad_id).items()}
        out = completion_logps(model, batch, autocast=autocast, keep_logits=True)
        logp = F.log_softmax(out.logits, dim=-1).cpu()
        q = logq[offset: offset + logp.shape[0]]
        offset += logp.shape[0]
        per_token.append((logp.exp() * (logp - q)).sum(-1))
        rows_all.append(out.rows.cpu() + start)
    model.train(was_training)
    kl, rows = torch.cat(per_token), torch.cat(rows_all)
    family = [probe.families[int(r)] for r in rows]
    result = {"kl/probe": float(kl.mean())}
    for fam in sorted(set(probe.families)):
        mask = torch.tensor([f == fam for f in family])
        result[f"kl/{fam}"] = float(kl[mask].mean())
    return result


def _regions(n: int, start: int, stop: int) -> list[int]:
    return [0 if t < start else 1 if t < stop else 2 for t in range(n)]


def first_edit_regions(rejected_ids: list[int], chosen_ids: list[int]) -> list[int]:
    """0/1/2 per y⁻ completion token: before / inside / after the first span that differs from y⁺."""
    span = first_edit_span(rejected_ids, chosen_ids)
    return [0] * len(rejected_ids) if span is None else _regions(len(rejected_ids), span[0], span[1])


def chosen_edit_regions(rejected_ids: list[int], chosen_ids: list[int]) -> list[int]:
    """The same split of y⁺: its shared prefix (0), its side of the first edit (1), the rest (2)."""
    span = first_edit_span(rejected_ids, chosen_ids)
    return [0] * len(chosen_ids) if span is None else _regions(len(chosen_ids), span[2], span[3])


def diag_settings(train_cfg) -> dict:
    """How the edit diagnostic batches its passes: the LM head on `train.logits_chunk_tokens`
    completion tokens at a time (never a [N, V] logits tensor), and as many rows per pass as
    fit `train.ref_batch_tokens` at `train.max_len` (the reference pass's budget)."""
    return {"head_chunk": train_cfg.logits_chunk_tokens,
            "batch_size": max(1, train_cfg.ref_batch_tokens // max(train_cfg.max_len, 1))}


@torch.no_grad()
def build_edit_diag(ref_model, chosen: Tokenized, rejected: Tokenized, pad_id, device, *,
                    autocast: bool, batch_size: int = 32, head_chunk: int | None = 1024) -> EditDiagSet:
    regions, chosen_regions, first_pos, first_neg = [], [], [], []
    offset_neg = offset_pos = 0
    for i in range(len(rejected)):
        neg = rejected.ids[i][rejected.prompt_lens[i]:]
        pos = chosen.ids[i][chosen.prompt_lens[i]:]
        regions += first_edit_regions(neg, pos)
        chosen_regions += chosen_edit_regions(neg, pos)
        span = first_edit_span(neg, pos)
        # At the first edit both share the context; a side that ends there has no token to score.
        first_neg.append(offset_neg + span[0] if span and span[0] < len(neg) else -1)
        first_pos.append(offset_pos + span[2] if span and span[2] < len(pos) else -1)
        offset_neg, offset_pos = offset_neg + len(neg), offset_pos + len(pos)
    ref_tokens, ref_neg, _ = _token_logps(ref_model, rejected, pad_id, device, autocast, batch_size, head_chunk)
    ref_pos_tokens, ref_pos, _ = _token_logps(ref_model, chosen, pad_id, device, autocast, batch_size, head_chunk)
    return EditDiagSet(chosen, rejected, torch.tensor(regions), ref_tokens, ref_pos, ref_neg,
                       torch.tensor(chosen_regions), ref_pos_tokens, torch.tensor(first_pos), torch.tensor(first_neg))


def _token_logps(model, tok, pad_id, device, autocast, batch_size, head_chunk):
    tokens, sums, counts = [], [], []
    for start in range(0, len(tok), batch_size):
        rows = list(range(start, min(start + batch_size, len(tok))))
        batch = {k: v.to(device) for k, v in collate(tok, rows, pad_id).items()}
        out = completion_logps(model, batch, autocast=autocast, head_chunk=head_chunk)
        tokens.append(out.token_logps.cpu())
        sums.append(out.sums.cpu())
        counts.append(out.counts.cpu())
    return torch.cat(tokens), torch.cat(sums), torch.cat(counts)


@torch.no_grad()
def edit_diagnostic(model, diag: EditDiagSet, pad_id: int, device, *, beta: float, autocast: bool,
                    batch_size: int = 32, head_chunk: int | None = 1024) -> dict:
    was_training = model.training
    model.eval()
    neg_tokens, neg_sums, _ = _token_logps(model, diag.rejected, pad_id, device, autocast, batch_size, head_chunk)
    pos_tokens, pos_sums, _ = _token_logps(model, diag.chosen, pad_id, device, autocast, batch_size, head_chunk)
    model.train(was_training)
    result = _region_changes(neg_tokens - diag.ref_rejected_tokens, diag.region, "edit/")
    if diag.chosen_region is not None:
        result.update(_region_changes(pos_tokens - diag.ref_chosen_tokens, diag.chosen_region, "edit/chosen_"))
        for name, index, now, ref in (("correct", diag.first_chosen, pos_tokens, diag.ref_chosen_tokens),
                                      ("wrong", diag.first_rejected, neg_tokens, diag.ref_rejected_tokens)):
            kept = index[index >= 0]
            result[f"edit/p_{name}"] = float(now[kept].exp().mean()) if len(kept) else float("nan")
            result[f"edit/p_{name}_ref"] = float(ref[kept].exp().mean()) if len(kept) else float("nan")
    if getattr(diag, "collateral", None) is not None:
        from .collateral import collateral_probe
        result.update(collateral_probe(model, diag.collateral, pad_id, device, autocast=autocast,
                                       batch_size=batch_size))
    r_pos = beta * (pos_sums - diag.ref_chosen_sums)
    # (the token-level changes above are per token; the rewards below are β × whole-sequence sums)
    r_neg = beta * (neg_sums - diag.ref_rejected_sums)
    result.update({"fixed/rewards_chosen": float(r_pos.mean()), "fixed/rewards_rejected": float(r_neg.mean()),
                   "fixed/margins": float((r_pos - r_neg).mean())})
    return result


def _region_changes(change: torch.Tensor, region: torch.Tensor, prefix: str) -> dict:
    """Mean per-token log-prob change (policy − reference) before / at / after the first edit."""
    result = {}
    for code, name in enumerate(("before", "at", "after")):
        mask = region == code
        result[f"{prefix}{name}"] = float(change[mask].mean()) if mask.any() else float("nan")
    return result
