"""GRPO on 2 processes (torchrun, gloo) gives the weights of 1 process on the same rollouts.

The rollouts are fixed per (prompt id, rollout index, step): each rank samples only the
prompt groups it owns, grades and normalises them itself, and the DDP wrapper averages
the gradients. The slow negative control hands the trainer the bare model instead of
the wrapper: the ranks' gradients are then never averaged and the weights differ.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_helpers import micro_model

WORKER = Path(__file__).with_name("rl_dist_worker.py")
REPO = WORKER.parent.parent


def _torchrun(init: Path, out: Path, *extra: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), str(WORKER), str(init), str(out), *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same run in this process (no launcher, world size 1)."""
    import rl_dist_worker

    root = tmp_path_factory.mktemp("grpo_dist")
    init = micro_model(root / "init")
    before = torch.get_num_threads()
    try:
        rl_dist_worker.run(init, root / "one")
    finally:
        torch.set_num_threads(before)
    return root, init


def test_two_processes_give_the_weights_of_one(one_process):
    root, init = one_process
    _torchrun(init, root / "two")
    ranks = [json.loads((root / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]                 # really two processes
    assert all(r["processes"] == [2, 2, 2] for r in ranks)       # and the trainer saw both
    assert all(r["released"] == 1 and r["steps"] == 3 for r in ranks)
    one, two, start = _weights(root / "one" / "run" / "final"), _weights(root / "two" / "run" / "final"), _weights(init)
    moved = _max_diff(one, start)
    print(f"largest weight change {moved:.3g}; 1 vs 2 processes differ by at most {_max_diff(one, two):.3g}")
    assert moved > 1e-3                                          # training changed the weights
    assert _max_diff(one, two) < 1e-5 * max(1.0, moved) + 1e-6, (_max_diff(one, two), moved)
    metrics_one = [json.loads(x) for x in (root / "one" / "run" / "metrics.jsonl").read_text().splitlines()]
    metrics_two = [json.loads(x) for x in (root / "two" / "run" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(metrics_one, metrics_two, strict=True):      # metrics are over all ranks' rollouts
        assert a["reward_mean"] == b["reward_mean"] and a["response_len"] == b["response_len"]
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-4, abs=1e-7)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)  # the loss scale, not just direction


@pytest.mark.slow
def test_without_gradient_averaging_the_weights_differ(one_process):
    """Negative control: the bare model instead of the DDP wrapper (each rank steps on its own half)."""
    root, init = one_process
    _torchrun(init, root / "bare", "--bypass-wrapper")
    diff = _max_diff(_weights(root / "one" / "run" / "final"), _weights(root / "bare" / "run" / "final"))
    print(f"without gradient averaging, 1 vs 2 processes differ by up to {diff:.3g}")
    assert diff > 1e-4, diff
