"""An Oracle like the paper's: beyond the minimal edit at the profile's rates, and what stage 03 sees of it."""
import dataclasses
import random

import pytest

from spotlib.config import ConfigError, load_profile
from spotlib.oracle import ProgrammaticOracle
from spotlib.world import make_items, score, student_solution
from spotlib.world.edit import minimal_fix, parse_solution, wrong_steps
from spotlib.oracle.retention import PAPER_RETENTION, retention
from spotlib.world.oracle_rewrite import (OracleBehaviour, beyond_minimal, restart_from, reword_steps, slip_step,
                                          synthetic_errors)

WORLD = load_profile("test").world


def _record_and_fix(seed=0):
    errors = synthetic_errors(WORLD, 30, seed)
    r = next(e for e in errors if len(e["meta"]["ops"]) >= 3)
    fix = minimal_fix(r, r["response"])
    assert fix.mode == "edit" and score(r, fix.text)
    return r, fix


def test_restart_keeps_the_students_text_before_the_step_and_writes_the_rest_in_words():
    r, fix = _record_and_fix()
    steps = parse_solution(fix.text)
    text = restart_from(r, fix.text, 1)
    assert score(r, text) and not wrong_steps(r, parse_solution(text))
    head = fix.text[:fix.text.rfind("\n", 0, steps[1].span[0]) + 1]
    assert text.startswith(head) and "step 2" in text
    after = parse_solution(text)
    assert not after[0].worded and all(s.worded for s in after[1:])   # step 1 the student's, the rest the Oracle's


def test_reword_changes_the_wording_of_chosen_steps_only():
    r, fix = _record_and_fix()
    text = reword_steps(fix.text, [0, 2])
    before, after = parse_solution(fix.text), parse_solution(text)
    assert [s.worded for s in after] == [True, False, True] + [False] * (len(after) - 3)
    assert [(s.a, s.op, s.b, s.c) for s in after] == [(s.a, s.op, s.b, s.c) for s in before]
    assert score(r, text)


def test_a_carried_slip_makes_the_answer_wrong_and_an_uncarried_one_leaves_a_wrong_step():
    r, fix = _record_and_fix()
    failed = slip_step(r, fix.text, 0, carried=True)
    assert not score(r, failed)
    assert parse_solution(failed)[1].a == parse_solution(failed)[0].c      # the slip is carried along
    wrong = slip_step(r, fix.text, 0, carried=False)
    assert score(r, wrong) and wrong_steps(r, parse_solution(wrong)) == [0]


def test_the_oracle_does_each_thing_at_its_rate_and_the_same_item_gives_the_same_text():
    rates = OracleBehaviour(restart=0.5, reword=0.3, fail=0.1, wrong_step=0.1)
    oracle = ProgrammaticOracle(0, rates)
    errors = synthetic_errors(WORLD, 600, 1)
    did = [oracle.fix(r, r["response"]).info["beyond_minimal"] for r in errors]
    n = len(did)
    share = lambda key, value: sum(d[key] == value for d in did) / n  # noqa: E731
    for key, value, rate in (("rewrite", "restart", 0.5), ("rewrite", "reword", 0.3), ("slip", "fail", 0.1),
                             ("slip", "wrong_step", 0.1)):
        assert abs(share(key, value) - rate) < 4 * (rate * (1 - rate) / n) ** 0.5, (value, share(key, value))
    again = ProgrammaticOracle(0, rates)
    assert [again.fix(r, r["response"]).text for r in errors[:20]] == [oracle.fix(r, r["response"]).text
                                                                        for r in errors[:20]]
    # the minimal-edit Oracle: same fingerprint (cached replies stay valid) and the minimal edit itself
    assert ProgrammaticOracle(0, OracleBehaviour()).fingerprint() == ProgrammaticOracle(0).fingerprint()
    assert ProgrammaticOracle(0, rates).fingerprint() != ProgrammaticOracle(0).fingerprint()
    r = errors[0]
    assert ProgrammaticOracle(0).fix(r, r["response"]).text == minimal_fix(r, r["response"]).text


def test_beyond_minimal_restarts_no_later_than_the_first_wrong_step():
    r, fix = _record_and_fix()
    for seed in range(30):
        _, did = beyond_minimal(r, fix.text, 1, random.Random(seed), OracleBehaviour(restart=1.0))
        assert did["rewrite"] == "restart" and did["from_step"] in (0, 1)


def test_restarts_from_the_first_step_at_their_share_and_only_where_it_is_set():
    r, fix = _record_and_fix()
    first_wrong = 2
    for share in (0.0, 0.5, 1.0):
        behaviour = OracleBehaviour(restart=1.0, restart_first=share)
        starts = [beyond_minimal(r, fix.text, first_wrong, random.Random(seed), behaviour)[1]["from_step"]
                  for seed in range(400)]
        uniform_zero = 1 / (first_wrong + 1)   # the uniform draw's own share of step 1
        expected = share + (1 - share) * uniform_zero
        assert abs(starts.count(0) / 400 - expected) < 4 * (expected * (1 - expected) / 400) ** 0.5 + 1e-9, share
    # unset, the draws (and so the texts and the reply cache's fingerprint) are those of profiles before it
    plain = OracleBehaviour(restart=0.6, reword=0.2)
    assert ProgrammaticOracle(0, plain).settings()["behaviour"] == {"restart": 0.6, "reword": 0.2, "fail": 0.0,
                                                                     "wrong_step": 0.0}
    assert (ProgrammaticOracle(0, dataclasses.replace(plain, restart_first=0.3)).fingerprint()
            != ProgrammaticOracle(0, plain).fingerprint())


def test_the_tiny_oracle_on_corpus_style_errors_and_what_restarts_from_the_first_step_move():
    """The tiny profile's rates meet the paper's retention points on the student's own errors (stage 03,
    `python -m spotlib.oracle.retention --profile tiny`); on corpus-style slips the first point holds too,
    and restarts from the first step move only the second (they land beyond R = 0.7)."""
    from spotlib.world.tokenizer import build_tokenizer

    profile = load_profile("tiny")
    errors, tokenizer = synthetic_errors(profile.world, 1000, 0), build_tokenizer(profile.world)
    result = retention(profile, errors, tokenizer)
    assert abs(result["within"]["0.5"] - PAPER_RETENTION["0.5"]) < 0.04, result["within"]
    assert 0.40 < result["within"]["0.7"] < PAPER_RETENTION["0.7"] + 0.04, result["within"]
    uniform = retention(load_profile("tiny", overrides={"oracle.restart_first_rate": 0.0}), errors, tokenizer)
    assert abs(uniform["within"]["0.5"] - result["within"]["0.5"]) < 0.02
    assert uniform["within"]["0.7"] > result["within"]["0.7"] + 0.03
    assert 0.9 < result["success_rate"] < 0.99 and 0.01 < result["wrong_step_rate"] < 0.06
    minimal_only = {f"oracle.{k}": 0.0 for k in ("restart_rate", "reword_rate", "fail_rate", "wrong_step_rate")}
    minimal = retention(load_profile("tiny", overrides=minimal_only), synthetic_errors(profile.world, 200, 0), build_tokenizer(profile.world))
    assert minimal["within"]["0.5"] == 1.0 and minimal["success_rate"] == 1.0   # the minimal edit: nothing to filter


@pytest.mark.parametrize("overrides,key", [({"oracle.restart_rate": 1.5}, "oracle.restart_rate"),
                                           ({"oracle.fail_rate": -0.1}, "oracle.fail_rate"),
                                           ({"oracle.restart_first_rate": 1.2}, "oracle.restart_first_rate"),
                                           ({"oracle.restart_rate": 0.7, "oracle.reword_rate": 0.4},
                                            "oracle.restart_rate \\+ oracle.reword_rate"),
                                           ({"oracle.kind": "openai", "oracle.base_url": "http://x",
                                             "oracle.reword_rate": 0.1}, "oracle.reword_rate")])
def test_bad_oracle_rates_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_profile("test", overrides=overrides)


def test_an_unfiltered_run_reads_the_gamma_one_pairs(tmp_path):
    from spotlib.io import write_jsonl
    from spotlib.train.data import load_examples
    from spotlib.train.runspec import parse_run

    pair = lambda i, tag: {"id": f"p{i}", "prompt": "q", "chosen": f"good {tag}", "rejected": "bad"}  # noqa: E731
    write_jsonl(tmp_path / "pairs.jsonl", [pair(0, "filtered")])
    write_jsonl(tmp_path / "pairs_unfiltered.jsonl", [pair(1, "unfiltered")])
    run = parse_run("spot_bco@unfiltered")
    assert run.name == "spot_bco@unfiltered" and run.info.pairs
    assert [e["chosen"] for e in load_examples(tmp_path, run)] == ["good unfiltered"]
    assert [e["chosen"] for e in load_examples(tmp_path, parse_run("spot_bco"))] == ["good filtered"]


def test_the_retention_command_takes_other_oracle_rates(tmp_path, capsys):
    """`--set oracle.KEY=VALUE` runs the profile's Oracle with another rate; other keys and a wrong
    value are refused with the key named."""
    import json

    from spotlib.oracle.retention import main

    slips = ["--profile", "test", "--errors", str(tmp_path / "none.jsonl"), "-n", "120"]   # no file: synthetic slips
    main([*slips, "--set", "oracle.restart_rate=1.0", "--set", "oracle.reword_rate=0"])
    restarts = json.loads(capsys.readouterr().out)
    main([*slips, "--set", "oracle.restart_rate=0", "--set", "oracle.reword_rate=0"])
    minimal = json.loads(capsys.readouterr().out)
    assert restarts["within"]["0.5"] < minimal["within"]["0.5"]
    assert all(k.startswith("restart/") for k in restarts["did"]) and not any(k.startswith("restart/") for k in minimal["did"])
    with pytest.raises(SystemExit):
        main(["--profile", "test", "--set", "train.lr=1"])
    with pytest.raises(Exception, match="restart_rate"):
        main([*slips, "--set", "oracle.restart_rate=2"])
