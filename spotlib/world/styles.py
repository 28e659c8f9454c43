"""How solutions are written: the student's several styles and the oracle's own style.

The student sees several wordings and layouts in pre-training and samples among them,
so a minimal edit of its answer stays recognisably its own. The oracle writes the same
steps in words ("37 plus 48 makes 85;"), a style the student meets only at a low rate.
Both end with the paper's final line.
"""
from __future__ import annotations

import random

from .families import FINAL_LINE, chain_values

OP_WORDS = {"+": "plus", "-": "minus"}

# Student layouts: (first-step line, middle-step line, last-step line); {eq} is "a op b = c".
STUDENT_LAYOUTS = (
    ("{eq}", "{eq}", "{eq}"),
    ("First, {eq}.", "Next, {eq}.", "Finally, {eq}."),
    ("Step {k}: {eq}", "Step {k}: {eq}", "Step {k}: {eq}"),
    ("- {eq}", "- {eq}", "- {eq}"),
    ("We have {eq}.", "Then {eq}.", "Then {eq}."),
)
STUDENT_INTROS = ("", "Let's compute step by step.", "We go from left to right.")
ORACLE_INTROS = ("Working left to right:", "Evaluating from left to right:")


def chain_steps(record: dict) -> list[tuple[int, str, int, int]]:
    """The correct steps (a, op, b, c) of an arithmetic record, left to right."""
    operands, ops = record["meta"]["operands"], record["meta"]["ops"]
    values = chain_values(operands, ops)
    return [(values[i], op, operands[i + 1], values[i + 1]) for i, op in enumerate(ops)]


def slipped_steps(record: dict, rng: random.Random) -> list[tuple[int, str, int, int]]:
    """The record's steps with one slip: at a random step the result is off by ten (a carry or borrow
    dropped, or one too many), and every later step computes correctly from the wrong value."""
    operands, ops = record["meta"]["operands"], record["meta"]["ops"]
    k = rng.randrange(len(ops))
    values = chain_values(operands, ops)
    true_c = values[k + 1]
    slipped = true_c - 10 if true_c >= 10 and rng.random() < 0.5 else true_c + 10
    steps, value = [], values[0]
    for i, op in enumerate(ops):
        b = operands[i + 1]
        c = slipped if i == k else (value + b if op == "+" else value - b)
        steps.append((value, op, b, c))
        value = c
    return steps


def equation(a: int, op: str, b: int, c: int) -> str:
    return f"{a} {op} {b} = {c}"


def student_step_line(layout: int, k: int, n: int, eq: str) -> str:
    first, middle, last = STUDENT_LAYOUTS[layout]
    tpl = first if k == 0 else (last if k == n - 1 else middle)
    return tpl.format(eq=eq, k=k + 1)


def render_student(steps, answer, layout: int, intro: int) -> str:
    lines = [STUDENT_INTROS[intro]] if STUDENT_INTROS[intro] else []
    lines += [student_step_line(layout, k, len(steps), equation(*s)) for k, s in enumerate(steps)]
    lines.append(FINAL_LINE.format(answer))
    return "\n".join(lines)


def render_oracle(steps, answer, intro: int = 0) -> str:
    lines = [ORACLE_INTROS[intro]]
    for k, (a, op, b, c) in enumerate(steps):
        end = "." if k == len(steps) - 1 else ";"
        lines.append(f"{a} {OP_WORDS[op]} {b} makes {c}{end}")
    lines.append(FINAL_LINE.format(answer))
    return "\n".join(lines)


def _reference_response(record: dict) -> str | None:
    if record["family"] == "facts":
        return record["meta"]["response"]
    if record["family"] == "format":
        return record["answer"]
    return None


def student_solution(record: dict, rng: random.Random) -> str:
    """A correct solution in one of the student's styles (sampled with `rng`)."""
    direct = _reference_response(record)
    if direct is not None:
        return direct
    return render_student(chain_steps(record), record["answer"],
                          rng.randrange(len(STUDENT_LAYOUTS)), rng.randrange(len(STUDENT_INTROS)))


def slipped_solution(record: dict, rng: random.Random) -> str:
    """A wrong solution in one of the student's styles: one slipped step (`slipped_steps`), the final
    line giving the value it leads to."""
    steps = slipped_steps(record, rng)
    return render_student(steps, steps[-1][3], rng.randrange(len(STUDENT_LAYOUTS)), rng.randrange(len(STUDENT_INTROS)))


def oracle_solution(record: dict, rng: random.Random) -> str:
    """A correct solution in the oracle's style (words for operators, 'makes' for '=')."""
    direct = _reference_response(record)
    if direct is not None:
        return direct
    return render_oracle(chain_steps(record), record["answer"], rng.randrange(len(ORACLE_INTROS)))
