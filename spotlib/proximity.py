"""How close is a rectified answer y⁺ to the student's own wrong answer y⁻?

Change ratio:   R = 1 − |LCS(y⁻, y⁺)| / |y⁺|
with LCS the longest common subsequence over units — the student's tokens by default,
characters as an option. R = 0: y⁺ only adds nothing and keeps all of y⁻'s units in
order; R = 1: nothing of y⁻ survives. The filter keeps pairs with R ≤ γ (γ = 0.6).
LCS and the token edit distance (Levenshtein) come from rapidfuzz, which runs on
sequences of hashables (token ids) in C rather than a Python loop.
"""
from __future__ import annotations

import difflib
import html
import math
import re
from typing import Sequence

from rapidfuzz.distance import LCSseq, Levenshtein

UNITS = ("tokens", "chars")


def to_units(text: str, unit: str = "tokens", tokenizer=None) -> list:
    """The sequence R is computed over: token ids (needs the student's tokenizer) or characters."""
    if unit == "chars":
        return list(text)
    if unit != "tokens":
        raise ValueError(f"unknown unit {unit!r} (expected one of {', '.join(UNITS)})")
    if tokenizer is None:
        raise ValueError("unit 'tokens' needs the student's tokenizer")
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def lcs_length(a: Sequence, b: Sequence) -> int:
    return int(LCSseq.similarity(a, b))


def change_ratio(y_minus: Sequence, y_plus: Sequence) -> float:
    """R = 1 − |LCS(y⁻, y⁺)| / |y⁺| (0.0 when both are empty, 1.0 when only y⁺ is empty is impossible)."""
    if len(y_plus) == 0:
        return 0.0 if len(y_minus) == 0 else 1.0
    return 1.0 - lcs_length(y_minus, y_plus) / len(y_plus)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: insertions, deletions and substitutions of units."""
    return int(Levenshtein.distance(a, b))


def keep(ratio: float, gamma: float) -> bool:
    return ratio <= gamma


def kept_by_gamma(ratios: Sequence[float], gammas: Sequence[float]) -> dict[str, int]:
    return {f"{g:.2f}": sum(r <= g + 1e-12 for r in ratios) for g in gammas}


def summary(values: Sequence[float]) -> dict:
    """Mean, median and deciles of a list of numbers (None when empty)."""
    if not values:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None}
    xs = sorted(values)

    def q(p: float) -> float:
        pos = p * (len(xs) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return {"n": len(xs), "mean": sum(xs) / len(xs), "median": q(0.5), "p10": q(0.1), "p90": q(0.9)}


_NUMBER = re.compile(r"-?\d+")


def same_wording(y_minus: str, y_plus: str) -> bool:
    """Whether the two texts differ only in their numbers (the student's words all kept)."""
    return _NUMBER.sub("#", y_minus).strip() == _NUMBER.sub("#", y_plus).strip()


def diff_html(y_minus: str, y_plus: str) -> str:
    """Side-by-side word diff: deleted words struck out in red (y⁻), inserted ones green (y⁺)."""
    a, b = re.split(r"(\s+)", y_minus), re.split(r"(\s+)", y_plus)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left.append(old)
            right.append(new)
        else:
            if old:
                left.append(f'<span style="background:#fdd;text-decoration:line-through">{old}</span>')
            if new:
                right.append(f'<span style="background:#dfd">{new}</span>')
    cell = 'style="vertical-align:top;white-space:pre-wrap;font-family:monospace;padding:6px;width:50%"'
    return (f'<table style="width:100%;border:1px solid #ccc"><tr><th>y⁻ (student)</th><th>y⁺ (rectified)</th></tr>'
            f'<tr><td {cell}>{"".join(left)}</td><td {cell}>{"".join(right)}</td></tr></table>')


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Indices grouped so that each batch's padded size (rows × its longest) stays ≤ `max_tokens`.

    Sorted by length, so a batch pads little; a sequence longer than the budget on its own
    gets a batch of one (callers check `max_len ≤ max_tokens` so this does not happen).
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        grown = max(longest, lengths[i])
        if current and (grown * (len(current) + 1) > max_tokens or (max_rows and len(current) >= max_rows)):
            batches.append(current)
            current, grown = [], lengths[i]
        current.append(i)
        longest = grown
    if current:
        batches.append(current)
    return batches


def chunked_completion_logps(model, batch: dict, chunk_tokens: int = 1024):
    """(summed completion log-probs [B], completion token counts [B]), in fp32, without the logits.

    The decoder runs on the whole batch; the vocabulary projection and the log-softmax run on
    completion positions only, `chunk_tokens` positions at a time, so at most
    chunk_tokens × vocabulary logits exist at once (not batch × length × vocabulary).
    """
    import torch

    input_ids, attention = batch["input_ids"], batch["attention_mask"]
    target_mask = batch["completion_mask"][:, 1:].bool()
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
    hidden = hidden[:, :-1][target_mask]                                   # [N, H]
    targets = input_ids[:, 1:][target_mask]
    rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(target_mask)[target_mask]
    head = model.get_output_embeddings()
    token_logps = torch.empty(targets.shape[0], dtype=torch.float32, device=input_ids.device)
    for start in range(0, targets.shape[0], chunk_tokens):
        logits = head(hidden[start:start + chunk_tokens]).float()
        picked = targets[start:start + chunk_tokens].unsqueeze(-1)
        token_logps[start:start + chunk_tokens] = logits.gather(-1, picked).squeeze(-1) - logits.logsumexp(-1)
        del logits
    sums = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    return sums.index_add(0, rows, token_logps), target_mask.sum(-1)


def mean_token_nll(model, tokenizer, prompts: list[str], completions: list[str], max_len: int,
                   batch_tokens: int = 16384, progress: bool = False, *, max_rows: int | None = None,
                   chunk_tokens: int = 1024) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each completion under the model: −Σ_t log π(y_t | x, y_<t).

    Batches hold at most `batch_tokens` padded tokens (and `max_rows` sequences); results
    come back in input order.
    """
    import torch
    from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner

    from spotlib.tokens import build_completion_batch

    if batch_tokens < max_len:
        raise ValueError(f"filter.nll_batch_tokens ({batch_tokens}) must be at least model.max_len ({max_len}): "
                         f"one sequence must fit in a batch")
    rows = [build_completion_batch(tokenizer, [p], [c], max_len) for p, c in zip(prompts, completions, strict=True)]
    lengths = [int(r["input_ids"].shape[1]) for r in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[tuple[float, int] | None] = [None] * len(rows)
    for batch_rows in tqdm(token_budget_batches(lengths, batch_tokens, max_rows), desc="student NLL",
                           disable=not progress):
        batch = _pad_rows([rows[i] for i in batch_rows], pad)
        with torch.no_grad():
            sums, counts = chunked_completion_logps(model, {k: v.to(device) for k, v in batch.items()},
                                                    chunk_tokens)
        for i, lp, c in zip(batch_rows, sums.tolist(), counts.tolist()):
            out[i] = (-float(lp), int(c))
    return out  # type: ignore[return-value]


def _pad_rows(rows: list[dict], pad_id: int) -> dict:
    """Right-pad single-row batches (as `build_completion_batch` makes them) into one."""
    import torch

    width = max(r["input_ids"].shape[1] for r in rows)
    out = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
           "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
           "completion_mask": torch.zeros((len(rows), width), dtype=torch.long)}
    for i, r in enumerate(rows):
        n = r["input_ids"].shape[1]
        for key in out:
            out[key][i, :n] = r[key][0]
    return out


def pooled_nll(items: Sequence[tuple[float, int]]) -> dict:
    """Token-weighted mean NLL per token and its perplexity exp(NLL)."""
    total = sum(n for n, _ in items)
    tokens = sum(c for _, c in items)
    if not tokens:
        return {"n": 0, "nll_per_token": None, "ppl": None}
    nll = total / tokens
    return {"n": len(items), "nll_per_token": nll, "ppl": math.exp(nll)}


def first_edit_span(rejected_ids: list[int], chosen_ids: list[int]) -> tuple[int, int, int, int] | None:
    """(i1, i2, j1, j2): the first differing span, y⁻[i1:i2] against y⁺[j1:j2]; None if equal."""
    ops = difflib.SequenceMatcher(None, rejected_ids, chosen_ids, autojunk=False).get_opcodes()
    first = next((op for op in ops if op[0] != "equal"), None)
    return None if first is None else tuple(first[1:])
