"""λ⁺, λ⁻ and δ along a run, read back from metrics.jsonl, and the BCO weights derived from them."""
import math

import pytest

from spotlib.io import read_jsonl, write_jsonl
from spotlib.losses import sigmoid
from spotlib.analysis.tether import tether_curve

BETA = 0.1


def _records():
    rows = [{"kind": "probe", "step": 0, "kl/probe": 0.0, "fixed/rewards_chosen": 0.0, "fixed/rewards_rejected": 0.0}]
    for step, (rc, rr, delta) in enumerate([(0.0, 0.0, 0.0), (2.0, -1.0, 0.5), (8.0, -6.0, 1.0)], start=1):
        rows.append({"kind": "train", "step": step, "rewards/chosen": rc, "rewards/rejected": rr, "delta": delta,
                     "tether/chosen": BETA * sigmoid(delta - rc), "tether/rejected": BETA * sigmoid(rr - delta)})
    rows.append({"kind": "probe", "step": 3, "kl/probe": 0.2, "fixed/rewards_chosen": 5.0,
                 "fixed/rewards_rejected": -4.0})
    return rows[::-1]  # order on disk does not matter


def test_curve_has_rewards_delta_measured_and_derived_weights(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", _records())
    curve = tether_curve(tmp_path / "metrics.jsonl", beta=BETA)
    train = curve["train"]
    assert train["step"] == [1, 2, 3] and train["delta"] == [0.0, 0.5, 1.0]
    assert train["r_chosen"] == [0.0, 2.0, 8.0] and train["r_rejected"] == [0.0, -1.0, -6.0]
    assert train["w_chosen"][0] == pytest.approx(BETA / 2) and train["w_rejected"][0] == pytest.approx(BETA / 2)
    assert train["w_chosen"][2] == pytest.approx(BETA * sigmoid(1.0 - 8.0))    # βσ(δ − r⁺)
    assert train["w_rejected"][2] == pytest.approx(BETA * sigmoid(-6.0 - 1.0))  # βσ(r⁻ − δ)
    assert train["w_chosen"] == pytest.approx(train["lambda_chosen"])  # one example per batch: equal
    assert train["w_chosen"][2] < BETA / 100  # the tether has let go
    assert curve["probe"] == {"step": [0, 3], "kl": [0.0, 0.2], "fixed_r_chosen": [0.0, 5.0],
                              "fixed_r_rejected": [0.0, -4.0]}
    bce = tether_curve(_records(), beta=BETA, objective="bce")["train"]  # δ ignored: βσ(−r⁺), βσ(r⁻)
    assert bce["w_chosen"][1] == pytest.approx(BETA * sigmoid(-2.0))


def test_single_sequence_runs_and_empty_files(tmp_path):
    sft = [{"kind": "train", "step": 1, "rewards/chosen": 0.3, "delta": 0.0, "tether/chosen": 0.01}]
    curve = tether_curve(sft, beta=BETA, objective="sft")["train"]
    assert math.isnan(curve["w_chosen"][0]) and math.isnan(curve["r_rejected"][0])
    assert tether_curve(sft, beta=BETA, objective="reward_sft")["train"]["w_chosen"][0] == \
        pytest.approx(BETA * sigmoid(-0.3))
    with pytest.raises(ValueError, match="no rewards/rejected"):
        tether_curve(sft, beta=BETA, objective="bco")
    write_jsonl(tmp_path / "m.jsonl", [{"kind": "probe", "step": 0}])
    with pytest.raises(ValueError, match="no training records"):
        tether_curve(tmp_path / "m.jsonl", beta=BETA)


def test_a_real_bco_run_with_one_example_per_step_matches_the_formula(tmp_path):
    """The trainer's measured λ equal βσ(δ − r⁺), βσ(r⁻ − δ) of its logged rewards and δ."""

    import torch

    from spotlib.config import load_profile
    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import train_run

    from pairs_helpers import micro_pair_inputs

    torch.set_num_threads(1)
    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "train.per_device_batch": 1,
                                              "train.max_steps": 3, "train.lr": {"default": 3e-3},
                                              "train.kl_probe_every": 0, "train.edit_diag_pairs": 0})
    inputs = micro_pair_inputs(profile, tmp_path)
    train_run(profile.train, profile.model, parse_run("spot_bco"), 0, inputs, tmp_path / "run", steps=3,
              device=profile.device, progress=False)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    train = tether_curve(records, beta=profile.train.beta)["train"]
    assert train["step"] == [1, 2, 3]
    assert train["w_chosen"] == pytest.approx(train["lambda_chosen"], rel=1e-5)
    assert train["w_rejected"] == pytest.approx(train["lambda_rejected"], rel=1e-5)
    assert any(abs(r) > 1e-4 for r in train["r_chosen"][1:])  # the rewards moved: not the trivial β/2
