"""Strict scorers of the tiny world, one per family.

arith / arith_ood: the content of the LAST `\\boxed{...}` must be the integer answer
(text after it is allowed, as in the paper's last-box rule; a missing or unclosed box
scores 0). facts: the response must name exactly one value of the asked relation,
the fact's. format: every constraint (word, count, case, wrapper) must hold.
"""
from __future__ import annotations

import re

from .families import RELATIONS, _WRAP_CHARS

_BOX = re.compile(r"\\boxed\{([^{}]*)\}")
_INT = re.compile(r"-?\d+")


def _arith_extract(response: str) -> str | None:
    boxes = _BOX.findall(response)
    if not boxes:
        return None
    content = boxes[-1].strip()
    return content if _INT.fullmatch(content) else None


def _facts_extract(record: dict, response: str) -> str | None:
    values = RELATIONS[record["meta"]["relation"]][0]
    found = [(m.start(), v) for v in values
             for m in re.finditer(rf"\b{re.escape(v)}\b", response, flags=re.IGNORECASE)]
    if len({v for _, v in found}) != 1:   # none, or hedging between values
        return None
    return found[0][1]


def format_violations(record: dict, response: str) -> list[str]:
    """The constraints a format response breaks (empty list = correct)."""
    meta = record["meta"]
    text = response.strip()
    problems = []
    left, right = _WRAP_CHARS[meta["wrap"]]
    if meta["wrap"] != "none":
        if not (text.startswith(left) and text.endswith(right) and len(text) >= 2):
            problems.append("wrapper")
    elif text[:1] in "[(\"" or text[-1:] in "])\"":
        problems.append("wrapper")
    text = text.strip("[]()\"")   # judge the words apart from any wrapper
    words = text.split()
    if len(words) != meta["count"]:
        problems.append("count")
    if any(w.lower() != meta["word"].lower() for w in words):
        problems.append("word")
    want = {"lower": str.lower, "upper": str.upper, "title": str.capitalize}[meta["case"]]
    if any(w != want(w) for w in words):
        problems.append("case")
    return problems


def extract_answer(record: dict, response: str) -> str | None:
    family = record["family"]
    if family in ("arith", "arith_ood"):
        return _arith_extract(response)
    if family == "facts":
        return _facts_extract(record, response)
    if family == "format":
        text = response.strip()
        return text or None
    raise ValueError(f"unknown family {family!r} in record {record.get('id')}")


def score(record: dict, response: str) -> bool:
    family = record["family"]
    if family in ("arith", "arith_ood"):
        pred = _arith_extract(response)
        return pred is not None and int(pred) == int(record["answer"])
    if family == "facts":
        pred = _facts_extract(record, response)
        return pred is not None and pred.lower() == record["answer"].lower()
    if family == "format":
        return not format_violations(record, response)
    raise ValueError(f"unknown family {family!r} in record {record.get('id')}")
