"""Per-sample seeds derived from the item: results independent of order, batching and resume point."""
import shutil

import pytest
import torch

from spotlib.io import read_jsonl
from spotlib.engines.sampling import generate, request_seeds, sample_seed


@pytest.fixture(scope="module")
def micro():
    from spotlib.config import load_profile
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    cfg = load_profile("test").world
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg)
    return build_model(cfg, tokenizer).eval(), tokenizer


PROMPTS = {f"q{i}": text for i, text in enumerate(
    ["What is 2 + 3?", "Name a colour.", "x", "A much longer question about several numbers: 1, 2, 3, 4?",
     "What is 7 * 8?", "Say hi."])}


def _by_key(model, tok, keys, **kw):
    outs = generate(model, tok, [PROMPTS[k] for k in keys], keys=keys, n=2, temperature=1.0, top_p=0.95,
                    max_new_tokens=10, seed=3, backend="transformers", progress=False, **kw)
    return dict(zip(keys, outs))


def test_sample_seed_is_a_function_of_seed_item_and_index():
    assert sample_seed(0, "a", 0) == sample_seed(0, "a", 0)
    seeds = {sample_seed(s, k, j) for s in (0, 1) for k in ("a", "b") for j in (0, 1)}
    assert len(seeds) == 8 and all(0 <= x < 2 ** 31 for x in seeds)
    assert request_seeds(5, ["b", "a"], 2) == request_seeds(5, ["a", "b"], 2)[::-1]


def test_samples_do_not_depend_on_order_batch_or_companions(micro):
    model, tok = micro
    keys = list(PROMPTS)
    full = _by_key(model, tok, keys, batch_size=64)
    assert all(len(v) == 2 for v in full.values())
    assert any(v[0] != v[1] for v in full.values())  # two samples of one item are two draws
    shuffled = _by_key(model, tok, keys[::-1], batch_size=2)
    remainder = _by_key(model, tok, keys[4:], batch_size=2)  # what a resume after 4 items would redo
    assert shuffled == full
    assert remainder == {k: full[k] for k in keys[4:]}
    other_seed = generate(model, tok, [PROMPTS[k] for k in keys], keys=keys, n=2, temperature=1.0, top_p=0.95,
                          max_new_tokens=10, seed=4, backend="transformers", progress=False)
    assert dict(zip(keys, other_seed)) != full


def test_keys_must_match_prompts(micro):
    model, tok = micro
    with pytest.raises(ValueError, match="2 keys for 1 prompts"):
        generate(model, tok, ["x"], keys=["a", "b"], backend="transformers", progress=False)


SMALL = {"sample.num_problems": 12, "sample.max_new_tokens": 32}


def small_profile(source, folder):
    """The test profile, smaller, in `folder`, with the session's pre-trained base model copied in."""
    from spotlib.config import load_profile

    profile = load_profile("test", overrides={"output_dir": str(folder), **SMALL})
    shutil.copytree(source.base_model_path(), profile.base_model_path())
    return profile


def test_stage_01_killed_and_resumed_equals_an_uninterrupted_run(sampled_profile, tmp_path, monkeypatch):
    from spotlib.stages import sample

    whole = small_profile(sampled_profile, tmp_path / "whole")
    sample.run(whole, progress=False)  # uninterrupted: one chunk, one batch
    reference = read_jsonl(whole.stage_dir("01_sample") / "all.jsonl")

    # Chunks of 4 problems, killed while grading the second chunk: 4 samples kept.
    profile = small_profile(sampled_profile, tmp_path / "resumed")
    real_grade, calls = sample.grade, []

    def grade_then_die(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_grade(*args)

    monkeypatch.setattr(sample, "CHUNK", 4)
    monkeypatch.setattr(sample, "grade", grade_then_die)
    with pytest.raises(KeyboardInterrupt):
        sample.run(profile, progress=False)
    assert len(read_jsonl(profile.stage_dir("01_sample") / "all.jsonl")) == 4

    # Resumed in other chunks (so other batches): the remaining 8 problems, 3 at a time.
    monkeypatch.setattr(sample, "CHUNK", 3)
    monkeypatch.setattr(sample, "grade", real_grade)
    sample.run(profile, progress=False)
    resumed = read_jsonl(profile.stage_dir("01_sample") / "all.jsonl")

    def key(r):
        return r["id"], r["sample_id"]

    assert len(resumed) == len(reference) == 12
    assert sorted(resumed, key=key) == sorted(reference, key=key)
    assert len({r["response"] for r in reference}) > 1
