"""The benchmarks' CPU paths: the GPU check's FLOP count, the trainer-throughput comparison."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_gpu_check_smoke(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_train_check.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["steps_timed"] == 3 and result["tokens_per_s"] > 0


def test_gpu_trainer_check_smoke_runs_padded_and_packed(tmp_path):
    """benchmarks/gpu_trainer_check.py whole on CPU: both shapes, padded and packed, the same
    losses either way, no padding when packed, MFU/HFU and the paper projection computed."""
    import gpu_trainer_check as g
    result = g.main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "gpu_trainer_check.json").read_text()) == result
    runs = {(r["shape"], r["packing"]): r for r in result["runs"]}
    assert set(runs) == {(s, p) for s in g.SMOKE_SHAPES for p in (False, True)}
    for shape in g.SMOKE_SHAPES:
        padded, packed = runs[shape, False], runs[shape, True]
        assert packed["real_over_computed"] == 1.0 > padded["real_over_computed"]
        assert packed["tokens_real"] == padded["tokens_real"] > 0 and packed["tokens_per_s"] > 0
        assert packed["losses"] == pytest.approx(padded["losses"], abs=1e-4)
        assert packed["hfu"] == packed["mfu"] > 0 and padded["hfu"] > padded["mfu"]   # padding is work, not model FLOPs
        assert packed["settings"]["zero"] == "none" and packed["planned_peak_gib"] > 0
        assert packed["summary_tokens"][0] == packed["summary_tokens"][1]
    projection = result["paper_projection"]
    assert projection["minutes"] > 0 and projection["assumptions"]["gpus"] == 8


def test_step_flops_count_padding_and_recomputation_as_hardware_work():
    import gpu_trainer_check as g
    from spotlib.train.data import Tokenized, TrainData
    data = TrainData([{}] * 2, Tokenized([[1] * 10, [1] * 30], [2, 2]), Tokenized([[1] * 12, [1] * 28], [2, 2]))
    shape = g.SMOKE
    model, hw_packed = g.step_flops(shape, data, [0, 1], 2, padded=False, recompute=False)
    _, hw_padded = g.step_flops(shape, data, [0, 1], 2, padded=True, recompute=False)
    _, hw_recompute = g.step_flops(shape, data, [0, 1], 2, padded=False, recompute=True)
    assert model == hw_packed < hw_padded and hw_packed < hw_recompute
    lengths = [10, 30, 12, 28]
    attn = 6 * shape["num_hidden_layers"] * shape["num_attention_heads"] * shape["head_dim"]
    want = sum(6 * g.layer_params(shape) * n + attn * n * n + 6 * shape["vocab_size"] * shape["hidden_size"] * (n - 2)
               for n in lengths)
    assert model == want


def test_paper_lengths_have_the_papers_mean_and_cap():
    import gpu_trainer_check as g
    lengths = g.paper_lengths(4000, 2048, 8192, 64, seed=0)
    assert max(lengths) <= 8192 and min(lengths) >= 64
    assert 1900 < sum(lengths) / len(lengths) < 2150


def test_flops_per_token_matches_six_n_for_qwen3_0_6b():
    import gpu_train_check as g
    assert 0.40e9 < g.layer_params(g.QWEN3_0_6B) < 0.46e9   # 0.6B minus the 0.16B embedding
    per_token = g.train_flops_per_token(g.QWEN3_0_6B, 2048, 0.75)
    assert 6 * 0.44e9 < per_token < 6 * 0.75e9


# ---- benchmarks/train_throughput.py: spotlib's trainer against its limit and TRL

@pytest.mark.slow
def test_throughput_smoke_limit_and_spotlib_see_one_token_stream(tmp_path, capsys):
    import train_throughput as tt
    result = tt.main(["--smoke", "--sides", "limit,spotlib", "--workdir", str(tmp_path / "job")])
    printed = capsys.readouterr().out
    fp32 = result["precisions"]["fp32"]
    (round_,) = fp32["rounds"]
    limit, spot = round_["limit"], round_["spotlib"]
    # the limit replays spotlib's exact batches: same real tokens at every step
    assert limit["step_tokens"] == spot["step_tokens"] and spot["steps"] == 3 and spot["tokens"] > 0
    assert spot["own_clock_s"] <= spot["wall_s"] * 1.01   # the trainer's own clock leaves out its metrics write
    assert limit["precision"] == spot["precision"] == "fp32"
    share = fp32["ratios"]["of_limit_wall"]["median"]
    assert share == (spot["tokens"] / spot["wall_s"]) / (limit["tokens"] / limit["wall_s"])
    for side in (limit, spot):
        assert side["peak_rss_mb"] >= side["rss_before_mb"] > 50
        if side["peak_reset"]:   # Linux: the training phase's own peak, read apart from the reference pass
            assert side["peak_rss_mb"] == max(side["peak_before_mb"], side["peak_training_mb"])
    assert limit["checkpointing"] is False
    for needle in ("machine:", "native bf16:", "load average at start:", "load average at end:", "spotlib / limit"):
        assert needle in printed


def test_throughput_summary_takes_medians_of_per_round_ratios():
    import train_throughput as tt

    def side(tokens, wall, cpu, peak):
        return {"tokens": tokens, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak, "rss_before_mb": 100, "peak_before_mb": 120,
                "precision": "fp32"}
    # a busy round halves every side's wall rate: the per-round ratio stays, the ratio of medians would not
    rounds = [{"limit": side(1000, 1.0, 1.0, 300), "spotlib": side(1000, 1.25, 1.2, 400), "trl": side(1000, 2.5, 2, 500)},
              {"limit": side(1000, 2.0, 1.0, 300), "spotlib": side(1000, 2.5, 1.2, 400), "trl": side(1000, 5.0, 2, 450)},
              {"limit": side(1000, 0.5, 1.0, 300), "spotlib": side(1000, 2.5, 1.2, 400), "trl": side(1000, 2.5, 2, 400)}]
    s = tt.summarise(rounds)
    assert s["ratios"]["of_limit_wall"]["median"] == 0.8
    assert s["ratios"]["of_limit_wall"]["min"] == 0.2
    assert s["ratios"]["vs_trl_wall"]["median"] == 2.0
    assert abs(s["ratios"]["vs_trl_cpu"]["median"] - 2 / 1.2) < 1e-12
    assert s["ratios"]["memory_vs_trl"]["median"] == 400 / 450
    assert s["sides"]["spotlib"]["wall_tok_s"] == 400.0
    text = "\n".join(tt.report({**s, "rounds": rounds}, "fp32"))
    assert "spotlib / limit  0.80x" in text and "target ≥ 0.80: met (wall), met (CPU)" in text
    assert "spotlib / TRL    2.00x" in text and "target ≥ 1.50: met (wall), met (CPU)" in text


def test_throughput_rejects_unknown_sides_and_too_few_steps(capsys):
    import train_throughput as tt
    with pytest.raises(SystemExit):
        tt.parse_args(["--sides", "spotlib,trlx"])
    assert "--sides: expected a comma-separated subset of limit,spotlib,trl, got 'spotlib,trlx'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tt.parse_args(["--pairs", "16", "--batch", "16"])
    assert "need at least 2 steps" in capsys.readouterr().err


@pytest.mark.slow
def test_throughput_smoke_all_three_sides(tmp_path):
    import train_throughput as tt
    result = tt.main(["--smoke", "--workdir", str(tmp_path / "job")])
    ratios = result["precisions"]["fp32"]["ratios"]
    assert ratios["vs_trl_wall"]["median"] > 0 and ratios["memory_vs_trl"]["median"] > 0
    assert result["precisions"]["fp32"]["rounds"][0]["trl"]["steps"] == 3


def test_throughput_training_peak_is_read_apart_from_the_peak_before(tmp_path):
    import train_throughput as tt
    before = tt.memory_before_training()
    block = bytearray(64 * 2**20)          # touched: 64 MB resident during "training"
    del block
    peaks = tt.peaks(before)
    assert peaks["peak_rss_mb"] >= before["rss_before_mb"] + 60
    if before["peak_reset"]:   # where Linux lets the mark be reset: the training phase's own peak too
        assert peaks["peak_training_mb"] >= before["rss_before_mb"] + 60
        assert peaks["peak_rss_mb"] == max(before["peak_before_mb"], peaks["peak_training_mb"])
    else:
        assert "peak_training_mb" not in peaks


def test_throughput_refuses_a_side_that_checkpointed_otherwise_than_asked(monkeypatch, capsys):
    import train_throughput as tt
    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout='RESULT {"checkpointing": true}\n', stderr="")
    monkeypatch.setattr(tt.subprocess, "run", fake_run)
    asked_on = tt.parse_args(["--gradient-checkpointing"])
    assert tt.run_side("trl", Path("job"), asked_on, 4, False) == {"checkpointing": True}
    assert "--gradient-checkpointing" in commands[-1]
    with pytest.raises(SystemExit, match="the trl side ran with gradient checkpointing True, asked False"):
        tt.run_side("trl", Path("job"), tt.parse_args([]), 4, False)
    assert "--gradient-checkpointing" not in commands[-1]


def test_packing_ratio_counts_the_data_and_the_positions_run():
    import packing_ratio as pr
    result = pr.main(["--profile", "test"])
    for data in ("pairs", "sft_direct"):
        padded, packed = result[data]["padded"], result[data]["packed"]
        assert packed["tokens_real"] == packed["tokens_computed"] == padded["tokens_real"] > 0
        assert padded["tokens_computed"] > padded["tokens_real"] and padded["ratio"] < packed["ratio"] == 1.0
