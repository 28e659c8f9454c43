"""The tiny world's generators, scorers, tokenizer and minimal-edit logic (no model)."""
import random

import pytest

from spotlib.config import load_profile
from spotlib.world import FAMILIES, SPLITS, extract_answer, make_items, oracle_solution, score, student_solution
from spotlib.world.edit import minimal_fix, parse_solution, wrong_steps
from spotlib.world.families import FINAL_LINE, chain_values, expression

WORLD = load_profile("test").world


def test_generators_are_deterministic_per_seed():
    for family in FAMILIES:
        a = make_items(family, 12, "eval", seed=3, world_cfg=WORLD)
        b = make_items(family, 12, "eval", seed=3, world_cfg=WORLD)
        assert a == b
        assert [r["id"] for r in a] == [f"{family}-eval-{i:06d}" for i in range(12)]
    assert make_items("arith", 12, "eval", seed=3) != make_items("arith", 12, "eval", seed=4)


def test_splits_are_disjoint_and_pretraining_never_sees_held_out_arithmetic():
    for family in ("arith", "arith_ood", "format"):
        keys = {}
        n = 60 if family == "format" else 150      # format has ~1900 problems in all
        for split in SPLITS:
            items = make_items(family, n, split, seed=0, world_cfg=WORLD)
            keys[split] = {r["prompt"] for r in items}
            if split != "pretrain":
                assert len(keys[split]) == n, "no repeats inside a held-out split"
        for i, s1 in enumerate(SPLITS):
            for s2 in SPLITS[i + 1:]:
                assert not keys[s1] & keys[s2], (family, s1, s2)
    held = {}
    for split in ("train", "val", "eval", "probe"):
        held[split] = {r["prompt"] for r in make_items("facts", 4, split, world_cfg=WORLD)}
    assert sum(len(v) for v in held.values()) == len(set().union(*held.values()))


def test_records_follow_the_schema_and_answers_are_right():
    for family in FAMILIES:
        for rec in make_items(family, 8 if family == "facts" else 20, "train", world_cfg=WORLD):
            assert set(rec) == {"id", "family", "prompt", "answer", "meta"}
            assert score(rec, student_solution(rec, random.Random(0)))
            assert score(rec, oracle_solution(rec, random.Random(0)))
    rec = make_items("arith", 1, "eval")[0]
    assert rec["answer"] == str(chain_values(rec["meta"]["operands"], rec["meta"]["ops"])[-1])
    assert expression(rec["meta"]["operands"], rec["meta"]["ops"]) in rec["prompt"]


def test_student_has_several_styles_and_the_oracle_another():
    rec = make_items("arith", 1, "eval")[0]
    rng = random.Random(0)
    student = {student_solution(rec, rng) for _ in range(60)}
    oracle = {oracle_solution(rec, rng) for _ in range(20)}
    assert len(student) >= 8
    assert not student & oracle
    for text in student | oracle:
        assert text.endswith(FINAL_LINE.format(rec["answer"]))


@pytest.mark.parametrize("response,expected", [
    ("1 + 2 = 3\nTherefore, the final answer is: $\\boxed{ANS}$.", True),
    ("Therefore, the final answer is: $\\boxed{ANS}$. And that's all.", True),   # extra text after
    ("$\\boxed{ 7 }$ then $\\boxed{ANS}$", True),                                 # the last box wins
    ("$\\boxed{ANS}$ then $\\boxed{7}$", False),
    ("Therefore, the final answer is: $\\boxed{WRONG}$.", False),
    ("Therefore, the final answer is: ANS.", False),                              # no box
    ("Therefore, the final answer is: $\\boxed{ANS", False),                      # unclosed box
    ("Therefore, the final answer is: $\\boxed{ANS.0}$.", False),
    ("", False),
])
def test_arith_scorer_edge_cases(response, expected):
    rec = make_items("arith", 1, "eval")[0]
    wrong = str(int(rec["answer"]) + 1)
    text = response.replace("WRONG", wrong).replace("ANS", rec["answer"])
    assert score(rec, text) is expected
    assert (extract_answer(rec, text) == rec["answer"]) is expected


def test_facts_scorer():
    rec = make_items("facts", 1, "eval", world_cfg=WORLD)[0]
    value = rec["answer"]
    from spotlib.world.families import RELATIONS
    other = next(v for v in RELATIONS[rec["meta"]["relation"]][0] if v != value)
    assert score(rec, rec["meta"]["response"])
    assert score(rec, f"It is {value.upper()}, I think.")
    assert not score(rec, f"It is {other}.")
    assert not score(rec, f"Either {value} or {other}.")     # hedging is wrong
    assert not score(rec, "I do not know.")
    assert extract_answer(rec, "nothing") is None


def test_format_scorer_catches_each_violation():
    rec = {"id": "f", "family": "format", "prompt": "", "answer": "[APPLE APPLE]",
           "meta": {"word": "apple", "case": "upper", "wrap": "square", "count": 2}}
    from spotlib.world.scoring import format_violations
    assert score(rec, "[APPLE APPLE]") and score(rec, "  [APPLE APPLE]\n")
    assert format_violations(rec, "APPLE APPLE") == ["wrapper"]
    assert format_violations(rec, "(APPLE APPLE)") == ["wrapper"]
    assert format_violations(rec, "[APPLE]") == ["count"]
    assert format_violations(rec, "[APPLE APPLE APPLE]") == ["count"]
    assert format_violations(rec, "[apple apple]") == ["case"]
    assert format_violations(rec, "[PEAR PEAR]") == ["word"]
    assert not score(rec, "[APPLE APPLE] done")
    plain = {**rec, "meta": {"word": "apple", "case": "title", "wrap": "none", "count": 1}}
    assert score(plain, "Apple") and not score(plain, "apple") and not score(plain, '"Apple"')


def test_tokenizer_round_trip_digits_and_chat_template():
    from spotlib.world.tokenizer import build_tokenizer
    tok = build_tokenizer(WORLD)
    assert len(tok) == WORLD.vocab_size
    rec = make_items("arith", 1, "eval")[0]
    text = student_solution(rec, random.Random(0))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    pieces = [tok.decode([i]) for i in tok("12345", add_special_tokens=False)["input_ids"]]
    assert pieces == list("12345")
    messages = [{"role": "user", "content": "Hi"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert build_tokenizer(WORLD).get_vocab() == tok.get_vocab()     # deterministic


def _plant(text: str, step: int, field: str, delta: int) -> str:
    s = parse_solution(text)[step]
    lo, hi = s.spans[field]
    return text[:lo] + str(int(text[lo:hi]) + delta) + text[hi:]


def _diff_lines(a: str, b: str) -> list[int]:
    la, lb = a.split("\n"), b.split("\n")
    return [i for i, (x, y) in enumerate(zip(la, lb)) if x != y]


def test_minimal_fix_corrects_a_slip_and_recomputes_what_follows():
    rng = random.Random(0)
    for rec in make_items("arith", 30, "train"):
        gold = student_solution(rec, rng)
        n = len(parse_solution(gold))
        # An arithmetic slip in step 0, carried on consistently by the student afterwards.
        bad = _plant(gold, 0, "c", 10)
        for k in range(1, n):
            bad = _plant(bad, k, "a", 10)
            bad = _plant(bad, k, "c", 10)
        bad = bad.replace("{" + rec["answer"] + "}", "{" + str(int(rec["answer"]) + 10) + "}")
        assert not score(rec, bad)
        result = minimal_fix(rec, bad)
        assert result.mode == "edit" and result.wrong_steps_left == 0
        assert result.text == gold, "only numbers change, the wording is kept"
        assert result.changed_steps == list(range(n)) and result.wrong_steps_before == list(range(n))
        assert result.first_error == "arithmetic" and result.steps_total == n
        assert score(rec, result.text)


def test_minimal_fix_touches_only_the_wrong_step_when_the_rest_is_right():
    rng = random.Random(1)
    rec = next(r for r in make_items("arith", 50, "train") if r["meta"]["n_ops"] == 3)
    gold = student_solution(rec, rng)
    bad = _plant(gold, 1, "b", 1)          # a copied operand in the middle step
    result = minimal_fix(rec, bad)
    assert result.first_error == "copied_operand"
    assert result.text == gold and result.changed_steps == [1]
    assert _diff_lines(bad, result.text) == _diff_lines(bad, gold) and len(_diff_lines(bad, gold)) == 1


def test_minimal_fix_adds_a_dropped_step_and_rewrites_garbage():
    rng = random.Random(2)
    rec = next(r for r in make_items("arith", 50, "train") if r["meta"]["n_ops"] == 3)
    gold = student_solution(rec, rng)
    last = parse_solution(gold)[-1]
    lo = gold.rfind("\n", 0, last.span[0])
    truncated = gold[:lo] + "\n" + FINAL_LINE.format(0)
    result = minimal_fix(rec, truncated)
    assert result.mode == "edit" and score(rec, result.text) and result.first_error == "missing_step"
    assert result.wrong_steps_left == 0
    for junk in ("", "I think it is 5.", "9 9 9 9 9"):
        result = minimal_fix(rec, junk)
        assert result.mode == "rewrite" and score(rec, result.text)
        assert result.text == oracle_solution(rec, random.Random(f"rewrite-{rec['id']}"))


def test_minimal_fix_keeps_the_oracle_wording_too():
    rec = make_items("arith", 1, "train")[0]
    gold = oracle_solution(rec, random.Random(0))
    bad = _plant(gold, 0, "c", 1)
    result = minimal_fix(rec, bad)
    assert result.mode == "edit" and result.text == gold
    assert wrong_steps(rec, parse_solution(result.text)) == []


def test_first_error_positions_point_at_the_first_wrong_step():
    from spotlib.world import first_error_positions

    rng = random.Random(1)
    rec = next(r for r in make_items("arith", 50, "train") if r["meta"]["n_ops"] == 3)
    gold = student_solution(rec, rng)
    n = len(parse_solution(gold))
    middle = _plant(gold, 1, "b", 1)                    # only step 1 of n is wrong
    both = _plant(_plant(gold, 2, "c", 5), 1, "c", 5)   # steps 1 and 2: the first counts
    facts = {"family": "facts", "response": "no steps here"}
    garbage = {**rec, "response": "I think it is 5."}   # rewritten whole: no step to point at
    assert first_error_positions([{**rec, "response": middle}, {**rec, "response": both}, facts, garbage]) == \
        [1 / n, 1 / n]


def test_a_slipped_solution_is_off_by_ten_at_one_step_and_the_oracle_repairs_it_there():
    from spotlib.world.styles import slipped_solution
    rng = random.Random(5)
    for record in make_items("arith", 40, "pretrain", seed=0, world_cfg=WORLD):
        text = slipped_solution(record, rng)
        steps = parse_solution(text)
        wrong = [i for i, s in enumerate(steps) if s.c != (s.a + s.b if s.op == "+" else s.a - s.b)]
        assert len(wrong) == 1                       # one slip; later steps compute from its value
        slip = steps[wrong[0]]
        assert abs(slip.c - (slip.a + slip.b if slip.op == "+" else slip.a - slip.b)) == 10
        assert extract_answer(record, text) != record["answer"] and not score(record, text)
        fixed = minimal_fix(record, text)            # the edit starts where the slip is
        assert fixed.first_error == "arithmetic" and fixed.changed_steps[0] == wrong[0]
        assert fixed.mode == "edit" and score(record, fixed.text)


def test_the_slip_rate_puts_that_share_of_wrong_solutions_in_the_corpus_and_zero_changes_nothing():
    import dataclasses

    from spotlib.world.pretrain import pretrain_examples
    clean = pretrain_examples(WORLD, 400)
    assert pretrain_examples(dataclasses.replace(WORLD, slip_rate=0.0), 400) == clean
    noisy = pretrain_examples(dataclasses.replace(WORLD, slip_rate=0.3), 400)
    records = {r["prompt"]: r for fam in ("arith", "arith_ood")
               for r in make_items(fam, 2000, "pretrain", seed=WORLD.seed, world_cfg=WORLD)}
    arith = [(p, t) for p, t in noisy if p in records]
    wrong = sum(extract_answer(records[p], t) != records[p]["answer"] for p, t in arith)
    assert 0.2 < wrong / len(arith) < 0.4
    changed = [a != b for a, b in zip(noisy, clean)]
    assert sum(changed) == wrong and all(p in records for (p, _), c in zip(noisy, changed) if c)


def test_slip_rate_outside_zero_to_one_is_a_config_error():
    from spotlib.config import ConfigError
    with pytest.raises(ConfigError, match="world.slip_rate"):
        load_profile("test", overrides={"world.slip_rate": 1.0})


def test_the_oracle_style_prefix_goes_before_the_oracle_worded_examples_only():
    import dataclasses

    from spotlib.world.pretrain import pretrain_examples, world_hash
    from spotlib.world.edit import is_oracle_worded
    world = dataclasses.replace(WORLD, mix={"arith": 0.5, "oracle_style": 0.5})
    plain = pretrain_examples(world, 200)
    prefixed = pretrain_examples(dataclasses.replace(world, oracle_style_prefix="In a textbook: "), 200)
    oracle_worded = [is_oracle_worded(text) for _, text in plain]
    assert 50 < sum(oracle_worded) < 150
    for (p0, t0), (p1, t1), oracle in zip(plain, prefixed, oracle_worded):
        assert t1 == t0                               # the same solutions, only the context differs
        assert p1 == ("In a textbook: " + p0 if oracle else p0)
    assert world_hash(dataclasses.replace(world, oracle_style_prefix="x")) != world_hash(world)
    # no prefix keeps the hash world-h's base model was made under before the setting existed
    # (machine-independent on pinned kernels): a new world setting must not orphan the cached models
    assert world_hash(load_profile("params/calibration/world-h.yaml").world) == "df96eb4f32cbd50d"
    assert world_hash(load_profile("tiny").world) == "9fd488b5422acac3"          # world-n, with its prefix


def test_oracle_wording_is_told_from_the_students():
    from spotlib.world.edit import is_oracle_worded
    rng = random.Random(0)
    for record in make_items("arith", 20, "eval", seed=0, world_cfg=WORLD):
        assert is_oracle_worded(oracle_solution(record, rng))
        assert not is_oracle_worded(student_solution(record, rng))


def test_tie_word_embeddings_is_a_world_setting_the_model_obeys_and_the_hash_holds(tmp_path):
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM

    from spotlib.world.pretrain import save_untrained, world_hash
    untied = dataclasses.replace(WORLD, tie_word_embeddings=False)
    # the default (tied) keeps every earlier world's hash; untying changes it, and only the setting does
    assert world_hash(dataclasses.replace(WORLD, tie_word_embeddings=True)) == world_hash(WORLD)
    assert world_hash(untied) != world_hash(WORLD)
    assert world_hash(load_profile("params/calibration/world-n-untied.yaml").world) != \
        world_hash(load_profile("params/calibration/world-n.yaml").world)
    assert world_hash(dataclasses.replace(load_profile("params/calibration/world-n-untied.yaml").world,
                                          tie_word_embeddings=True)) == \
        world_hash(load_profile("params/calibration/world-n.yaml").world)
    for cfg, tied in ((WORLD, True), (untied, False)):
        save_untrained(cfg, tmp_path / str(tied))
        model = AutoModelForCausalLM.from_pretrained(tmp_path / str(tied))   # as every stage loads it
        head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
        assert (head.data_ptr() == emb.data_ptr()) is tied
        if not tied:   # separate tensors: a step on the head leaves the input embeddings where they were
            before = emb.detach().clone()
            with torch.no_grad():
                head[9] += 1.0
            assert torch.equal(emb, before)
