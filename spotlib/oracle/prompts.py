"""The Oracle's prompts, in this package's own words, carrying the instructions of the paper.

Three rectification variants (docs/method.md §3): `without_ground_truth` (solve it first,
then repair), `with_ground_truth` (compare with the reference answer), `simplified`
(the bare instruction). The direct prompt writes a fresh solution for the SFT
baseline, with a one-shot exemplar. Problem, student answer and reference sit in
tagged sections, so a server (the local one) can read them back unambiguously.
"""
from __future__ import annotations

import hashlib
import re

from spotlib.problems import FINAL_LINE  # the line the student's math prompt asks for

from .parsing import CORRECTED, SOLUTION

_RULES = f"""Rules for the corrected solution:
1. Keep every part of the student's solution that is correct exactly as it is written.
2. Replace only the incorrect reasoning or calculations with correct ones, and update what follows from them.
3. Match the student's tone, vocabulary, formatting and sentence structure, so the result reads as if the student had written it.
4. End with the line: {FINAL_LINE}
5. Put the corrected solution between the lines {CORRECTED[0]} and {CORRECTED[1]}.
6. Inside the markers write only the solution: no comments about the correction, no phrases such as "here is the corrected solution"."""

_SECTIONS = """<problem>
{problem}
</problem>

<student_answer>
{student_answer}
</student_answer>"""

RECTIFY_TEMPLATES = {
    "without_ground_truth": (
        "A student attempted the math problem below and made at least one mistake.\n"
        "First solve the problem yourself, carefully. Then find where the student's solution goes wrong "
        "and repair it with as few changes as possible.\n\n" + _SECTIONS + "\n\n" + _RULES),
    "with_ground_truth": (
        "A student attempted the math problem below and made at least one mistake. The reference final "
        "answer is given. Compare the student's solution with it, find where the student goes wrong, and "
        "repair the solution with as few changes as possible so that it reaches the reference answer.\n\n"
        + _SECTIONS + "\n\n<reference_answer>\n{ground_truth}\n</reference_answer>\n\n" + _RULES),
    "simplified": (
        "Correct the student's solution below with minimal changes, keeping its style.\n\n" + _SECTIONS
        + f"\n\nEnd with: {FINAL_LINE}\nWrap the corrected solution in {CORRECTED[0]} and {CORRECTED[1]}."),
}

_EXEMPLAR = f"""<problem>
What is 12 + 30 - 5?
</problem>

{SOLUTION[0]}
First, 12 + 30 = 42.
Then, 42 - 5 = 37.
Therefore, the final answer is: $\\boxed{{37}}$.
{SOLUTION[1]}"""

DIRECT_TEMPLATE = (
    "Solve the math problem step by step. End with the line: " + FINAL_LINE + "\n"
    f"Put the solution between the lines {SOLUTION[0]} and {SOLUTION[1]}, and write nothing else inside them.\n\n"
    "Example:\n\n" + _EXEMPLAR + "\n\nNow the problem to solve:\n\n<problem>\n{problem}\n</problem>")

VARIANTS = tuple(RECTIFY_TEMPLATES)


def rectify_prompt(variant: str, problem: str, student_answer: str, ground_truth: str | None = None) -> str:
    if variant not in RECTIFY_TEMPLATES:
        raise ValueError(f"unknown prompt variant {variant!r} (expected one of {', '.join(VARIANTS)})")
    if variant == "with_ground_truth" and ground_truth is None:
        raise ValueError("prompt variant with_ground_truth needs the ground-truth answer")
    return _fill(RECTIFY_TEMPLATES[variant], problem=problem, student_answer=student_answer,
                 ground_truth=str(ground_truth))


def direct_prompt(problem: str) -> str:
    return _fill(DIRECT_TEMPLATE, problem=problem)


def _fill(template: str, **values: str) -> str:
    # One pass, so braces in a problem ("\\frac{1}{2}") or in a value are never re-read.
    return re.sub(r"\{(problem|student_answer|ground_truth)\}", lambda m: values[m[1]], template)


def templates_hash() -> str:
    """Changes whenever any prompt's wording changes (part of every resume key)."""
    text = "\x00".join([*RECTIFY_TEMPLATES.values(), DIRECT_TEMPLATE])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _section(text: str, tag: str) -> str | None:
    # The last section of that name: the direct prompt's exemplar also has a <problem>.
    found = re.findall(rf"<{tag}>\n(.*?)\n</{tag}>", text, flags=re.DOTALL)
    return found[-1] if found else None


def read_request(text: str) -> dict:
    """Invert the templates: {"kind": "rectify"|"direct", "problem", "student_answer", "ground_truth"}."""
    student = _section(text, "student_answer")
    return {"kind": "rectify" if student is not None else "direct",
            "problem": _section(text, "problem"), "student_answer": student,
            "ground_truth": _section(text, "reference_answer")}
