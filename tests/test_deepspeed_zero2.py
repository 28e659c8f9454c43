"""DeepSpeed ZeRO-2 built directly (`train.deepspeed_config`, spotlib.train.deepspeed_run) on 2 CPU
processes (DS_ACCELERATOR=cpu, gloo): 2 processes × batch b train the weights of 1 process × batch 2b,
for SFT, DPO and SPoT-BCO, through the same trainer the GPU path runs. Needs DeepSpeed
(`make setup-engines`; `make test-engines` runs it)."""
import json
import sys
from pathlib import Path

import pytest

from spotlib.config import REPO_ROOT

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (make setup-engines)")
pytestmark = [pytest.mark.slow, pytest.mark.engines]

WORKER = Path(__file__).with_name("dist_worker.py")
ZERO2 = REPO_ROOT / "params" / "deepspeed_zero2.json"  # the paper's DeepSpeed config, as it is
METHODS = ("sft", "dpo", "spot_bco")


def _run(args: list[str], log: Path) -> None:
    from dist_worker import run_logged

    run_logged(args, log, timeout=900, DS_ACCELERATOR="cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    sys.path.insert(0, str(WORKER.parent))
    from dist_worker import build_base

    root = tmp_path_factory.mktemp("zero2")
    build_base(root / "base")
    common = [str(WORKER), "--base", str(root / "base"), "--steps", "3", "--deepspeed-config", str(ZERO2)]
    _run([sys.executable, *common, "--out", str(root / "single"), "--runs", "one=4,1"], root / "single.log")
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *common,
          "--out", str(root / "pair"), "--runs", "two=2,1"], root / "pair.log")
    return root


def _weights(folder: Path):
    from safetensors.torch import load_file
    return load_file(folder / "model.safetensors")


def _relative_difference(a: Path, b: Path, base: Path) -> float:
    wa, wb, w0 = _weights(a), _weights(b), _weights(base)
    gap = sum(float((wa[k] - wb[k]).double().pow(2).sum()) for k in wa) ** 0.5
    update = sum(float((wa[k] - w0[k]).double().pow(2).sum()) for k in wa) ** 0.5
    assert update > 1e-2, f"{a}: training barely moved the weights ({update:.2e})"
    return gap / update


@pytest.mark.parametrize("method", METHODS)
def test_zero2_two_processes_equal_one_process_with_twice_the_batch(runs, method):
    one, two = runs / "single" / "one" / method, runs / "pair" / "two" / method
    engines = [json.loads((d / "engine.json").read_text()) for d in (one, two)]
    assert [e["processes"] for e in engines] == [1, 2]
    assert all(e["zero_stage"] == 2 and e["optimizer"] == "DeepSpeedZeroOptimizer" for e in engines), engines
    assert _relative_difference(one, two, runs / "base") < 1e-2
    records = [[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["kind"] == "train"] for d in (one, two)]
    assert [r["step"] for r in records[0]] == [r["step"] for r in records[1]] == [1, 2, 3]
    for a, b in zip(*records):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["delta"] == pytest.approx(b["delta"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] is not None and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-3)
