"""The programmatic Oracle's core: the minimal edit that makes a student solution right.

`parse_solution` finds the steps "a op b = c" (or the oracle's "a plus b makes c") with
character spans. `minimal_fix` compares them with the correct chain
(a_0 = first operand, b_i = operand i+1, c_i = a_i op_i b_i), corrects the first wrong
step, recomputes every value that depends on it, fixes the final box, and leaves every
other character of the student's text alone. Missing steps are added in the layout of
the student's last step; surplus steps are removed. Text with no parsable step (or a
step count far from the problem's) is rewritten whole in the oracle's style.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from .families import FINAL_LINE
from .scoring import score
from .styles import OP_WORDS, chain_steps, oracle_solution

_STEP = re.compile(r"(?P<a>-?\d+) (?P<op>[+\-]|plus|minus) (?P<b>-?\d+) (?P<rel>=|makes) (?P<c>-?\d+)")
_BOX = re.compile(r"\\boxed\{([^{}]*)\}")
_WORD_OPS = {"plus": "+", "minus": "-"}


@dataclass
class Step:
    """One parsed step; spans are (start, end) character offsets in the solution text."""
    a: int
    op: str          # "+" or "-" (normalised from words)
    b: int
    c: int
    span: tuple[int, int]
    spans: dict[str, tuple[int, int]]
    worded: bool     # written as "plus/minus ... makes"


@dataclass
class FixResult:
    text: str
    mode: str                                   # "edit" | "rewrite"
    changed_steps: list[int] = field(default_factory=list)
    wrong_steps_before: list[int] = field(default_factory=list)
    wrong_steps_left: int = 0
    steps_total: int = 0
    first_error: str | None = None              # kind of the first wrong step (see classify)


def parse_solution(text: str) -> list[Step]:
    steps = []
    for m in _STEP.finditer(text):
        op = _WORD_OPS.get(m["op"], m["op"])
        steps.append(Step(int(m["a"]), op, int(m["b"]), int(m["c"]), m.span(),
                          {g: m.span(g) for g in ("a", "op", "b", "c")}, m["op"] in _WORD_OPS))
    return steps


def is_oracle_worded(text: str) -> bool:
    """Whether a solution is written in the oracle's style: it has steps, all in words ("a plus b makes c")."""
    steps = parse_solution(text)
    return bool(steps) and all(s.worded for s in steps)


def wrong_steps(record: dict, steps: list[Step]) -> list[int]:
    """Indices where the written step differs from the correct chain (missing/extra count)."""
    truth = chain_steps(record)
    wrong = []
    for i in range(max(len(truth), len(steps))):
        if i >= len(truth) or i >= len(steps):
            wrong.append(i)
        elif (steps[i].a, steps[i].op, steps[i].b, steps[i].c) != truth[i]:
            wrong.append(i)
    return wrong


def classify(record: dict, steps: list[Step], i: int) -> str:
    """Kind of error at step i: missing_step, extra_step, copied_operand, carried_value,
    wrong_operation or arithmetic (a op b != c with the step's own a, b)."""
    truth = chain_steps(record)
    if i >= len(steps):
        return "missing_step"
    if i >= len(truth):
        return "extra_step"
    s, (a, op, b, _) = steps[i], truth[i]
    if s.b != b:
        return "copied_operand"
    if s.a != a:
        return "carried_value"
    if s.op != op:
        return "wrong_operation"
    return "arithmetic"


def _step_text(step: Step, values: tuple[int, str, int, int]) -> dict[str, str]:
    a, op, b, c = values
    return {"a": str(a), "op": OP_WORDS[op] if step.worded else op, "b": str(b), "c": str(c)}


def _line_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    lo = text.rfind("\n", 0, start) + 1
    hi = text.find("\n", end)
    return lo, (len(text) if hi < 0 else hi)


def _rewrite(record, steps, wrong, kind) -> FixResult:
    rng = random.Random(f"rewrite-{record.get('id', '')}")
    text = oracle_solution(record, rng)
    return FixResult(text, "rewrite", list(range(len(chain_steps(record)))), wrong, 0,
                     len(chain_steps(record)), kind)


def minimal_fix(record: dict, response: str) -> FixResult:
    if record["family"] not in ("arith", "arith_ood"):
        raise ValueError(f"minimal_fix handles arith/arith_ood records, got {record['family']!r}")
    truth = chain_steps(record)
    steps = parse_solution(response)
    wrong = wrong_steps(record, steps)
    kind = classify(record, steps, wrong[0]) if wrong else None
    if not steps or abs(len(steps) - len(truth)) > 1:
        return _rewrite(record, steps, wrong, kind)

    edits: list[tuple[int, int, str]] = []     # (start, end, replacement), applied right to left
    changed: list[int] = []
    for i, step in enumerate(steps[:len(truth)]):
        new = _step_text(step, truth[i])
        old = _step_text(step, (step.a, step.op, step.b, step.c))
        if new != old:
            changed.append(i)
            edits += [(*step.spans[g], new[g]) for g in ("a", "op", "b", "c") if new[g] != old[g]]
    if len(steps) > len(truth):               # drop the surplus step's line
        extra = steps[len(truth)]
        lo, hi = _line_bounds(response, *extra.span)
        edits.append((lo, min(hi + 1, len(response)), ""))
        changed.append(len(truth))
    if len(steps) < len(truth):               # add the missing step in the last step's layout
        last = steps[-1]
        lo, hi = _line_bounds(response, *last.span)
        line = response[lo:hi]
        rel = {g: (s - lo, e - lo) for g, (s, e) in last.spans.items()}
        new_line = line
        for g in ("c", "b", "op", "a"):        # right to left keeps offsets valid
            s, e = rel[g]
            new_line = new_line[:s] + _step_text(last, truth[len(steps)])[g] + new_line[e:]
        new_line = re.sub(r"Step (\d+)", f"Step {len(steps) + 1}", new_line)
        edits.append((hi, hi, "\n" + new_line))
        changed.append(len(steps))

    boxes = list(_BOX.finditer(response))
    answer = record["answer"]
    if boxes:
        box = boxes[-1]
        if box.group(1).strip() != answer:
            edits.append((*box.span(1), answer))
    else:
        tail = response.rstrip()
        edits.append((len(tail), len(response), ("\n" if tail else "") + FINAL_LINE.format(answer)))

    text = response
    for start, end, repl in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + repl + text[end:]
    left = wrong_steps(record, parse_solution(text))
    if left or not score(record, text):        # a layout the edit could not handle
        return _rewrite(record, steps, wrong, kind)
    return FixResult(text, "edit", sorted(set(changed)), wrong, 0, len(truth), kind)
