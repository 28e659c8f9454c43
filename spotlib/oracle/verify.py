"""Does a text's final answer match the gold answer? The world's scorers on the tiny
profile, math-verify (or the paper's regex) otherwise: `spotlib.grading.grade_records`."""
from __future__ import annotations

from spotlib.grading import grade_records


def verify_many(profile, records: list[dict], texts: list[str | None]) -> list[bool]:
    """Whether each text is right for its record; a `None` text (no answer) is wrong."""
    return [ok for ok, _ in grade_records(records, texts, profile.sample)]
