"""Marker parsing, prompts, and the programmatic Oracle's minimal edits."""
import random

import pytest

from pairs_helpers import plant_error
from spotlib import proximity, world
from spotlib.oracle import CORRECTED, SOLUTION, ProgrammaticOracle, parse_reply, wrap
from spotlib.oracle import prompts

GOOD = "First, 2 + 3 = 5.\nTherefore, the final answer is: $\\boxed{5}$."


def test_parse_good_reply_keeps_thoughts_apart():
    parsed = parse_reply(wrap(GOOD, thoughts="check step 1"))
    assert parsed.text == GOOD and parsed.failure is None and parsed.thoughts == "check step 1"


@pytest.mark.parametrize("reply, reason", [
    ("", "empty_reply"),
    (None, "empty_reply"),
    ("<think>only thinking</think>", "empty_reply"),
    (GOOD, "no_markers"),
    (f"{CORRECTED[0]}\n{GOOD}", "no_end_marker"),
    (f"{CORRECTED[0]}\n\n{CORRECTED[1]}", "empty_block"),
    (f"{CORRECTED[0]}\nHere is the corrected solution:\n{CORRECTED[1]}", "empty_block"),
    (f"{SOLUTION[0]}\n{GOOD}\n{SOLUTION[1]}", "no_markers"),          # the wrong pair of markers
    (f"<think>{CORRECTED[0]}\n{GOOD}\n{CORRECTED[1]}</think>", "empty_reply"),  # markers only in thoughts
    ("<think>cut off while thinking", "empty_reply"),
])
def test_parse_failures_are_named(reply, reason):
    parsed = parse_reply(reply)
    assert parsed.text is None and parsed.failure == reason


def test_truncation_is_reported_as_such():
    parsed = parse_reply(f"{CORRECTED[0]}\nFirst, 2 +", finish_reason="length")
    assert parsed.failure == "truncated"


def test_parse_is_tolerant_and_strips_meta_phrases():
    reply = ("Sure! I looked at it.\n== corrected started ==\nHere is the corrected solution:\n```\n" + GOOD
             + "\n```\n=====  CORRECTED   ENDED =====\nI hope this helps!")
    assert parse_reply(reply).text == GOOD
    trailing = f"{CORRECTED[0]}\n{GOOD}\nI kept the student's wording.\n{CORRECTED[1]}"
    assert parse_reply(trailing).text == GOOD


def test_parse_takes_last_block_and_orphan_think_and_reasoning_field():
    reply = f"{CORRECTED[0]}\ndraft\n{CORRECTED[1]}\nbetter:\n{CORRECTED[0]}\n{GOOD}\n{CORRECTED[1]}"
    assert parse_reply(reply).text == GOOD
    orphan = parse_reply(f"my thoughts</think>\n{wrap(GOOD)}")
    assert orphan.text == GOOD and orphan.thoughts == "my thoughts"
    side = parse_reply(wrap(GOOD), reasoning="from the server's field")
    assert side.thoughts == "from the server's field"


def test_prompts_carry_the_instructions_and_read_back():
    for variant in prompts.VARIANTS:
        text = prompts.rectify_prompt(variant, "Compute \\frac{1}{2} + {x}.", "y = {2}", "7")
        assert CORRECTED[0] in text and CORRECTED[1] in text and "\\boxed{" in text
        back = prompts.read_request(text)
        assert back["kind"] == "rectify" and back["problem"] == "Compute \\frac{1}{2} + {x}."
        assert back["student_answer"] == "y = {2}"
        assert (back["ground_truth"] == "7") == (variant == "with_ground_truth")
    assert "tone" in prompts.rectify_prompt("with_ground_truth", "p", "s", "1")
    direct = prompts.read_request(prompts.direct_prompt("Compute 1 + 2."))
    assert direct == {"kind": "direct", "problem": "Compute 1 + 2.", "student_answer": None, "ground_truth": None}
    with pytest.raises(ValueError, match="ground-truth"):
        prompts.rectify_prompt("with_ground_truth", "p", "s", None)
    with pytest.raises(ValueError, match="unknown prompt variant"):
        prompts.rectify_prompt("nope", "p", "s")


def test_programmatic_edits_are_minimal_on_planted_errors():
    oracle = ProgrammaticOracle(seed=0)
    rng = random.Random(1)
    items = world.make_items("arith", 40, "train", seed=3)
    ratios, rewrites = [], []
    for item in items:
        clean = world.student_solution(item, rng)
        step = rng.randrange(len(item["meta"]["ops"]))
        wrong = plant_error(clean, step, rng.choice([-7, -1, 1, 2, 9]))
        assert not world.score(item, wrong)
        result = oracle.rectify(item, wrong, item["answer"])
        assert result.ok and result.mode == "edit" and world.score(item, result.text)
        # Every character outside the numbers is the student's; numbers before the slip are untouched.
        assert proximity.same_wording(wrong, result.text)
        assert result.text == clean   # the slip and only what followed from it is undone
        assert result.info["changed_steps"][0] == step
        ratios.append(proximity.change_ratio(wrong, result.text))
        rewrites.append(proximity.change_ratio(wrong, world.oracle_solution(item, rng)))
    assert max(ratios) < 0.15 and sum(ratios) / len(ratios) < sum(rewrites) / len(rewrites) / 3


def test_programmatic_rewrites_unparsable_text_and_solves_directly():
    oracle = ProgrammaticOracle(seed=0)
    item = world.make_items("arith", 1, "train", seed=5)[0]
    result = oracle.rectify(item, "I have no idea.")
    assert result.mode == "rewrite" and world.score(item, result.text)
    direct = oracle.solve_direct(item, attempt=0)
    assert world.score(item, direct.text) and "makes" in direct.text
    assert oracle.solve_direct(item, attempt=0).text == direct.text   # seeded
