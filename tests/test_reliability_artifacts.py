"""Results belong to the weights that made them; corrupt or stale files are never trusted."""
import json
import shutil

import pytest
import torch

from spotlib.config import load_profile
from spotlib.io import DataError, read_jsonl, weights_bytes, weights_sha256


def _micro_base(profile):
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    base = profile.base_model_path()
    tokenizer = build_tokenizer(profile.world)
    build_model(profile.world, tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


def _checkpoint(profile, base, run, seed):
    ckpt = profile.out / "04_train_spot" / run / f"seed{seed}"
    if ckpt.exists():
        shutil.rmtree(ckpt)
    shutil.copytree(base, ckpt)
    (ckpt / "summary.json").write_text(json.dumps({
        "run": run, "method": run, "seed": seed, "complete": True,
        "weights_sha256": weights_sha256(ckpt), "weights_bytes": weights_bytes(ckpt)}))
    return ckpt


def _perturb(ckpt):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ckpt)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(ckpt)
    summary = json.loads((ckpt / "summary.json").read_text())
    summary.update(weights_sha256=weights_sha256(ckpt), weights_bytes=weights_bytes(ckpt))
    (ckpt / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def eval_profile(tmp_path):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "train.methods": ["spot_bco"],
                                              "eval.n_items": {"default": 1}, "eval.max_new_tokens": 6})
    base = _micro_base(profile)
    _checkpoint(profile, base, "spot_bco", 0)
    return profile, base


def test_retrained_model_is_evaluated_anew_and_leftovers_are_ignored(eval_profile):
    """Finding 2: new weights under the same run name get new scores; unnamed runs stay out."""
    from spotlib.stages import evaluate

    profile, base = eval_profile
    _checkpoint(profile, base, "sft", 0)            # a run the profile no longer names
    evaluate.run(profile, progress=False)
    stage = profile.out / "05_eval_forgetting"
    first = read_jsonl(stage / "results.jsonl")
    assert {r["model"] for r in first} == {"base/seed0", "spot_bco/seed0"}
    assert "sft" not in (stage / "table.md").read_text()

    ckpt = profile.out / "04_train_spot" / "spot_bco" / "seed0"
    old_identity = weights_sha256(ckpt)[:16]
    _perturb(ckpt)
    summary = evaluate.run(profile, progress=False)
    records = read_jsonl(stage / "results.jsonl")
    new = [r for r in records if r["model"] == "spot_bco/seed0" and r["identity"] != old_identity]
    assert len(new) == 4                               # every item of the 4 benchmarks, anew
    assert {r["identity"] for r in new} == {weights_sha256(ckpt)[:16]}
    base_records = [r for r in records if r["model"] == "base/seed0"]
    assert len(base_records) == 4                     # unchanged base: not evaluated twice
    reported = json.loads((stage / "results.json").read_text())
    assert reported["runs"] == json.loads(json.dumps(summary["runs"], default=str))


def test_missing_named_checkpoint_is_named_in_the_error(eval_profile):
    from spotlib.stages import evaluate

    profile, _ = eval_profile
    profile = profile.replace(train=profile.train.__class__(**{**profile.train.__dict__,
                                                               "methods": ["spot_bco", "sft_plus"]}))
    with pytest.raises(DataError, match=r"sft_plus/seed0.*run stage 04 first"):
        evaluate.run(profile, progress=False)


def test_truncated_checkpoint_is_named_and_not_counted_done(eval_profile):
    """Finding 6: a torn stage-04 model is not a finished run, and 05 names its folder."""
    from spotlib.stages import evaluate
    from spotlib.train.trainer import finished_summary

    profile, _ = eval_profile
    ckpt = profile.out / "04_train_spot" / "spot_bco" / "seed0"
    assert finished_summary(ckpt) is not None and finished_summary(ckpt, full=False) is not None
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert finished_summary(ckpt) is None and finished_summary(ckpt, full=False) is None
    with pytest.raises(DataError, match=f"{ckpt}.*(corrupt|partly written).*re-run stage 04"):
        evaluate.run(profile, progress=False)


def test_corrupt_base_model_is_pretrained_again(tmp_path, monkeypatch):
    from spotlib.world import pretrain

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    calls = []

    def fake_pretrain(world_cfg, progress=True):
        from spotlib.world.pretrain import build_model
        from spotlib.world.tokenizer import build_tokenizer

        calls.append(1)
        tok = build_tokenizer(world_cfg)
        return build_model(world_cfg, tok), tok, {}

    monkeypatch.setattr(pretrain, "pretrain", fake_pretrain)
    profile = profile.replace(world=profile.world.__class__(**{**profile.world.__dict__, "manifest_eval_items": 0}))
    out = pretrain.ensure_base_model(profile, progress=False)
    pretrain.ensure_base_model(profile, progress=False)
    assert len(calls) == 1                      # whole and matching: reused
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    pretrain.ensure_base_model(profile, progress=False)
    assert len(calls) == 2                      # truncated: made again, not trusted
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out)   # and it loads


def test_torn_reference_cache_is_recomputed(tmp_path):
    from spotlib.train.logps import cached

    path = tmp_path / "logps-x.pt"
    assert torch.equal(cached(path, lambda: torch.arange(5)), torch.arange(5))
    path.write_bytes(path.read_bytes()[:20])
    assert torch.equal(cached(path, lambda: torch.arange(7)), torch.arange(7))
    assert torch.equal(cached(path, lambda: 1 / 0), torch.arange(7))   # whole again: loaded


def test_stale_nll_figure_is_removed(tmp_path):
    from spotlib.report.plots import save_filter_figures

    (tmp_path / "nll.png").write_bytes(b"old figure")
    report = {"unit": "tokens", "kept_by_gamma": {"0.5": 0}}
    files = save_filter_figures(report, [], tmp_path, 0.6)
    assert not (tmp_path / "nll.png").exists()
    assert [f.name for f in files] == ["proximity.png"]
