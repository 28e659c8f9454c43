"""Collateral damage of the push at the edit, measured: the pushed tokens where they are right.

A pair objective lowers log π(y⁻) at its first edit, where y⁻'s tokens are wrong (in the tiny
world mostly digits of a slipped result). The same tokens are right in countless other places:
the digits of correct results. Do they go down there too? On held-out arithmetic the start model
solved correctly (its own greedy solutions, teacher-forced), every completion position whose
target is one of the *pushed* tokens (those of y⁻'s first edited span on the edit diagnostic's
training pairs) is scored now and under π_ref:

    collateral/pushed   mean log π(t) − log π_ref(t) over positions whose target t was pushed
    collateral/other    the same over every other completion position (the contrast)
    collateral/p_pushed mean π(t) there (and `_ref`: π_ref's)

A pushed-token change well below the other tokens' says the edit-local push reaches correct
computation elsewhere (the route tied input and output embeddings open is one way; the shared
output head is another).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import Tokenized, collate
from .logps import completion_logps
from spotlib.proximity import first_edit_span


@dataclass
class CollateralSet:
    tok: Tokenized                 # held-out prompts and correct completions, teacher-forced
    pushed: torch.Tensor           # [N_tokens] bool: this completion position's target is a pushed token
    ref_tokens: torch.Tensor       # [N_tokens] reference log-probs of the targets
    pushed_ids: list[int]


def pushed_token_ids(rejected: Tokenized, chosen: Tokenized) -> list[int]:
    """The distinct token ids of y⁻'s first edited span (against y⁺), over the pairs."""
    ids: set[int] = set()
    for i in range(len(rejected)):
        neg = rejected.ids[i][rejected.prompt_lens[i]:]
        pos = chosen.ids[i][chosen.prompt_lens[i]:]
        span = first_edit_span(neg, pos)
        if span is not None:
            ids.update(neg[span[0]:span[1]])
    return sorted(ids)


def _targets(tok: Tokenized) -> list[int]:
    """The completion targets in the order `completion_logps` returns them (row by row)."""
    return [t for ids, start in zip(tok.ids, tok.prompt_lens) for t in ids[start:]]


def _token_logps(model, tok: Tokenized, pad_id: int, device, autocast: bool, batch_size: int) -> torch.Tensor:
    out = []
    for start in range(0, len(tok), batch_size):
        rows = list(range(start, min(start + batch_size, len(tok))))
        batch = {k: v.to(device) for k, v in collate(tok, rows, pad_id).items()}
        out.append(completion_logps(model, batch, autocast=autocast).token_logps.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def build_collateral_set(ref_model, tok: Tokenized, pushed_ids: list[int], pad_id: int, device, *,
                         autocast: bool, batch_size: int = 32) -> CollateralSet:
    pushed = torch.tensor([t in set(pushed_ids) for t in _targets(tok)], dtype=torch.bool)
    ref = _token_logps(ref_model, tok, pad_id, device, autocast, batch_size)
    if ref.shape != pushed.shape:
        raise ValueError(f"collateral set: {ref.shape[0]} scored tokens for {pushed.shape[0]} targets")
    return CollateralSet(tok, pushed, ref, list(pushed_ids))


@torch.no_grad()
def collateral_probe(model, cset: CollateralSet, pad_id: int, device, *, autocast: bool,
                     batch_size: int = 32) -> dict:
    was_training = model.training
    model.eval()
    now = _token_logps(model, cset.tok, pad_id, device, autocast, batch_size)
    model.train(was_training)
    change = now - cset.ref_tokens
    nan = float("nan")
    pushed, other = cset.pushed, ~cset.pushed
    return {"collateral/pushed": float(change[pushed].mean()) if pushed.any() else nan,
            "collateral/other": float(change[other].mean()) if other.any() else nan,
            "collateral/p_pushed": float(now[pushed].exp().mean()) if pushed.any() else nan,
            "collateral/p_pushed_ref": float(cset.ref_tokens[pushed].exp().mean()) if pushed.any() else nan,
            "collateral/n_pushed": int(pushed.sum())}


@torch.no_grad()
def correct_heldout(ref_model, tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int = 32
                    ) -> tuple[list[str], list[str]]:
    """(prompts, completions): the start model's greedy solutions of `items` that its grader scores right."""
    from spotlib import world
    from spotlib.engines.sampling import generate

    prompts = [it["prompt"] for it in items]
    responses = [r[0] for r in generate(ref_model, tokenizer, prompts, n=1, temperature=0.0,
                                        max_new_tokens=max_new_tokens, batch_size=batch_size,
                                        backend="transformers", progress=False)]
    kept = [(it["prompt"], r) for it, r in zip(items, responses) if world.score(it, r)]
    return [p for p, _ in kept], [r for _, r in kept]
