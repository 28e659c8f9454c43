import json
from pathlib import Path

import pytest

from spotlib.evals import connect4
from spotlib.io import read_jsonl

# 24 states of the public Connect4 evaluation set (linius/connect4), in its own format.
SAMPLE = Path(__file__).resolve().parent / "data" / "connect4_sample.jsonl"


def test_released_answers_rendered_in_the_required_format_score_100_percent():
    rows = read_jsonl(SAMPLE)
    assert len(rows) == 24
    own = opp = errors = 0
    for row in rows:
        result = connect4.score(connect4.render_answer(row["answer"], row["state"]), row["answer"])
        own += result["own"]
        opp += result["opponent"]
        errors += result["format_error"]
    assert (own, opp, errors) == (24, 24, 0)
    assert any(r["answer"][0] for r in rows) and any(not r["answer"][1] for r in rows)


ANSWER = [[[3, 2], [0, 3]], [[5, 4]]]


@pytest.mark.parametrize("response, own, opponent, format_error", [
    ("[Intermediate Thinking Results 1: (3,2), (0,3)]\n[Intermediate Thinking Results 2: (5,4)]\nChosen Move: (3,2)",
     1.0, 1.0, False),
    # order and case do not matter
    ("[intermediate thinking results 1: (0, 3), (3,2)]\n[INTERMEDIATE THINKING RESULTS 2: (5,4)]", 1.0, 1.0, False),
    # a missing move
    ("[Intermediate Thinking Results 1: (3,2)]\n[Intermediate Thinking Results 2: (5,4)]", 0.0, 1.0, False),
    # an extra move
    ("[Intermediate Thinking Results 1: (3,2), (0,3), (1,1)]\n[Intermediate Thinking Results 2: (5,4)]",
     0.0, 1.0, False),
    # a duplicated move is not the same multiset
    ("[Intermediate Thinking Results 1: (3,2), (0,3), (3,2)]\n[Intermediate Thinking Results 2: (5,4)]",
     0.0, 1.0, False),
    # a missing line scores 0 and is a format error
    ("[Intermediate Thinking Results 1: (3,2), (0,3)]\nChosen Move: (3,2)", 1.0, 0.0, True),
    # None against a non-empty answer
    ("[Intermediate Thinking Results 1: None]\n[Intermediate Thinking Results 2: (5,4)]", 0.0, 1.0, False),
    # unreadable content is a format error
    ("[Intermediate Thinking Results 1: column three]\n[Intermediate Thinking Results 2: (5,4)]", 0.0, 1.0, True),
    ("", 0.0, 0.0, True),
])
def test_each_kind_of_mistake(response, own, opponent, format_error):
    result = connect4.score(response, ANSWER)
    assert result == {"own": own, "opponent": opponent, "format_error": format_error}


def test_none_matches_empty_lists_and_answer_may_be_json_text():
    response = "[Intermediate Thinking Results 1: none]\n[Intermediate Thinking Results 2: None]"
    assert connect4.score(response, json.dumps([[], []])) == {"own": 1.0, "opponent": 1.0, "format_error": False}
    assert connect4.score(response, [[[1, 1]], []])["own"] == 0.0


def test_loader_builds_items_from_a_local_file(tmp_path):
    from spotlib.config import EvalConfig
    from spotlib.evals import get, load_items

    rows = read_jsonl(SAMPLE)[:5]
    path = tmp_path / "c4.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(benchmarks=["connect4"], n_items={"default": 3}, data_files={"connect4": str(path)})
    items = load_items("connect4", cfg)
    assert len(items) == 3
    assert "Intermediate Thinking Results 1" in items[0]["prompt"] and "Current Game Board" in items[0]["prompt"]
    right = connect4.render_answer(rows[2]["answer"], rows[2]["state"])
    assert get("connect4").score(items[2], right)["score"] == 1.0
