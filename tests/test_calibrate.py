"""The world's calibration targets, computed from hand-made stage outputs."""
import math

import pytest

from spotlib.analysis import calibrate


def _nll(direct, y_plus):
    return {"direct": {"nll_per_token": direct}, "y_plus": {"nll_per_token": y_plus},
            "y_minus": {"nll_per_token": 0.05}}


def test_headroom_band_edges():
    assert calibrate.headroom({"arith": 0.40})["met"]
    assert calibrate.headroom({"arith": 0.70})["met"]
    assert not calibrate.headroom({"arith": 0.735})["met"]
    assert calibrate.headroom({"arith": 0.735})["score"] == pytest.approx(73.5)


def test_off_policy_ratio():
    assert calibrate.off_policy(_nll(0.20, 0.10))["met"]
    low = calibrate.off_policy(_nll(0.102, 0.081))
    assert low["ratio"] == pytest.approx(0.102 / 0.081) and not low["met"]


BASES = {0: {"arith": 50.0, "facts": 90.0, "format": 90.0},
         1: {"arith": 52.0, "facts": 92.0, "format": 90.0},
         2: {"arith": 48.0, "facts": 88.0, "format": 90.0}}


def _points(lr, gains, facts_losses):
    return [{"run": "sft", "lr": lr, "seed": s, "arith": BASES[s]["arith"] + g,
             "facts": BASES[s]["facts"] - f, "format": 90.0}
            for s, g, f in zip(BASES, gains, facts_losses)]


def test_forgetting_is_judged_at_the_best_in_domain_lr():
    points = (_points(1e-5, [1, 1, 1], [0, 0, 0]) + _points(1e-4, [6, 5, 7], [6, 7, 8])
              + _points(3e-4, [2, 2, 2], [30, 30, 30]))
    result = calibrate.forgetting(points, BASES)
    assert result["lr"] == 1e-4 and result["family"] == "facts"
    assert result["loss"] == pytest.approx(7.0)
    assert result["loss_se"] == pytest.approx(math.sqrt(1.0 / 3))
    assert result["met"]


def test_forgetting_needs_loss_beyond_noise_and_three_seeds():
    noisy = calibrate.forgetting(_points(1e-4, [5, 5, 5], [0, 0, 18]), BASES)
    assert noisy["loss"] == pytest.approx(6.0) and not noisy["met"]  # SE 6: not beyond 2 SE
    two = calibrate.forgetting(_points(1e-4, [5, 5, 5], [6, 7, 8])[:2], BASES)
    assert two["n_seeds"] == 2 and not two["met"]
    small = calibrate.forgetting(_points(1e-4, [5, 5, 5], [3, 3, 3.3]), BASES)
    assert not small["met"]


def test_markdown_names_each_target():
    result = {"temperature": 0.7, "headroom": calibrate.headroom({"arith": 0.6}),
              "off_policy": calibrate.off_policy(_nll(0.2, 0.1)),
              "forgetting": calibrate.forgetting(_points(1e-4, [6, 5, 7], [6, 7, 8]), BASES)}
    text = calibrate.markdown(result)
    assert "60.0 %" in text and "2.00×" in text and "facts loss +7.0" in text and "**not met**" not in text


def test_a_base_model_outside_the_gate_ends_the_calibration_with_its_reason(tmp_path, monkeypatch):
    """No traceback and no stages run on a model stage 01 would refuse: the calibration says why."""
    import json

    import spotlib.config
    from spotlib.config import load_profile
    from spotlib.world import pretrain

    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "base_gate.mode": "enforce",
                                              "base_gate.targets": {"arith": [0.4, 0.7]}})
    base = profile.base_model_path()
    base.mkdir(parents=True)
    (base / "manifest.json").write_text(json.dumps({"world_hash": "x", "world": {"cpu_kernels": "avx2"},
                                                    "stats": {"machine": {"kernels": "AVX2"}},
                                                    "heldout_scores": {"T=0.7": {"arith": 0.24}}}))
    monkeypatch.setattr(pretrain, "ensure_base_model", lambda p, progress=True: base)
    monkeypatch.setattr(calibrate, "_run", lambda args: pytest.fail(f"ran {args}"))
    monkeypatch.setattr(spotlib.config, "load_profile", lambda arg: profile)
    result = calibrate.calibrate("test")
    assert not result["met"] and not result["headroom"]["met"] and result["forgetting"] is None
    text = (tmp_path / "calibration" / "calibration.md").read_text()
    assert "24.0 %" in text and "not measured" in text and "arith 0.24 (target 0.40-0.70)" in text
    assert json.loads((tmp_path / "calibration" / "calibration.json").read_text())["stopped"].startswith("base model outside")
