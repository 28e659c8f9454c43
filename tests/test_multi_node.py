"""Beyond one node: the batch kept on N nodes, the dry run's 16-GPU plan and commands per node,
the shared-outputs check, a lock that holds where flock does not, and stage 04 as 2 nodes × 1
process (two launchers, c10d rendezvous on 127.0.0.1) matching 1 node × 2 processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from spotlib import reproduce
from spotlib.launch import nodes, relaunch
from spotlib.config import REPO_ROOT, ConfigError, load_profile
from spotlib.launch.shared_lock import SharedLockHeld, shared_lock


def _paper(n: int, **overrides):
    return load_profile("paper", overrides={"hardware.nodes": n, **overrides})


def test_the_global_batch_is_kept_on_more_nodes(monkeypatch):
    monkeypatch.delenv("SPOT_NODES", raising=False)
    one, two = _paper(1), nodes.for_nodes(_paper(2))
    per_node = nodes.processes_per_node(one)
    assert one.train.per_device_batch * one.train.grad_accum * per_node == 32
    assert two.train.per_device_batch * two.train.grad_accum * per_node * 2 == 32  # grad_accum 2 -> 1
    with pytest.raises(ConfigError, match="train.grad_accum divides by 3"):
        nodes.for_nodes(_paper(3))
    with pytest.raises(ConfigError, match="rl.mini_batch"):
        nodes.for_nodes(_paper(2, **{"rl.mini_batch": 24}))


def test_dry_run_prints_the_16_gpu_plan_and_each_nodes_command(monkeypatch, capsys):
    monkeypatch.setenv("SPOT_NODES", "1")  # restored after the test (the dry run sets it)
    assert reproduce.main(["--profile", "paper", "--dry-run", "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "on 16 x 79.6 GiB" in out and "on 2 nodes x 8 GPUs" in out
    assert "global batch 32 = train.per_device_batch 2 x train.grad_accum 1 (derived from 2) x 16 processes" in out
    for rank in (0, 1):
        assert f"SPOT_NODE_RANK={rank} SPOT_MAIN_ADDRESS=" in out and f"--machine_rank {rank}" in out
    assert "--rdzv_backend c10d" in out and "--num_processes 16" in out


def test_the_outputs_folder_must_be_shared(tmp_path):
    errors = []

    def node(rank: int, folder: Path):
        try:
            nodes.check_shared_outputs(folder, relaunch.Nodes(2, rank, "127.0.0.1", 29555), timeout_s=20, poll_s=0.05)
        except RuntimeError as exc:
            errors.append(str(exc))

    both = [threading.Thread(target=node, args=(r, tmp_path / "shared")) for r in (0, 1)]
    for t in both:
        t.start()
    for t in both:
        t.join()
    assert errors == []
    with pytest.raises(RuntimeError, match=r"node\(s\) \[1\] not seen"):  # node 1 writes to another folder
        nodes.check_shared_outputs(tmp_path / "alone", relaunch.Nodes(2, 0, "127.0.0.1", 29555), timeout_s=0.3,
                                   poll_s=0.05)


def test_the_output_lock_holds_where_flock_does_not(tmp_path, monkeypatch):
    """On shared storage flock may lock nothing across machines: the O_EXCL owner file still refuses."""
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda *args: None)  # as on an NFS mount without lock support
    out = tmp_path / "out"
    with reproduce.output_lock(out):
        with pytest.raises(reproduce.OutputLocked, match=f"PID {os.getpid()}"):
            with reproduce.output_lock(out):
                pass
    with reproduce.output_lock(out):  # released: taken again
        pass


def test_a_stale_shared_lock_is_taken_over(tmp_path):
    path = tmp_path / "lock"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with shared_lock(path):  # its holder on this host is gone
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text(json.dumps({"pid": 1, "host": "another-node"}))
    with pytest.raises(SharedLockHeld, match="another-node"):
        with shared_lock(path, stale_after_s=60):
            pass
    old = time.time() - 600
    os.utime(path, (old, old))   # no heartbeat for 10 minutes
    with shared_lock(path, stale_after_s=60, beat_every_s=0.05):
        before = path.stat().st_mtime
        time.sleep(0.3)
        assert path.stat().st_mtime > before   # the heartbeat
    assert not path.exists()


def _stage04(out: Path, base: Path, nodes_count: int, processes: int, grad_accum: int, env: dict, log: Path):
    profile = {"output_dir": str(out), "model.name_or_path": str(base), "train.methods": ["spot_bco"],
               "train.ablations": [], "train.launcher": "torchrun", "train.num_processes": processes,
               "train.max_steps": 2, "train.per_device_batch": 2, "train.grad_accum": grad_accum,
               "train.kl_probe_every": 0, "train.edit_diag_pairs": 0, "hardware.nodes": nodes_count}
    code = ("import sys, json; from spotlib.config import load_profile; from spotlib.stages import train_methods as T; "
            "T.run(load_profile('test', overrides=json.loads(sys.argv[1])), progress=False)")
    handle = log.open("w")
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(profile)], cwd=REPO_ROOT, stdout=handle,
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                                                               OMP_NUM_THREADS="1", **env))


@pytest.mark.slow
def test_stage_04_on_two_nodes_matches_one_node_with_two_processes(tmp_path):
    """Two launchers (node ranks 0 and 1, one process each, c10d rendezvous on 127.0.0.1) train the
    weights of one launcher with two processes; the batch is kept by grad_accum 2 -> 1."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).parent))
    from dist_worker import build_base, synthetic_examples
    from spotlib.io import write_jsonl

    base = tmp_path / "base"
    build_base(base)
    outs = {"nodes": tmp_path / "two_nodes", "local": tmp_path / "one_node"}
    for out in outs.values():
        write_jsonl(out / "03_filter" / "pairs.jsonl", [dict(e, answer="", source="rectified")
                                                        for e in synthetic_examples(7)])
    port = str(relaunch.free_port())
    clean = {k: "" for k in ("SPOT_NODES", "SPOT_NODE_RANK", "SPOT_MAIN_ADDRESS", "SPOT_MAIN_PORT")}
    two = [_stage04(outs["nodes"], base, 2, 1, 2, dict(clean, SPOT_NODE_RANK=str(rank), SPOT_MAIN_ADDRESS="127.0.0.1",
                                                      SPOT_MAIN_PORT=port), tmp_path / f"node{rank}.log")
           for rank in (0, 1)]
    one = _stage04(outs["local"], base, 1, 2, 1, clean, tmp_path / "local.log")
    for proc, log in zip(two + [one], ["node0.log", "node1.log", "local.log"]):
        assert proc.wait(timeout=600) == 0, (tmp_path / log).read_text()[-3000:]
    runs = {k: out / "04_train_spot" / "spot_bco" / "seed0" for k, out in outs.items()}
    manifest = json.loads((outs["nodes"] / "04_train_spot" / "manifest.json").read_text())
    assert manifest["counts"]["effective_batch"] == 4      # 2 nodes x 1 process x 2 x grad_accum 1
    a, b, w0 = (load_file(p / "model.safetensors") for p in (runs["nodes"], runs["local"], base))
    gap = sum(float((a[k] - b[k]).double().pow(2).sum()) for k in a) ** 0.5
    update = sum(float((a[k] - w0[k]).double().pow(2).sum()) for k in a) ** 0.5
    assert update > 1e-3 and gap / update < 1e-2, (gap, update)


def test_other_nodes_join_only_the_distributed_stages_when_node_0_starts_them(tmp_path):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "hardware.nodes": 2})
    joined = []
    stages = ["01_sample", "04_train_spot", "05_eval_forgetting", "06_rl_init"]
    follower = threading.Thread(target=nodes.follow_node0, args=(profile, relaunch.Nodes(2, 1, "h", 1), stages),
                                kwargs={"run_stage": lambda p, s: joined.append(s), "poll_s": 0.02})
    nodes.clear_stage_markers(profile.out)
    follower.start()
    time.sleep(0.2)
    assert joined == []                      # node 0 has not started stage 04 yet
    for stage in stages:                     # node 0 goes through every stage
        nodes.mark_stage_started(profile.out, stage)
        time.sleep(0.1)
    follower.join(timeout=5)
    assert joined == ["04_train_spot", "06_rl_init"]


@pytest.mark.slow
def test_grpo_on_two_nodes_matches_one_process(tmp_path):
    """GRPO's training processes launched as 2 nodes × 1 process (spotlib.launch.relaunch, c10d on 127.0.0.1)
    give the weights of the same run in one process, on the same fixed rollouts."""
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).parent))
    import rl_dist_worker
    from rl_helpers import micro_model

    init = micro_model(tmp_path / "init")
    before = torch.get_num_threads()
    try:
        rl_dist_worker.run(init, tmp_path / "one")
    finally:
        torch.set_num_threads(before)
    port = relaunch.free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO_ROOT}:{Path(__file__).parent}")
    procs = []
    for rank in (0, 1):
        command = relaunch.launch_command(["rl_dist_worker", str(init), str(tmp_path / "two")], processes=1,
                                        launcher="torchrun", accelerate_config=None, config_copy=tmp_path / "c.yaml",
                                        nodes=relaunch.Nodes(2, rank, "127.0.0.1", port))
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    one, two, start = (AutoModelForCausalLM.from_pretrained(p).state_dict()
                       for p in (tmp_path / "one" / "run" / "final", tmp_path / "two" / "run" / "final", init))
    moved = max(float((one[k] - start[k]).abs().max()) for k in one)
    gap = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert moved > 1e-3 and gap < 1e-5 * max(1.0, moved) + 1e-6, (gap, moved)
