"""The trainer across processes (CPU, gloo, `torchrun --nproc_per_node 2`): 2 processes ×
batch b train the same weights as 1 process × batch 2b, so does gradient accumulation
2 × b, reference log-probs scored shard by shard equal one process's; and stage 04's
relaunch command (accelerate + DeepSpeed config, or torchrun)."""
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from spotlib.config import REPO_ROOT, load_profile
from spotlib.launch import relaunch

WORKER = Path(__file__).with_name("dist_worker.py")
METHODS = ("sft", "dpo", "spot_bco")


def _run(args: list[str], log: Path) -> None:
    from dist_worker import run_logged

    run_logged(args, log)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random micro Qwen3 from config with the micro world's tokenizer."""
    sys.path.insert(0, str(WORKER.parent))
    from dist_worker import build_base
    path = tmp_path_factory.mktemp("dist_base")
    build_base(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base):
    """Every method trained 3 steps as 1 × batch 4 (one/), 1 × batch 2 with accumulation 2
    (accum/, in the same process) and 2 processes × batch 2 (two/)."""
    root = tmp_path_factory.mktemp("dist")
    common = [str(WORKER), "--base", str(base), "--steps", "3"]
    _run([sys.executable, *common, "--out", str(root / "single"), "--runs", "one=4,1", "accum=2,2"],
         root / "single.log")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common,
          "--out", str(root / "pair"), "--runs", "two=2,1"], root / "pair.log")
    for name, folder in (("one", "single"), ("accum", "single"), ("two", "pair")):
        (root / name).symlink_to(root / folder / name)
    (root / "base").symlink_to(base)
    return root


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(folder / "model.safetensors")


def _relative_difference(a: Path, b: Path, base: Path) -> float:
    """|w_a − w_b| / |w_a − w_base| over all weights: the gap as a share of the update itself."""
    wa, wb, w0 = _weights(a), _weights(b), _weights(base)
    gap = sum(float((wa[k] - wb[k]).double().pow(2).sum()) for k in wa) ** 0.5
    update = sum(float((wa[k] - w0[k]).double().pow(2).sum()) for k in wa) ** 0.5
    assert update > 1e-2, f"{a}: training barely moved the weights ({update:.2e})"
    return gap / update


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"]


def _info(folder: Path) -> dict:
    return json.loads((folder.resolve().parent / "info.json").read_text())


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_equal_one_process_with_twice_the_batch(runs, method):
    assert _info(runs / "two")["processes"] == 2 and _info(runs / "one")["processes"] == 1
    assert _relative_difference(runs / "one" / method, runs / "two" / method, runs / "base") < 1e-2
    one, two = _records(runs / "one" / method), _records(runs / "two" / method)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3]
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["delta"] == pytest.approx(b["delta"], rel=1e-5, abs=1e-6)  # δ from all-reduced means
    if method == "spot_bco":
        assert any(abs(r["delta"]) > 1e-3 for r in one)  # δ really moved


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_gradient_accumulation_equals_one_batch(runs, method):
    """(SPoT-BCO updates δ per micro-batch, as the authors' code does, so it differs by design.)"""
    assert _relative_difference(runs / "one" / method, runs / "accum" / method, runs / "base") < 1e-2
    one, accum = _records(runs / "one" / method), _records(runs / "accum" / method)
    assert len(accum) == 3  # a logged step is one optimizer step over both micro-batches
    for a, b in zip(one, accum):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


def test_reference_logps_by_shards_equal_one_process(runs):
    """7 sequences in batches of ≤ 64 padded tokens, scored half by each rank, gathered on both."""
    one, two = _info(runs / "one"), _info(runs / "two")
    assert len(two["ref_chosen"]) == 7
    for key in ("ref_chosen", "ref_rejected", "counts_chosen"):
        assert torch.allclose(torch.tensor(two[key]), torch.tensor(one[key]), rtol=1e-5, atol=1e-4), key


def test_reference_logps_do_not_depend_on_the_batching(base):
    """Token-budget batches and a chunked LM head give what one row at a time gives."""
    from dist_worker import synthetic_examples
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from spotlib.train import data as D
    from spotlib.train.logps import reference_sums
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    data = D.prepare(tok, synthetic_examples(7), 256, 128, with_rejected=False)
    alone = reference_sums(model, data.chosen, tok.pad_token_id, torch.device("cpu"), max_tokens=1)
    batched = reference_sums(model, data.chosen, tok.pad_token_id, torch.device("cpu"), max_tokens=10_000,
                             head_chunk=16)
    assert torch.allclose(alone[0], batched[0], rtol=1e-5, atol=1e-4) and torch.equal(alone[1], batched[1])
    with pytest.raises(ValueError, match="positive"):
        reference_sums(model, data.chosen, tok.pad_token_id, torch.device("cpu"), max_tokens=0)


def test_token_budget_batches_cover_every_row_once():
    from spotlib.train.data import Tokenized
    from spotlib.train.logps import token_budget_batches
    tok = Tokenized([[1] * n for n in (5, 30, 7, 12, 12, 40, 3)], [1] * 7)
    batches = token_budget_batches(tok, list(range(7)), 32)
    assert sorted(sum(batches, [])) == list(range(7))
    for rows in batches:
        assert len(rows) == 1 or len(rows) * max(len(tok.ids[i]) for i in rows) <= 32
    assert [5] in batches  # longer than the budget: alone


@pytest.mark.slow
def test_stage_relaunches_itself_in_two_processes(base, tmp_path):
    """Stage 04 with `launcher: torchrun, num_processes: 2` trains in 2 gloo processes."""
    from dist_worker import synthetic_examples
    from spotlib.io import write_jsonl
    from spotlib.stages import train_methods as T
    out = tmp_path / "out"
    write_jsonl(out / "03_filter" / "pairs.jsonl", [dict(e, answer="", source="rectified")
                                                     for e in synthetic_examples(7)])
    profile = load_profile("test", overrides={
        "output_dir": str(out), "model.name_or_path": str(base), "train.methods": ["spot_bco"],
        "train.launcher": "torchrun", "train.num_processes": 2, "train.max_steps": 2, "train.per_device_batch": 2,
        "train.grad_accum": 1, "train.kl_probe_every": 0})
    manifest = T.run(profile, progress=False)
    assert manifest["counts"]["effective_batch"] == 4  # 2 processes × 2
    records = _records(out / T.STAGE / "spot_bco" / "seed0")
    assert [r["step"] for r in records] == [1, 2]


def _paper_like(tmp_path, **train):
    overrides = {"output_dir": str(tmp_path / "out")}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return load_profile("test", overrides=overrides)


def test_accelerate_config_resolved_for_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as papermill runs in notebooks/
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    profile = _paper_like(tmp_path, accelerate_config="params/accelerate_zero2.yaml", num_processes=8)
    command = relaunch.training_command(profile)
    assert command[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[-2:] == ["--processes", "8"]
    config = yaml.safe_load(Path(command[4]).read_text())
    json_path = Path(config["deepspeed_config"]["deepspeed_config_file"])
    assert json_path.is_absolute() and json_path == REPO_ROOT / "params" / "deepspeed_zero2.json"
    assert json.loads(json_path.read_text())["zero_optimization"]["stage"] == 2
    assert config["distributed_type"] == "DEEPSPEED"
    spec = load_profile(command[command.index("--profile") + 1])  # the relaunched processes' profile
    assert spec.train.accelerate_config == "params/accelerate_zero2.yaml" and spec.out == profile.out


def test_paper_profile_relaunches_under_deepspeed(tmp_path):
    from spotlib.launch.relaunch import resolved_accelerate_config
    paper = load_profile("paper")
    assert paper.train.launcher == "accelerate"
    config = yaml.safe_load(resolved_accelerate_config(paper.train.accelerate_config, tmp_path / "a.yaml").read_text())
    assert config["distributed_type"] == "DEEPSPEED"
    assert Path(config["deepspeed_config"]["deepspeed_config_file"]).is_file()


def test_launch_command_errors_and_cpu_choices(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert relaunch.training_command(_paper_like(tmp_path)) is None  # no config: train in this process
    assert relaunch.training_command(_paper_like(tmp_path, launcher="torchrun", num_processes=1)) is None
    with pytest.raises(ValueError, match="train.num_processes"):
        relaunch.training_command(_paper_like(tmp_path, launcher="torchrun", num_processes=0))
    command = relaunch.training_command(_paper_like(tmp_path, launcher="torchrun", num_processes=2))
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[command.index("--nproc_per_node") + 1] == "2" and command[command.index("--nnodes") + 1] == "1"
    with pytest.raises(RuntimeError, match="launcher: torchrun"):
        relaunch.training_command(_paper_like(tmp_path, accelerate_config="params/accelerate_zero2.yaml", num_processes=2))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(FileNotFoundError, match="no file"):
        relaunch.training_command(_paper_like(tmp_path, accelerate_config="params/nothing.yaml", num_processes=2))
    monkeypatch.setenv("LOCAL_RANK", "0")  # inside a launched process: never relaunch again
    assert relaunch.training_command(_paper_like(tmp_path, launcher="torchrun", num_processes=2)) is None
