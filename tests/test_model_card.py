"""Model cards: every checkpoint folder gets a README.md that huggingface_hub parses, saying what made
the model; stage 05 adds its scores, stage 06 its GRPO models' rows."""
from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from spotlib.report import model_card
from spotlib.io import file_sha256, read_jsonl
from test_tracking import stage_inputs, stage_profile  # noqa: F401 - the fixture and its profile

pytestmark = pytest.mark.usefixtures("one_thread")


def card_facts(model_dir):
    card = ModelCard.load(model_dir / "README.md")
    return card, card.data.to_dict()


def test_stage_04_and_05_cards(tmp_path, stage_inputs):  # noqa: F811
    from spotlib.stages import evaluate, train_methods

    profile = stage_profile(tmp_path / "out", stage_inputs, **{"eval.n_items": {"default": 2},
                                                               "eval.max_new_tokens": 8})
    train_methods.run(profile, progress=False)
    stage = profile.out / "04_train_spot"
    pairs = profile.out / "03_filter" / "pairs.jsonl"
    for name, run, method in [("spot_bco/seed0", "spot_bco", "spot_bco"), ("sft/seed0", "sft", "sft"),
                              ("tether/spot_bco/seed0", "tether/spot_bco", "spot_bco")]:
        summary = json.loads((stage / name / "summary.json").read_text())
        card, meta = card_facts(stage / name)
        facts = meta["spotlib"]
        assert meta["library_name"] == "transformers" and meta["base_model"] == stage_inputs[0].name
        assert method in meta["tags"] and "profile-test" in meta["tags"]
        assert (facts["run"], facts["seed"], facts["steps"]) == (run, 0, 3)
        assert facts["weights_sha256"] == summary["weights_sha256"]
        assert facts["settings"]["learning rate"] == summary["lr"] and "scores" not in facts
        assert "Not evaluated yet" in card.text
    bco = card_facts(stage / "spot_bco/seed0")[1]["spotlib"]
    assert bco["data"] == [{"file": "03_filter/pairs.jsonl", "sha256": file_sha256(pairs),
                            "examples": len(read_jsonl(pairs))}]
    assert bco["settings"]["δ mode"] == "running_mean" and bco["settings"]["β"] == profile.train.beta
    tether = card_facts(stage / "tether/spot_bco/seed0")[1]["spotlib"]
    assert tether["settings"]["learning rate"] == profile.train.tether_lr   # the lesson's own LR
    sft = card_facts(stage / "sft/seed0")[1]["spotlib"]
    assert sft["data"][0]["file"] == "03_filter/sft_direct.jsonl" and "δ mode" not in sft["settings"]

    result = evaluate.run(profile, progress=False)
    for row in result["models"]:
        if row["run"] == "base":
            continue
        card, meta = card_facts(stage / row["model"])
        scores = meta["spotlib"]["scores"]
        assert set(profile.eval.benchmarks) <= set(scores)
        assert all(scores[b] == pytest.approx(row[b], abs=0.01) for b in profile.eval.benchmarks)
        assert "stage 05" in card.text and "| arith |" in card.text
    # stage 04 again (its runs complete): the cards keep their scores
    before = (stage / "spot_bco/seed0/README.md").read_text()
    train_methods.run(profile, progress=False)
    plan = train_methods.plan_stage(profile)
    summary = json.loads((stage / "spot_bco/seed0/summary.json").read_text())
    model_card.training_card(profile, plan, plan.runs[1], 0, stage / "spot_bco/seed0", summary)
    assert (stage / "spot_bco/seed0/README.md").read_text() == before
    # ... but a card written for other weights drops them
    model_card.training_card(profile, plan, plan.runs[1], 0, stage / "spot_bco/seed0",
                             dict(summary, weights_sha256="0" * 64))
    assert "scores" not in card_facts(stage / "spot_bco/seed0")[1]["spotlib"]


def test_grpo_card_and_scores_leave_the_start_models_fingerprint_alone(tmp_path):
    from rl_helpers import micro_model
    from spotlib.config import load_profile
    from spotlib.stages.rl_init import fingerprint

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    start = micro_model(profile.out / "04_train_spot" / "spot_bco" / "seed0")
    final = micro_model(profile.out / "06_rl_init" / "spot_bco" / "seed0" / "final")
    before = fingerprint(start)
    model_card.grpo_card(profile, "spot_bco", start, final, steps=2, n_prompts=8, prompts_hash="abc")
    card, meta = card_facts(final)
    assert meta["base_model"] == "04_train_spot/spot_bco/seed0" and "grpo" in meta["tags"]
    assert meta["spotlib"]["steps"] == 2 and meta["spotlib"]["settings"]["learning rate"] == profile.rl.lr
    assert model_card.add_scores(final, {"arith": 12.5}, "stage 06 (06_rl_init/table4.csv)")
    assert card_facts(final)[1]["spotlib"]["scores"] == {"arith": 12.5}
    # a card in the start model's folder is not part of what stage 06 keys its runs by
    model_card.add_scores(start, {"arith": 1.0}, "x") or (start / "README.md").write_text("---\n---\nnotes\n")
    assert fingerprint(start) == before
    assert not model_card.add_scores(tmp_path, {"arith": 1.0}, "x")   # no card, nothing written


def test_stage_06_cards_carry_their_table_4_rows(tmp_path):
    from rl_helpers import micro_model
    from spotlib.config import load_profile
    from spotlib.stages import rl_init

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    starts = {"base": micro_model(profile.out / "base_model"),
              "spot_bco": micro_model(profile.out / "04_train_spot" / "spot_bco" / "seed0")}
    runs = {m: {"final": str(micro_model(profile.out / "06_rl_init" / m / "seed0" / "final")), "steps": 2}
            for m in starts}
    scores = {"base": {"arith": 0.1}, "GRPO": {"arith": 0.25}, "SPoT": {"arith": 0.3}, "SPoT + GRPO": {"arith": 0.5}}
    rl_init._cards(profile, starts, runs, scores, n_prompts=8, prompts_hash="abc")
    for method, want, base in [("base", 25.0, "base_model"), ("spot_bco", 50.0, "04_train_spot/spot_bco/seed0")]:
        card, meta = card_facts(rl_init.Path(runs[method]["final"]))
        assert meta["spotlib"]["scores"] == {"arith": want} and meta["base_model"] == base
        assert meta["spotlib"]["base_model_hash"] == rl_init.fingerprint(starts[method])
        assert "stage 06" in card.text
