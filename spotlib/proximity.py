"""How close is a rectified answer y⁺ to the student's own wrong answer y⁻?

Change ratio (PAPER.md §3):   R = 1 − |LCS(y⁻, y⁺)| / |y⁺|
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


def mean_token_nll(model, tokenizer, prompts: list[str], completions: list[str], max_len: int,
                   batch_size: int = 16, progress: bool = False) -> list[tuple[float, int]]:
    """(summed NLL, token count) of each completion under the model: −Σ_t log π(y_t | x, y_<t)."""
    import torch
    from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner

    from spotlib.tokens import build_completion_batch, sequence_logps

    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="student NLL", disable=not progress):
        batch = build_completion_batch(tokenizer, prompts[start:start + batch_size],
                                       completions[start:start + batch_size], max_len)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            logps, counts = sequence_logps(model, batch)
        out += [(-float(lp), int(c)) for lp, c in zip(logps.tolist(), counts.tolist())]
    return out


def pooled_nll(items: Sequence[tuple[float, int]]) -> dict:
    """Token-weighted mean NLL per token and its perplexity exp(NLL)."""
    total = sum(n for n, _ in items)
    tokens = sum(c for _, c in items)
    if not tokens:
        return {"n": 0, "nll_per_token": None, "ppl": None}
    nll = total / tokens
    return {"n": len(items), "nll_per_token": nll, "ppl": math.exp(nll)}
