"""The one launcher behind every distributed relaunch (stage 04's training, stage 06's GRPO).

A stage that trains across processes runs itself again as `python -m <module> ...` under
`torchrun` (CPU, gloo) or `accelerate launch` with the profile's accelerate config (GPUs,
DeepSpeed ZeRO-2). Both stages build that command here, so they cannot drift apart: the
accelerate config is always a copy whose DeepSpeed JSON path is absolute (accelerate opens
it from the working folder), and the same node settings reach either launcher.

Several nodes: every node runs the same command with its own `node_rank`; the processes
meet at `main_address:main_port` by c10d rendezvous (torchrun's elastic rendezvous;
`accelerate launch --rdzv_backend c10d`). `Nodes.from_env` reads the node's place from the
environment (`SPOT_NODE_RANK`, `SPOT_MAIN_ADDRESS`, `SPOT_MAIN_PORT`, else the usual
`NODE_RANK`, `MASTER_ADDR`, `MASTER_PORT`).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LAUNCHERS = ("torchrun", "accelerate")
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Nodes:
    """Where this node stands among `count` nodes, and where they meet."""
    count: int = 1
    rank: int = 0
    main_address: str = "127.0.0.1"
    main_port: int | None = None    # None: a free local port (one node only)
    rdzv_id: str = "spotlib"        # the same on every node of one launch

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"nodes: expected at least 1, got {self.count}")
        if not 0 <= self.rank < self.count:
            raise ValueError(f"node rank {self.rank}: expected 0..{self.count - 1} for {self.count} node(s)")
        if self.count > 1 and self.main_port is None:
            raise ValueError("several nodes need a main port every node knows (SPOT_MAIN_PORT)")

    @classmethod
    def from_env(cls, count: int = 1, env=None) -> "Nodes":
        env = os.environ if env is None else env

        def first(*names):
            return next((env[n] for n in names if env.get(n)), None)

        rank = first("SPOT_NODE_RANK", "NODE_RANK")
        address = first("SPOT_MAIN_ADDRESS", "MASTER_ADDR")
        port = first("SPOT_MAIN_PORT", "MASTER_PORT")
        if count > 1 and address is None:
            raise ValueError(f"{count} nodes: set SPOT_MAIN_ADDRESS to node 0's address on every node")
        return cls(count=count, rank=int(rank or 0), main_address=address or "127.0.0.1",
                   main_port=int(port) if port else (DEFAULT_PORT if count > 1 else None),
                   rdzv_id=env.get("SPOT_RDZV_ID", "spotlib"))

    def port(self) -> int:
        return self.main_port if self.main_port is not None else free_port()


def node_count(profile) -> int:
    """`hardware.nodes`, or `SPOT_NODES` (what `make reproduce NODES=N` sets for every stage's kernel)."""
    return int(os.environ.get("SPOT_NODES") or profile.hardware.nodes)


def profile_nodes(profile) -> Nodes:
    """This node's place in the profile's `hardware.nodes` (the environment says which node it is)."""
    return Nodes.from_env(node_count(profile))


def launched() -> bool:
    """True inside a process a launcher started (never relaunch from there)."""
    return "LOCAL_RANK" in os.environ or "ACCELERATE_DYNAMO_BACKEND" in os.environ


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
