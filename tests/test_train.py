"""The trainer on a micro model: log-probs, run specs, exact resume, BCO learning, the stage."""
import dataclasses
import json
import random
import shutil

import pytest
import torch

from pairs_helpers import change_one_result, save_untrained_student
from spotlib import world
from spotlib.config import load_profile
from spotlib.io import read_jsonl, write_jsonl
from spotlib.launch import run_units
from spotlib.tokens import build_completion_batch, sequence_logps
from spotlib.train import data as D
from spotlib.train.logps import completion_logps, reference_sums
from spotlib.train.probes import first_edit_regions
from spotlib.train.runspec import parse_run, plan_runs
from spotlib.train.trainer import RunInputs, train_run


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A micro Qwen3 with the world's tokenizer, saved like a base model."""
    path = tmp_path_factory.mktemp("base")
    save_untrained_student(path, load_profile("test").world)
    return path


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory):
    profile = load_profile("test")
    items = world.make_items("arith", 16, "train", world_cfg=profile.world)
    rng = random.Random(0)
    pairs, direct, plus = [], [], []
    for it in items:
        good = world.student_solution(it, rng)
        pairs.append({"id": it["id"], "prompt": it["prompt"], "rejected": change_one_result(good, rng), "chosen": good,
                      "answer": it["answer"], "source": "rectified"})
        direct.append({"id": it["id"], "prompt": it["prompt"], "rejected": None,
                       "chosen": world.oracle_solution(it, rng), "answer": it["answer"], "source": "direct"})
        plus.append(dict(pairs[-1]))
    out = tmp_path_factory.mktemp("outputs")
    d = out / "03_filter"
    write_jsonl(d / "pairs.jsonl", pairs)
    write_jsonl(d / "sft_plus.jsonl", plus)
    write_jsonl(d / "sft_direct.jsonl", direct)
    write_jsonl(d / "rft.jsonl", [dict(p, source="rft") for p in direct])
    probes = world.make_items("facts", 2, "probe", world_cfg=profile.world) + \
        world.make_items("format", 2, "probe", world_cfg=profile.world)
    write_jsonl(out / "probe.jsonl", probes)
    return d


def _profile(tmp_path, base, filter_dir, **train):
    overrides = {"output_dir": str(filter_dir.parent), "model.name_or_path": str(base),
                 "train.kl_probe_file": str(filter_dir.parent / "probe.jsonl"), "train.kl_probe_max_tokens": 8}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    profile = load_profile("test", overrides=overrides)
    return profile


def test_completion_logps_equal_sequence_logps(base):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    batch = build_completion_batch(tok, ["Compute 1 + 2.", "Hi"], ["1 + 2 = 3", "hello there friend"], 64)
    want, counts = sequence_logps(model, batch)
    got = completion_logps(model, batch)
    assert torch.allclose(got.sums, want, atol=1e-4)
    assert torch.equal(got.counts, counts)


def test_run_spec_names_and_errors():
    assert parse_run("spot_bco").name == "spot_bco"
    run = parse_run("spot_bco@direct:ema")
    assert (run.method, run.data, run.delta_mode, run.name, run.dirname) == \
        ("spot_bco", "direct", "ema", "spot_bco@direct:ema", "spot_bco@direct~ema")
    assert parse_run("sft_plus@direct").data == "direct"
    assert parse_run("spot_bco:running_mean").name == "spot_bco"
    for bad, msg in [("spot", "unknown method"), ("dpo:ema", "spot_bco only"), ("dpo@rft", "y⁻"),
                     ("spot_bco:median", "δ mode"), ("sft@books", "unknown data"), ("a b", "expected")]:
        with pytest.raises(ValueError, match=msg):
            parse_run(bad)

    class Cfg:
        methods, ablations, delta_mode = ["sft", "spot_bco"], ["spot_bco:running_mean", "spot_bco:ema"], "running_mean"
    assert [r.name for r in plan_runs(Cfg)] == ["sft", "spot_bco", "spot_bco:ema"]


def test_step_rows_cover_epochs_in_seeded_order():
    rows = [D.step_rows(10, 3, s, 4) for s in range(5)]
    flat = sum(rows, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert rows == [D.step_rows(10, 3, s, 4) for s in range(5)]
    assert flat[:10] != sum([D.step_rows(10, 4, s, 4) for s in range(3)], [])[:10]


def test_first_edit_regions():
    assert first_edit_regions([1, 2, 3, 4, 5], [1, 2, 9, 4, 5]) == [0, 0, 1, 2, 2]
    assert first_edit_regions([1, 2], [1, 2]) == [0, 0]


def _inputs(profile, run, base, filter_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    examples = D.load_examples(filter_dir, run)
    data = D.prepare(tok, examples, profile.train.max_len, profile.train.max_prompt_len, run.info.pairs)
    rc, _ = reference_sums(model, data.chosen, tok.pad_token_id, torch.device("cpu"))
    rr = reference_sums(model, data.rejected, tok.pad_token_id, torch.device("cpu"))[0] if run.info.pairs else None
    return RunInputs(data, rc, rr, str(base))


def _train_records(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_resume_reproduces_uninterrupted_run(tmp_path, base, filter_dir):
    profile = _profile(tmp_path, base, filter_dir, max_steps=6, save_every=2, kl_probe_every=0,
                       per_device_batch=2, grad_accum=2, lr={"default": 1e-3})
    run = parse_run("spot_bco")
    inputs = _inputs(profile, run, base, filter_dir)
    def train(profile, run_dir, **kw):
        return train_run(profile.train, profile.model, run, 0, inputs, run_dir, steps=6, device=profile.device,
                         progress=False, **kw)

    full = train(profile, tmp_path / "full")
    partial = train(profile, tmp_path / "resumed", stop_after=3)
    assert not partial["complete"] and (tmp_path / "resumed" / "checkpoint-2").is_dir()
    resumed = train(profile, tmp_path / "resumed")
    assert resumed["complete"] and full["complete"]
    a, b = _train_records(tmp_path / "full"), _train_records(tmp_path / "resumed")
    assert [r["step"] for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        for key in ("loss", "delta", "rewards/chosen", "rewards/rejected", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (ra["step"], key)
    assert a[-1]["delta"] != 0.0
    assert not list((tmp_path / "resumed").glob("checkpoint-*"))
    assert (tmp_path / "resumed" / "model.safetensors").is_file()
    # A completed run is skipped.
    again = train(profile, tmp_path / "full")
    assert again == json.loads((tmp_path / "full" / "summary.json").read_text())
    # Other settings (a new learning rate, as after `make sweep`) never reuse the finished run.
    other = profile.replace(train=dataclasses.replace(profile.train, lr={"default": 5e-4}))
    retrained = train(other, tmp_path / "full")
    assert retrained["complete"] and retrained["lr"] == pytest.approx(5e-4) and full["lr"] == pytest.approx(1e-3)
    assert _train_records(tmp_path / "full")[0]["step"] == 1 and len(_train_records(tmp_path / "full")) == 6


def test_bco_raises_chosen_reward(tmp_path, base, filter_dir):
    profile = _profile(tmp_path, base, filter_dir, max_steps=8, kl_probe_every=0, per_device_batch=4,
                       grad_accum=1, lr={"default": 3e-3}, warmup_ratio=0.0)
    run = parse_run("spot_bco")
    inputs = _inputs(profile, run, base, filter_dir)
    train_run(profile.train, profile.model, run, 0, inputs, tmp_path / "bco", steps=8, device=profile.device,
              progress=False)
    records = _train_records(tmp_path / "bco")
    assert records[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-3)
    assert records[-1]["rewards/chosen"] > 0.1
    assert records[-1]["rewards/margins"] > records[0]["rewards/margins"]
    assert 0 < records[-1]["tether/chosen"] < 0.05  # β σ(δ − r⁺) < β/2 once r⁺ > δ


def test_stage_trains_every_method_with_probes(tmp_path, base, filter_dir):
    from spotlib.stages import train_methods
    profile = _profile(tmp_path, base, filter_dir, max_steps=2, kl_probe_every=2, per_device_batch=2,
                       grad_accum=1, edit_diag_pairs=4,
                       methods=["sft", "rft", "sft_plus", "kl_sft", "reward_sft", "dpo", "spot_bce", "spot_bco"],
                       ablations=["spot_bco@direct", "spot_bco:ema"])
    result = train_methods.run(profile, progress=False)
    assert result["complete"] and result["counts"]["runs"] == 10
    stage = profile.out / "04_train_spot"
    for name in ["sft", "kl_sft", "spot_bco@direct", "spot_bco~ema"]:
        summary = json.loads((stage / name / "seed0" / "summary.json").read_text())
        assert summary["complete"] and summary["steps"] == 2
        probes = [r for r in read_jsonl(stage / name / "seed0" / "metrics.jsonl") if r["kind"] == "probe"]
        assert probes[0]["kl/probe"] == pytest.approx(0.0, abs=1e-3)   # step 0: π_θ = π_ref
        assert probes[-1]["kl/probe"] > 0 and "edit/at" in probes[-1] and "kl/facts" in probes[-1]
        assert "collateral/pushed" in probes[-1]   # the collateral probe rides with the edit diagnostic
    assert list((stage / "reference").glob("collateral-*.pt"))
    # A second call finds the stage fresh and trains nothing.
    assert train_methods.run(profile, progress=False)["complete"]


def _stage_profile(out, base, filter_dir, workers: int):
    shutil.copytree(filter_dir, out / "03_filter")  # stage 03's data only: no runs from other tests
    return load_profile("test", overrides={
        "output_dir": str(out), "model.name_or_path": str(base), "seeds": [0, 1],
        "train.kl_probe_file": str(filter_dir.parent / "probe.jsonl"), "train.kl_probe_max_tokens": 8,
        "train.max_steps": 2, "train.kl_probe_every": 0, "train.per_device_batch": 2, "train.grad_accum": 1,
        "train.methods": ["sft", "spot_bco"], "train.ablations": [], "train.cpu_workers": workers})


def test_stage_shares_runs_among_workers_with_the_weights_of_one_process(tmp_path, base, filter_dir, monkeypatch):
    from spotlib.stages import train_methods
    alone = _stage_profile(tmp_path / "alone", base, filter_dir, workers=1)
    train_methods.run(alone, progress=False)
    shared = _stage_profile(tmp_path / "shared", base, filter_dir, workers=2)
    monkeypatch.setenv("SPOTLIB_PROGRESS", str(tmp_path / "progress.jsonl"))
    result = train_methods.run(shared, progress=True)
    assert result["complete"] and len(result["runs"]) == 4
    logs = [(shared.out / "04_train_spot" / f"worker-share{k}.log").read_text() for k in (0, 1)]
    for seed in (0, 1):
        for run in ("sft", "spot_bco"):
            trained_in = [k for k, log in enumerate(logs) if f"{run:24s} seed {seed}:" in log]
            assert len(trained_in) == 1, (run, seed, trained_in)   # in one worker, not here
            got, want = (json.loads((p.out / "04_train_spot" / run / f"seed{seed}" / "summary.json").read_text())
                         for p in (shared, alone))
            assert got["complete"] and got["steps"] == 2 and got["weights_sha256"] == want["weights_sha256"]
            keys = [(p.out / "04_train_spot" / run / f"seed{seed}" / "run_key.json").read_text()
                    for p in (shared, alone)]
            assert keys[0] == keys[1]
    # By cost (a pair run reads two sequences): each worker holds one spot_bco run, not both.
    assert [log.count("spot_bco                 seed") for log in logs] == [1, 1]
    records = read_jsonl(tmp_path / "progress.jsonl")
    runs_bar = [r for r in records if r["desc"] == "runs"]
    assert runs_bar[-1]["n"] == runs_bar[-1]["total"] == 4 and runs_bar[-1]["closed"]
    # The stage's runs report their steps from the workers (the parent trains only the tether
    # lesson's demonstration run, after them: its steps come last).
    worker_steps = [r for r in records if r["desc"].startswith("spot_bco seed") and r["pid"] != runs_bar[0]["pid"]]
    assert len({r["pid"] for r in worker_steps}) == 2
    parent_steps = [i for i, r in enumerate(records) if r["desc"].startswith("spot_bco seed") and r["pid"] == runs_bar[0]["pid"]]
    assert all(i > records.index(worker_steps[-1]) for i in parent_steps)
    with pytest.raises(ValueError, match="--units 'dpo:0'"):
        run_units.parse_units(["dpo:0"], plan_runs(shared.train), [0, 1])
    assert run_units.parse_units(["sft:1"], plan_runs(shared.train), [0, 1]) == [("sft", 1)]


def test_kl_sft_micro_step_takes_the_token_kl_by_lm_head_chunks(base):
    """kl_sft's loss and gradient with train.logits_chunk_tokens 3 (chunk boundaries inside rows)
    equal the full-vocabulary formula: −log π/|y| + c · Σ_t KL(π ‖ π_ref)_t / |y|."""
    import types

    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from spotlib.train.data import Tokenized, TrainData, collate
    from spotlib.train.logps import CompletionLogpsModel
    from spotlib.train.trainer import _micro_step

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval().requires_grad_(False)
    with torch.no_grad():  # a reference that differs from the policy
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    vocab = lm.config.vocab_size
    g = torch.Generator().manual_seed(3)
    ids = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in (9, 6, 11)]
    chosen = Tokenized(ids=ids, prompt_lens=[4, 2, 5])
    inputs = RunInputs(TrainData([{}] * 3, chosen, None), torch.zeros(3), None, str(base))
    run = types.SimpleNamespace(objective="kl_sft", info=types.SimpleNamespace(pairs=False))
    cfg = types.SimpleNamespace(beta=0.1, kl_coef=0.7, logits_chunk_tokens=3)
    model = CompletionLogpsModel(lm)
    out = _micro_step(model, ref, run, cfg, inputs, [0, 1, 2], 0, torch.device("cpu"), False, None)
    lm.zero_grad(set_to_none=True)
    out["loss"].backward()
    got = [p.grad.clone() for p in lm.parameters()]

    batch = collate(chosen, [0, 1, 2], 0)
    policy = completion_logps(lm, batch, keep_logits=True)
    with torch.no_grad():
        log_q = F.log_softmax(completion_logps(ref, batch, keep_logits=True).logits, -1)
    log_p = F.log_softmax(policy.logits, -1)
    kl_sums = torch.zeros(3).index_add(0, policy.rows, (log_p.exp() * (log_p - log_q)).sum(-1))
    assert float(kl_sums.detach().min()) > 0
    want = (-policy.sums / policy.counts + 0.7 * kl_sums / policy.counts).mean()
    lm.zero_grad(set_to_none=True)
    want.backward()
    assert float(out["loss"]) == pytest.approx(float(want), abs=1e-6)
    for g_, w in zip(got, (p.grad for p in lm.parameters())):
        assert float((g_ - w).abs().max()) <= 1e-6 * max(float(w.abs().max()), 1.0)


def test_stage_names_the_empty_run(tmp_path, base, filter_dir):
    """A student that answers nothing right leaves rft empty: the error names rft, not another run."""
    import shutil

    from spotlib.io import DataError
    from spotlib.stages import train_methods
    d = tmp_path / "03_filter"
    shutil.copytree(filter_dir, d)
    (d / "rft.jsonl").write_text("")
    profile = _profile(tmp_path, base, filter_dir, methods=["sft", "rft", "spot_bco"])
    profile = profile.replace(output_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"run\(s\) rft have no examples"):
        train_methods.plan_stage(profile)
