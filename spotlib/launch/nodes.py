"""The study on several nodes: the batch kept, the commands per node, the shared outputs folder.

`hardware.nodes` machines of `hardware.gpus` GPUs each (`NODES=` on the make targets). The
profile's batch is what it says on one node, `per_device_batch × grad_accum × processes per
node`; on N nodes the world is N times larger, so `for_nodes` divides `train.grad_accum` by N
(and refuses when it does not divide), and checks that GRPO's `rl.mini_batch` still splits
into whole prompt groups per rank. Every node runs the same command with its own
`SPOT_NODE_RANK`; they meet at node 0 (`SPOT_MAIN_ADDRESS`, `SPOT_MAIN_PORT`) by c10d
rendezvous; `spotlib.launch.relaunch` builds the launch. docs/multi-node.md has the commands.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from spotlib.config import ConfigError

SHARED_CHECK_DIR = ".nodes"
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


def processes_per_node(profile) -> int:
    return profile.train.num_processes or max(profile.hardware.gpus, 1)


def for_nodes(profile):
    """The profile as it runs on `hardware.nodes` nodes: `train.grad_accum` derived so the global
    batch stays the profile's; a clear error when it cannot."""
    nodes = node_count(profile)
    if nodes < 1:
        raise ConfigError(f"{profile.source}: key hardware.nodes: expected at least 1, got {nodes}")
    if nodes == 1:
        return profile
    t, per_node = profile.train, processes_per_node(profile)
    world = nodes * per_node
    global_batch = t.per_device_batch * t.grad_accum * per_node
    if t.grad_accum % nodes:
        raise ConfigError(
            f"{profile.source}: {nodes} nodes x {per_node} processes keep the batch of {global_batch} "
            f"(train.per_device_batch {t.per_device_batch} x train.grad_accum {t.grad_accum} x {per_node}) only if "
            f"train.grad_accum divides by {nodes}; set train.grad_accum to a multiple of {nodes} "
            f"(lowering train.per_device_batch to match) or run on fewer nodes")
    rl = profile.rl
    if rl.mini_batch % world:
        raise ConfigError(f"{profile.source}: key rl.mini_batch: {rl.mini_batch} prompts do not split into whole "
                          f"groups over {world} ranks ({nodes} nodes x {per_node}); use a multiple of {world}")
    return profile.replace(train=dataclasses.replace(t, grad_accum=t.grad_accum // nodes))


def batch_line(profile) -> str:
    """How the global batch is kept on this many nodes (for the dry run)."""
    scaled, t = for_nodes(profile), profile.train
    per_node, nodes = processes_per_node(profile), node_count(profile)
    return (f"global batch {t.per_device_batch * t.grad_accum * per_node} = train.per_device_batch "
            f"{t.per_device_batch} x train.grad_accum {scaled.train.grad_accum} (derived from {t.grad_accum}) x "
            f"{per_node * nodes} processes ({nodes} nodes x {per_node})")


def node_commands(profile, make_target: str = "reproduce", main_address: str = "<node 0's address>",
                  port: int = 29500) -> list[str]:
    """The command each node runs (the same but for its rank)."""
    nodes = node_count(profile)
    return [f"node {rank}: SPOT_NODE_RANK={rank} SPOT_MAIN_ADDRESS={main_address} SPOT_MAIN_PORT={port} "
            f"make {make_target} PROFILE={profile.name} NODES={nodes}" for rank in range(nodes)]


def check_shared_outputs(out: Path, nodes, timeout_s: float = 300.0, poll_s: float = 2.0) -> None:
    """Before any compute: every node writes `<out>/.nodes/node-<rank>.json` and waits until it sees
    every other node's; a node not seen in `timeout_s` means the outputs folder is not shared."""
    folder = Path(out) / SHARED_CHECK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    token = f"{nodes.main_address}:{nodes.main_port}:{nodes.rdzv_id}"
    mine = folder / f"node-{nodes.rank}.json"
    tmp = folder / f".node-{nodes.rank}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"rank": nodes.rank, "host": socket.gethostname(), "pid": os.getpid(),
                               "token": token}))
    tmp.replace(mine)
    deadline = time.monotonic() + timeout_s
    while True:
        missing = []
        for rank in range(nodes.count):
            try:
                seen = json.loads((folder / f"node-{rank}.json").read_text())
            except (OSError, json.JSONDecodeError):
                seen = {}
            if seen.get("token") != token:
                missing.append(rank)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{out}: node(s) {missing} not seen in this outputs folder after {timeout_s:.0f} s: "
                               f"every node must see the same folder (shared storage: NFS, Lustre...) and be started "
                               f"with the same SPOT_MAIN_ADDRESS/SPOT_MAIN_PORT")
        time.sleep(poll_s)


DISTRIBUTED_STAGES = ("04_train_spot", "06_rl_init")   # the stages whose training spans every node


def stage_marker(out: Path, stage: str) -> Path:
    return Path(out) / SHARED_CHECK_DIR / f"{stage}.started"


def clear_stage_markers(out: Path) -> None:
    """Node 0, before the shared-outputs check: markers of an earlier run must not start the others."""
    for stage in DISTRIBUTED_STAGES:
        stage_marker(out, stage).unlink(missing_ok=True)


def mark_stage_started(out: Path, stage: str) -> None:
    """Node 0 starts a distributed stage: the other nodes join its launch now."""
    if stage in DISTRIBUTED_STAGES:
        marker = stage_marker(out, stage)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(time.time()))


def follow_node0(profile, node, stage_names: list[str], run_stage, poll_s: float = 5.0) -> None:
    """A node other than 0: only the training of stages 04 and 06, each when node 0 starts it
    (node 0 samples, rectifies, filters and evaluates into the shared outputs folder);
    `run_stage(profile, stage)` joins that stage's launch (`reproduce.join_stage`)."""
    for stage in stage_names:
        if stage not in DISTRIBUTED_STAGES:
            continue
        print(f"node {node.rank}: waiting for node 0 to start {stage}", flush=True)
        while not stage_marker(profile.out, stage).is_file():
            time.sleep(poll_s)
        run_stage(profile, stage)

