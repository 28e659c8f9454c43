"""Every distributed relaunch: stage 04's training and stage 06's GRPO, and the dry run's view of them.

A stage that trains across processes runs itself again as `python -m <module> ...` under
`torchrun` (CPU, gloo) or `accelerate launch` with the profile's accelerate config (GPUs,
DeepSpeed ZeRO-2). Both stages build that command here (`training_command`, `grpo_command`)
and run it here (`relaunch_training`, `relaunch_grpo`), so they cannot drift apart: the
accelerate config is always a copy whose DeepSpeed JSON path is absolute (accelerate opens
it from the working folder), and the same node settings reach either launcher.

Several nodes: every node runs the same command with its own `node_rank`; the processes
meet at `main_address:main_port` by c10d rendezvous (torchrun's elastic rendezvous;
`accelerate launch --rdzv_backend c10d`). `spotlib.launch.nodes` says where this node
stands (`Nodes.from_env`: `SPOT_NODE_RANK`, `SPOT_MAIN_ADDRESS`, `SPOT_MAIN_PORT`, else the
usual `NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`) and what the batch becomes on several nodes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from spotlib.launch.nodes import (DEFAULT_PORT, Nodes, batch_line, for_nodes, free_port,  # noqa: F401 - re-exported
                                  launched, node_commands, node_count, processes_per_node, profile_nodes)
from spotlib.launch.workers import worker_profile

LAUNCHERS = ("torchrun", "accelerate")
TRAIN_MODULE, TRAIN_STAGE = "spotlib.stages.train_methods", "04_train_spot"
GRPO_MODULE, GRPO_STAGE = "spotlib.stages.rl_init", "06_rl_init"


def launch_command(module_args: list[str], *, processes: int, launcher: str, accelerate_config: str | None,
                   config_copy: Path, nodes: Nodes = Nodes()) -> list[str]:
    """`python -m <launcher> ... -m <module_args>` for `processes` per node on `nodes`.

    `launcher`: "torchrun", or "accelerate" with `accelerate_config` (a copy with the DeepSpeed
    path made absolute is written to `config_copy`)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: expected one of {LAUNCHERS}")
    if processes < 1:
        raise ValueError(f"processes per node: expected at least 1, got {processes}")
    port = nodes.port()
    if launcher == "torchrun":
        # c10d rendezvous on one node too: the same path as several nodes, on a free local port.
        head = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes.count),
                "--nproc_per_node", str(processes), "--node_rank", str(nodes.rank),
                "--rdzv_backend", "c10d", "--rdzv_endpoint", f"{nodes.main_address}:{port}",
                "--rdzv_id", nodes.rdzv_id]
    else:
        if not accelerate_config:
            raise ValueError("launcher accelerate: needs train.accelerate_config")
        config = resolved_accelerate_config(accelerate_config, config_copy, nodes)
        head = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                "--num_processes", str(processes * nodes.count), "--num_machines", str(nodes.count),
                "--machine_rank", str(nodes.rank), "--main_process_ip", nodes.main_address,
                "--main_process_port", str(port)]
        if nodes.count > 1:
            head += ["--rdzv_backend", "c10d", "--deepspeed_multinode_launcher", "standard"]
    return head + ["-m", *module_args]


def resolved_accelerate_config(path: str, out: Path, nodes: Nodes = Nodes()) -> Path:
    """A copy of the accelerate config at `path` whose DeepSpeed JSON path is absolute.

    A relative `deepspeed_config_file` is read against the config's own folder, so the
    launch works from any working directory (papermill runs in `notebooks/`). On several
    nodes the copy names them and meets by c10d rendezvous (not a static one)."""
    import yaml

    from spotlib.config import REPO_ROOT

    source = Path(path)
    if not source.is_absolute():
        source = REPO_ROOT / source
    if not source.is_file():
        raise FileNotFoundError(f"train.accelerate_config: no file {source}")
    config = yaml.safe_load(source.read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a mapping of accelerate settings")
    deepspeed = config.get("deepspeed_config") or {}
    if deepspeed.get("deepspeed_config_file"):
        json_path = Path(deepspeed["deepspeed_config_file"])
        if not json_path.is_absolute():
            json_path = (source.parent / json_path).resolve()
        if not json_path.is_file():
            raise FileNotFoundError(f"{source}: deepspeed_config.deepspeed_config_file: no file {json_path}")
        json.loads(json_path.read_text())  # a broken JSON fails here, with its path, not in 8 launched processes
        deepspeed["deepspeed_config_file"] = str(json_path)
        if nodes.count > 1:
            deepspeed["deepspeed_multinode_launcher"] = "standard"  # one launcher per node, no ssh/pdsh
    config.update(num_machines=nodes.count, machine_rank=nodes.rank)
    if nodes.count > 1:
        config.update(rdzv_backend="c10d", same_network=False, main_process_ip=nodes.main_address)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def run_launched(command: list[str], *, log: Path | None = None, env: dict | None = None,
                 what: str = "launched processes") -> None:
    """Run `command` from the repository root; raise with the log's tail if it fails."""
    from spotlib.config import REPO_ROOT

    env = dict(os.environ if env is None else env)
    if log is None:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            done = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "" if log is None else "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        where = f"; log: {log}\n{tail}" if log is not None else ""
        raise RuntimeError(f"{what} failed (exit {done.returncode}){where}")


# Stage 04: every method's training runs, relaunched across processes.

def training_processes(profile) -> int:
    """Training processes: `train.num_processes`, else one per visible GPU (0 on CPU)."""
    import torch

    asked = profile.train.num_processes
    if asked is not None and asked < 1:
        raise ValueError(f"{profile.source}: key train.num_processes: expected a positive count, got {asked}")
    return asked or torch.cuda.device_count()


def training_command(profile) -> list[str] | None:
    """The command that relaunches stage 04 across processes, or None to train here.

    `torchrun` (CPU rehearsal, gloo): when more than one process is asked for in all.
    `accelerate` with `train.accelerate_config` (GPUs, DeepSpeed ZeRO-2): whenever there is a
    process to launch (one GPU too: ZeRO-2 keeps the fp32 master weights). Inside a launched
    process: None. On `hardware.nodes` > 1, this node's share of the launch.
    """
    import torch

    cfg = profile.train
    if launched():
        return None
    processes = training_processes(profile)
    nodes = profile_nodes(profile)
    if cfg.launcher == "torchrun":
        if processes * nodes.count < 2:
            return None
    else:
        if not cfg.accelerate_config or processes < 1:
            return None
        if not torch.cuda.is_available():
            raise RuntimeError(f"train.accelerate_config: accelerate launch needs GPUs here; on CPU set "
                               f"train.launcher: torchrun (it starts {processes} processes on gloo)")
    profile = for_nodes(profile)  # on several nodes: train.grad_accum derived, the global batch kept
    stage_dir = profile.stage_dir(TRAIN_STAGE)
    return _training_command(profile, processes, nodes, profile_file=worker_profile(profile, stage_dir),
                             config_copy=stage_dir / "accelerate_config.yaml")


def _training_command(profile, processes: int, nodes: Nodes, *, profile_file: Path, config_copy: Path) -> list[str]:
    """Stage 04's launch on `nodes` (the run's and the dry run's alike)."""
    t = profile.train
    total = processes * nodes.count
    return launch_command([TRAIN_MODULE, "--profile", str(profile_file), "--processes", str(total)],
                          processes=processes, launcher=t.launcher, accelerate_config=t.accelerate_config,
                          config_copy=config_copy, nodes=nodes)


def relaunch_training(profile, command: list[str]) -> dict:
    """Run stage 04 in the launched processes; their manifest is the result."""
    from spotlib.io import Manifest

    run_launched(command, what=f"stage {TRAIN_STAGE} in launched processes")
    rank = profile_nodes(profile).rank
    if rank > 0:  # node 0's main process writes the manifest
        return {"node_rank": rank}
    return Manifest(profile.stage_dir(TRAIN_STAGE), params=None).load()


# Stage 06: both GRPO runs, relaunched across processes.

def grpo_command(profile, processes: int, profile_file: Path, nodes: Nodes | None = None) -> list[str]:
    """`accelerate launch` with the train accelerate config on GPUs, else torchrun (gloo on CPU)."""
    import torch

    config = profile.train.accelerate_config
    on_gpus = bool(config) and torch.cuda.is_available() and profile.device != "cpu"
    nodes = nodes or profile_nodes(profile)
    return launch_command([GRPO_MODULE, "--profile", str(profile_file), "--train-only"],
                          processes=processes, launcher="accelerate" if on_gpus else "torchrun",
                          accelerate_config=config, nodes=nodes,
                          config_copy=profile.stage_dir(GRPO_STAGE) / "accelerate_config.yaml")


def relaunch_grpo(profile, processes: int) -> None:
    """Train both GRPO runs in `processes` launched processes (per node); they have exited when this returns."""
    import torch

    stage_dir = profile.stage_dir(GRPO_STAGE)
    nodes = profile_nodes(profile)
    profile = for_nodes(profile)  # checks that rl.mini_batch splits over every node's ranks
    cmd = grpo_command(profile, processes, worker_profile(profile, stage_dir), nodes)
    env = dict(os.environ)
    if profile.device == "cpu" or not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", "1")  # the processes share the machine's cores
    run_launched(cmd, log=stage_dir / f"launch-node{nodes.rank}.log", env=env,
                 what=f"GRPO on {processes} processes × {nodes.count} node(s)")


# The dry run's view of the launch on several nodes.

def stage04_command(profile, rank: int, main_address: str = "NODE0", port: int = 29500) -> list[str]:
    """The launch stage 04 makes on node `rank` (shown in the dry run; nothing is started);
    empty when the profile trains in its own process."""
    import tempfile

    scaled = for_nodes(profile)
    t = scaled.train
    if t.launcher == "accelerate" and not t.accelerate_config:
        return []
    nodes = Nodes(count=node_count(profile), rank=rank, main_address=main_address, main_port=port)
    return _training_command(scaled, processes_per_node(profile), nodes,
                             profile_file=profile.out / TRAIN_STAGE / "worker_profile.yaml",
                             config_copy=Path(tempfile.gettempdir()) / f"spotlib-dry-run-node{rank}.yaml")


def multi_node_text(profile) -> str:
    """The dry run's part for several nodes: the batch kept and what each node runs."""
    if node_count(profile) <= 1:
        return ""
    lines = ["", f"on {node_count(profile)} nodes x {profile.hardware.gpus} GPUs (hardware.nodes; "
                 f"preflight per node: {profile.hardware.gpus} local GPUs each)", f"  {batch_line(profile)}",
             "  outputs folder: shared by every node (checked before compute); each run a command per node:"]
    lines += [f"    {line}" for line in node_commands(profile)]
    lines.append("  stage 04 launches on each node (c10d rendezvous at node 0):")
    for rank in range(node_count(profile)):
        command = stage04_command(profile, rank)
        lines.append(f"    node {rank}: " + (" ".join(command[1:]) if command else "trains in its own process"))
    return "\n".join(lines)
