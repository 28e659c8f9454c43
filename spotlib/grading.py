"""Final-answer extraction and verification for math-style responses.

Two modes:

- `math_verify` (default): the LAST `\\boxed{...}` of the response (nested braces kept) is
  parsed by math-verify and compared with the gold answer symbolically, so `\\frac{1}{2}`,
  `1/2` and `0.5` agree. Strict on purpose: a response without a box is wrong, and the
  parser may not fall back to "the last number in the text" (math-verify's default does,
  which grades a truncated `$\\boxed{6` as 6). A box whose content does not parse as math
  (a word, a multiple-choice letter) is compared as normalised text.
- `paper_regex`: the authors' check, kept for parity studies: the last `\\boxed{(.*?)}`
  match compared with the gold by string equality. Its non-greedy regex stops at the
  first `}`, so `\\boxed{\\frac{1}{2}}` reads as `\\frac{1` and is never right.

math-verify bounds its own work with `signal.alarm`, which only works in a main thread:
`grade_many` therefore grades in worker processes, each item under a timeout.

`grade_records` is the one dispatch every stage uses: the tiny world's scorers when the
profile's `sample.grading` is `world`, one of the two modes above otherwise.
"""
from __future__ import annotations

import multiprocessing
import re
import sys
import threading
from typing import Sequence

GRADING_MODES = ("math_verify", "paper_regex")
_PAPER_REGEX = re.compile(r"\\boxed\{(.*?)\}")


def extract_boxed(text: str | None, last: bool = True) -> str | None:
    """Content of the last (or first) top-level `\\boxed{...}` / `\\fbox{...}`, nested braces kept.

    A box inside a box belongs to the outer one. Returns None when there is no box or the
    chosen box is never closed (a truncated answer). `\\boxed 5` (no braces) is a one-token box.
    """
    if not text:
        return None
    command = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
    found: list[str | None] = []
    pos = 0
    while (match := command.search(text, pos)) is not None:
        content, pos = _read_group(text, match.end())
        found.append(content)
        if content is None:
            break
    if not found:
        return None
    return found[-1] if last else found[0]


def _read_group(text: str, pos: int) -> tuple[str | None, int]:
    """(content of the brace group or bare token at `pos`, index just after it)."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text):
        return None, len(text)
    if text[pos] != "{":
        token = re.match(r"[^\s$]+", text[pos:])
        return (token.group(0), pos + token.end()) if token else (None, pos + 1)
    depth = 0
    for i in range(pos, len(text)):
        if text[i] in "{}" and i > 0 and text[i - 1] == "\\":
            continue  # an escaped brace is text, not grouping
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1:i], i + 1
    return None, len(text)


def paper_regex_answer(text: str | None) -> str | None:
    """The authors' extraction: the last non-greedy `\\boxed{(.*?)}` match."""
    matches = _PAPER_REGEX.findall(text or "")
    return matches[-1] if matches else None


def normalize_text_answer(text: str) -> str:
    """Loose text form for answers that are not math: `\\text{(B) Monday}` -> `(b) monday`."""
    text = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", text)
    text = text.replace("\\!", "").replace("\\,", "").replace("\\ ", " ").replace("$", "")
    text = re.sub(r"\s+", " ", text).strip().strip(".").strip()
    return text.lower()


def _strict_configs():
    from math_verify import LatexExtractionConfig

    # Box first, no anchor-less search: only the box we hand over is read.
    return [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]


def _gold_configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # Gold answers are trusted strings such as "\frac{1}{2}", "10" or "3\sqrt{13}".
    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _math_verify(response: str, gold: str, timeout_s: int) -> bool:
    from math_verify import parse, verify

    boxed = extract_boxed(response)
    if boxed is None or not boxed.strip():
        return False
    gold_text = str(gold).strip()
    gold_box = extract_boxed(gold_text)
    if gold_box is not None:
        gold_text = gold_box
    if normalize_text_answer(boxed) == normalize_text_answer(gold_text):
        return True
    pred = parse(f"$\\boxed{{{boxed}}}$", extraction_config=_strict_configs(),
                 fallback_mode="no_fallback", parsing_timeout=timeout_s)
    target = parse(f"$\\boxed{{{gold_text}}}$", extraction_config=_gold_configs(),
                   fallback_mode="no_fallback", parsing_timeout=timeout_s)
    if not pred or not target:
        return False
    return bool(verify(target, pred, timeout_seconds=timeout_s))


def verify_answer(response: str | None, gold: str, mode: str = "math_verify",
                  timeout_s: float = 5.0) -> bool:
    """Whether the response's final boxed answer equals `gold` under `mode`.

    In `math_verify` mode this must run in a main thread (math-verify uses `signal.alarm`);
    from other threads use `grade_many`, which grades in processes.
    """
    if mode not in GRADING_MODES:
        raise ValueError(f"unknown grading mode {mode!r} (expected one of {', '.join(GRADING_MODES)})")
    if response is None:
        return False
    if mode == "paper_regex":
        found = paper_regex_answer(response)
        return found is not None and found.strip() == str(gold).strip()
    try:
        return _math_verify(response, gold, max(1, int(round(timeout_s))))
    except Exception:  # a parser error or timeout grades as wrong, never crashes a run
        return False


def _grade_one(args) -> bool:
    response, gold, mode, timeout_s = args
    return verify_answer(response, gold, mode, timeout_s)


def _pool_context():
    # fork starts workers in milliseconds; the workers only run math-verify, never torch.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods and sys.platform != "darwin" else "spawn")


def grade_many(responses: Sequence[str | None], golds: Sequence[str], mode: str = "math_verify",
               processes: int = 2, timeout_s: float = 5.0) -> list[bool]:
    """Grade many responses; each item gets at least `timeout_s` and counts as wrong past it.

    With `processes <= 1` in the main thread the items are graded inline. Otherwise a pool
    of processes grades them; an item that hangs past its timeout is scored False, the
    pool is killed and the items not yet collected are graded by a fresh pool.
    """
    if len(responses) != len(golds):
        raise ValueError(f"grade_many: {len(responses)} responses but {len(golds)} gold answers")
    if mode not in GRADING_MODES:
        raise ValueError(f"unknown grading mode {mode!r} (expected one of {', '.join(GRADING_MODES)})")
    jobs = [(r, g, mode, timeout_s) for r, g in zip(responses, golds)]
    main_thread = threading.current_thread() is threading.main_thread()
    few = len(jobs) < 4 * max(1, processes)  # a pool costs more than it saves here
    if mode == "paper_regex" or (main_thread and (processes <= 1 or few)):
        return [_grade_one(job) for job in jobs]
    import math_verify  # noqa: F401  (imported once here, inherited by forked workers)
    results: list[bool | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    context = _pool_context()
    while pending:
        pool = context.Pool(max(1, processes))
        try:
            handles = {i: pool.apply_async(_grade_one, (jobs[i],)) for i in pending}
            done: list[int] = []
            hung = None
            for i in pending:
                try:
                    results[i] = bool(handles[i].get(timeout=timeout_s + 2.0))
                    done.append(i)
                except multiprocessing.TimeoutError:
                    hung = i
                    break
                except Exception:
                    results[i] = False
                    done.append(i)
            if hung is not None:
                results[hung] = False
                done.append(hung)
            finished = set(done)
            pending = [i for i in pending if i not in finished]
        finally:
            pool.terminate()
            pool.join()
    return [bool(r) for r in results]


def grade_records(records: Sequence[dict], responses: Sequence[str | None],
                  sample_cfg) -> list[tuple[bool, str | None]]:
    """(correct, extracted answer) for each response to its record, under the profile's
    `sample` settings (`grading`, `grading_processes`, `grading_timeout_s`).

    A `None` response (nothing was produced) is wrong, with no answer.
    """
    if len(records) != len(responses):
        raise ValueError(f"grade_records: {len(records)} records but {len(responses)} responses")
    mode = sample_cfg.grading
    if mode == "world":
        from spotlib import world

        return [(False, None) if y is None else (bool(world.score(r, y)), world.extract_answer(r, y))
                for r, y in zip(records, responses)]
    present = [i for i, y in enumerate(responses) if y is not None]
    verdicts = grade_many([responses[i] for i in present], [records[i]["answer"] for i in present], mode=mode,
                          processes=sample_cfg.grading_processes, timeout_s=sample_cfg.grading_timeout_s)
    graded: list[tuple[bool, str | None]] = [(False, None)] * len(responses)
    for i, ok in zip(present, verdicts):
        graded[i] = (bool(ok), extract_boxed(responses[i]))
    return graded
