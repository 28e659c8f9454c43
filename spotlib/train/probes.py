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
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
    from spotlib.sampling import generate

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


def first_edit_regions(rejected_ids: list[int], chosen_ids: list[int]) -> list[int]:
    """0/1/2 per y⁻ completion token: before / inside / after the first span that differs from y⁺."""
    ops = difflib.SequenceMatcher(None, rejected_ids, chosen_ids, autojunk=False).get_opcodes()
    first = next((op for op in ops if op[0] != "equal"), None)
    if first is None:
        return [0] * len(rejected_ids)
    _, i1, i2, _, _ = first
    return [0 if t < i1 else 1 if t < i2 else 2 for t in range(len(rejected_ids))]


@torch.no_grad()
def build_edit_diag(ref_model, chosen: Tokenized, rejected: Tokenized, pad_id, device, *,
                    autocast: bool, batch_size: int = 32) -> EditDiagSet:
    regions = []
    for i in range(len(rejected)):
        neg = rejected.ids[i][rejected.prompt_lens[i]:]
        pos = chosen.ids[i][chosen.prompt_lens[i]:]
        regions += first_edit_regions(neg, pos)
    ref_tokens, ref_neg, _ = _token_logps(ref_model, rejected, pad_id, device, autocast, batch_size)
    _, ref_pos, _ = _token_logps(ref_model, chosen, pad_id, device, autocast, batch_size)
    return EditDiagSet(chosen, rejected, torch.tensor(regions), ref_tokens, ref_pos, ref_neg)


def _token_logps(model, tok, pad_id, device, autocast, batch_size):
    tokens, sums, counts = [], [], []
    for start in range(0, len(tok), batch_size):
        rows = list(range(start, min(start + batch_size, len(tok))))
        batch = {k: v.to(device) for k, v in collate(tok, rows, pad_id).items()}
        out = completion_logps(model, batch, autocast=autocast)
        tokens.append(out.token_logps.cpu())
        sums.append(out.sums.cpu())
        counts.append(out.counts.cpu())
    return torch.cat(tokens), torch.cat(sums), torch.cat(counts)


@torch.no_grad()
def edit_diagnostic(model, diag: EditDiagSet, pad_id: int, device, *, beta: float, autocast: bool,
                    batch_size: int = 32) -> dict:
    was_training = model.training
    model.eval()
    neg_tokens, neg_sums, _ = _token_logps(model, diag.rejected, pad_id, device, autocast, batch_size)
    _, pos_sums, _ = _token_logps(model, diag.chosen, pad_id, device, autocast, batch_size)
    model.train(was_training)
    change = neg_tokens - diag.ref_rejected_tokens
    result = {}
    for code, name in enumerate(("before", "at", "after")):
        mask = diag.region == code
        result[f"edit/{name}"] = float(change[mask].mean()) if mask.any() else float("nan")
    r_pos = beta * (pos_sums - diag.ref_chosen_sums)
    r_neg = beta * (neg_sums - diag.ref_rejected_sums)
    result.update({"fixed/rewards_chosen": float(r_pos.mean()), "fixed/rewards_rejected": float(r_neg.mean()),
                   "fixed/margins": float((r_pos - r_neg).mean())})
    return result
