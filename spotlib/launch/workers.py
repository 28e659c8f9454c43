"""Side-by-side single-thread worker processes for CPU-only stages (stage 04's runs, stage 05's
models, sweep points).

The tiny model gains little from a second thread, so on a small CPU two processes with
one thread each nearly halve a stage. Each worker runs a stage module's command line on a
copy of the profile; the work it finishes is on disk, so an interrupted stage keeps it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def worker_profile(profile, folder: Path) -> Path:
    """The profile as a YAML file a worker process can load (overrides included)."""
    import yaml

    path = folder / "worker_profile.yaml"
    body = {k: v for k, v in profile.to_dict().items() if k != "source"}
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def run_in_workers(jobs: list[tuple[str, list[str]]], log_dir: Path, workers: int, progress: bool = True,
                   on_tick: Callable[[], None] | None = None) -> None:
    """Run `python -m <args>` for each (label, args), `workers` at a time, one thread each.

    `on_tick` is called about twice a second while they run (e.g. to count the work finished
    on disk for a progress bar). A failing job stops the others and raises with its log's
    path; so does Ctrl-C."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending, running = list(jobs), {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                label, args = pending.pop(0)
                log_path = log_dir / f"worker-{label}.log"
                log = log_path.open("w")
                proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, env=env)
                running[label] = (proc, log, log_path, time.perf_counter())
                if progress:
                    print(f"{label}: started in a worker process (log: {log_path})")
            time.sleep(0.5)
            if on_tick is not None:
                on_tick()
            for label, (proc, log, log_path, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[label]
                if proc.returncode != 0:
                    raise RuntimeError(f"worker {label} failed with exit code {proc.returncode}; its log: {log_path}")
                if progress:
                    print(f"{label}: done in {time.perf_counter() - t0:.0f} s")
    finally:
        for proc, log, _, _ in running.values():
            proc.terminate()
            proc.wait()
            log.close()


def cpu_worker_count(profile, jobs: int) -> int:
    """How many workers to use for `jobs` units of work: `train.cpu_workers` (at most one per
    unit) on a machine without CUDA, else 1. Stages 04 and 05 and the sweep share this key."""
    import torch

    if torch.cuda.is_available() or profile.train.cpu_workers <= 1:
        return 1
    return max(1, min(profile.train.cpu_workers, jobs))


def balanced_shares(units: list[str], workers: int, cost: dict[str, float] | None = None) -> list[list[str]]:
    """Split units of work (e.g. "method:seed" runs, or models to evaluate) into `workers`
    lists of near-equal total cost, longest first onto the least loaded worker (LPT), so no
    core waits while another still holds several units. Order within a share follows `units`."""
    if workers < 1:
        raise ValueError(f"workers={workers}: expected at least 1")
    cost = cost or {}
    shares: list[list[str]] = [[] for _ in range(min(workers, max(1, len(units))))]
    loads = [0.0] * len(shares)
    for unit in sorted(units, key=lambda u: -cost.get(u, 1.0)):
        k = loads.index(min(loads))
        shares[k].append(unit)
        loads[k] += cost.get(unit, 1.0)
    position = {u: i for i, u in enumerate(units)}
    return [sorted(share, key=position.__getitem__) for share in shares if share]


def run_shares(module: str, profile_file: Path, flag: str, shares: list[list[str]], log_dir: Path,
               progress: bool = True, on_tick: Callable[[], None] | None = None) -> None:
    """One single-thread worker per share: `python -m <module> --profile <file> <flag> a,b,c`
    (log: `<log_dir>/worker-share<k>.log`). A unit's name must not contain a comma."""
    for share in shares:
        bad = [u for u in share if "," in u or not u]
        if bad:
            raise ValueError(f"{module} {flag}: unit {bad[0]!r} is empty or holds a comma (units are comma-joined)")
    jobs = [(f"share{k}", [module, "--profile", str(profile_file), flag, ",".join(share)])
            for k, share in enumerate(shares)]
    run_in_workers(jobs, log_dir, len(jobs), progress, on_tick)
