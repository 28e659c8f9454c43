import threading

import pytest

from spotlib.grading import extract_boxed, grade_many, grade_records, paper_regex_answer, verify_answer


@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("$\\boxed{3}$ and then $\\boxed{\\sqrt{\\frac{a}{b}}}$", "\\sqrt{\\frac{a}{b}}"),
    ("\\boxed{\\boxed{5}}", "\\boxed{5}"),  # the outer box holds the inner one
    ("\\fbox{7}", "7"),
    ("\\boxed 9 is it", "9"),
    ("truncated $\\boxed{6", None),
    ("no box at all: 42", None),
    ("", None),
])
def test_extract_boxed_handles_nesting_and_truncation(text, expected):
    assert extract_boxed(text) == expected


HARD_CASES = [
    ("Therefore, the final answer is: $\\boxed{\\frac{1}{2}}$.", "0.5", True),
    ("$\\boxed{0.5}$", "\\frac{1}{2}", True),
    ("$\\boxed{1/2}$", "\\frac12", True),
    ("$\\boxed{\\dfrac{3}{4}}$", "0.75", True),
    ("$\\boxed{\\frac{2}{3}}$", "0.67", False),
    ("$\\boxed{\\sqrt{2}/2}$", "\\frac{\\sqrt{2}}{2}", True),
    ("$\\boxed{\\boxed{5}}$", "5", True),
    ("$\\boxed{10\\text{ cm}}$", "10", True),
    ("$\\boxed{30^\\circ}$", "30", True),
    ("$\\boxed{\\$5}$", "5", True),
    ("$\\boxed{50\\%}$", "50", True),
    ("$\\boxed{\\text{Monday}}$", "Monday", True),
    ("$\\boxed{\\text{Tuesday}}$", "Monday", False),
    ("$\\boxed{(1,2)}$", "(1,2)", True),
    ("first $\\boxed{3}$, finally $\\boxed{4}$", "4", True),    # several boxes: the last one counts
    ("first $\\boxed{4}$, finally $\\boxed{3}$", "4", False),
    ("truncated $\\boxed{6", "6", False),                        # no closed box: wrong (strict)
    ("The answer is 66", "66", False),                           # no box: no anchor-less fallback
    ("$\\boxed{2}$", "3", False),
    (None, "3", False),
]


@pytest.mark.parametrize("response, gold, expected", HARD_CASES)
def test_math_verify_mode_on_hard_cases(response, gold, expected):
    assert verify_answer(response, gold) is expected


def test_paper_regex_mode_mimics_the_authors_string_match():
    assert paper_regex_answer("$\\boxed{\\frac{1}{2}}$") == "\\frac{1"
    assert not verify_answer("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}", mode="paper_regex")
    assert verify_answer("a $\\boxed{3}$ b $\\boxed{12}$", "12", mode="paper_regex")
    assert not verify_answer("$\\boxed{0.5}$", "\\frac{1}{2}", mode="paper_regex")
    with pytest.raises(ValueError, match="unknown grading mode"):
        verify_answer("x", "1", mode="exact")


def test_grade_many_in_processes_matches_inline_and_works_off_the_main_thread():
    responses = [r for r, _, _ in HARD_CASES]
    golds = [g for _, g, _ in HARD_CASES]
    expected = [e for _, _, e in HARD_CASES]
    assert grade_many(responses, golds, processes=2, timeout_s=5) == expected
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", grade_many(responses[:4], golds[:4], processes=1)))
    thread.start()
    thread.join()
    assert out["r"] == expected[:4]
    with pytest.raises(ValueError, match="2 responses but 1"):
        grade_many(["a", "b"], ["1"])


def _hang_on_request(job):
    import time
    if job[0] == "hang":
        time.sleep(30)
    return True


def test_grade_many_times_out_a_hung_item(monkeypatch):
    import spotlib.grading as grading

    monkeypatch.setattr(grading, "_grade_one", _hang_on_request)
    responses = ["ok", "hang"] + ["ok"] * 6  # enough items for the pool path
    got = grading.grade_many(responses, ["1"] * len(responses), processes=2, timeout_s=1)
    assert got == [True, False] + [True] * 6


def _sample_cfg(grading):
    from types import SimpleNamespace

    return SimpleNamespace(grading=grading, grading_processes=1, grading_timeout_s=2.0)


def test_grade_records_dispatches_on_the_grading_mode():

    records = [{"answer": "7"}, {"answer": "7"}, {"answer": "\\frac{1}{2}"}]
    responses = ["so $\\boxed{7}$", None, "$\\boxed{\\frac{1}{2}}$"]
    assert grade_records(records, responses, _sample_cfg("paper_regex")) == [
        (True, "7"), (False, None), (False, "\\frac{1}{2}")]  # the regex reads `\frac{1`
    with pytest.raises(ValueError, match="2 records but 1 responses"):
        grade_records(records[:2], responses[:1], _sample_cfg("paper_regex"))


def test_grade_records_uses_the_world_scorer():
    import random

    from spotlib import world

    record = world.make_items("arith", 1, "eval", seed=0)[0]
    right = world.student_solution(record, random.Random(0))
    boxed = f"\\boxed{{{record['answer']}}}"
    assert boxed in right
    wrong = right.replace(boxed, f"\\boxed{{{record['answer']}1}}")
    graded = grade_records([record] * 3, [right, wrong, None], _sample_cfg("world"))
    assert graded == [(True, world.extract_answer(record, right)),
                      (False, world.extract_answer(record, wrong)), (False, None)]
    assert graded[0][1] != graded[1][1]
