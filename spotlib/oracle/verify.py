"""Does a text's final answer match the gold answer? The world's scorers on the tiny
profile, math-verify (or the paper's regex) otherwise."""
from __future__ import annotations


def verify_many(profile, records: list[dict], texts: list[str | None]) -> list[bool]:
    mode = profile.sample.grading
    if mode == "world":
        from spotlib import world

        return [text is not None and bool(world.score(r, text)) for r, text in zip(records, texts)]
    from spotlib import grading

    idx = [i for i, t in enumerate(texts) if t is not None]
    verdicts = [False] * len(texts)
    if not idx:
        return verdicts
    responses, golds = [texts[i] for i in idx], [records[i]["answer"] for i in idx]
    if hasattr(grading, "grade_many"):
        found = grading.grade_many(responses, golds, mode=mode, processes=profile.sample.grading_processes,
                                   timeout_s=profile.sample.grading_timeout_s)
    else:
        found = [grading.verify_answer(y, g, mode=mode) for y, g in zip(responses, golds)]
    for i, ok in zip(idx, found):
        verdicts[i] = bool(ok)
    return verdicts
