"""Stage 04's (run, seed) units on a CPU: naming them, their expected cost, the count of those
finished, and sharing the unfinished ones among single-thread worker processes.

A unit trains the same wherever it runs (the same run keys and weights as in one process);
this module decides only where: `spotlib.launch.workers` starts the processes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from spotlib.launch.workers import balanced_shares, run_shares, worker_profile
from spotlib.train.trainer import RunInputs, finished_summary, run_keys


def unit_label(run_spec, seed: int) -> str:
    return f"{run_spec.name}:{seed}"


def parse_units(units: list[str], runs: list, seeds: list[int]) -> list[tuple[str, int]]:
    """("run", seed) for each "run:seed" label (a run name may hold ':', e.g. `spot_bco:ema:1`),
    checked against the profile's runs and seeds."""
    names = {r.name for r in runs}
    parsed = []
    for label in units:
        name, _, seed = label.rpartition(":")
        if name not in names or not seed.lstrip("-").isdigit() or int(seed) not in seeds:
            raise ValueError(f"--units {label!r}: expected run:seed with a run among {sorted(names)} "
                             f"and a seed among {seeds}")
        parsed.append((name, int(seed)))
    return parsed


def unit_cost(run_spec, inputs: RunInputs) -> float:
    """A run's expected training cost: the tokens its model reads per pass over the data (a
    pair run reads y⁺ and y⁻, about twice an SFT run), a third more for kl_sft, which also runs
    π_ref forward at every step. Every run takes the same steps on the same number of examples."""
    data = inputs.data
    tokens = sum(len(ids) for ids in data.chosen.ids)
    if data.rejected is not None:
        tokens += sum(len(ids) for ids in data.rejected.ids)
    return tokens * (4 / 3 if run_spec.objective == "kl_sft" else 1.0)


class RunCounter:
    """Which of the stage's (run, seed) units are done, and the "runs" bar that shows it:
    run m/M and the run now training (its steps have the trainer's own bar)."""

    def __init__(self, profile, stage_dir: Path, steps: int, shared: dict[str, RunInputs], selected: list,
                 show: bool):
        self.profile, self.steps, self.shared, self.selected = profile, steps, shared, selected
        self.stage_dir = stage_dir
        self.done: set[str] = set()
        self.last_check = 0.0
        self.bar = None
        if show:
            from spotlib.progress import bar
            self.bar = bar(total=len(selected), desc="runs", unit="run")

    def run_dir(self, run_spec, seed: int) -> Path:
        return self.stage_dir / run_spec.dirname / f"seed{seed}"

    def is_done(self, run_spec, seed: int) -> bool:
        """Finished under this run's key (other settings leave a run to train anew)."""
        run_dir = self.run_dir(run_spec, seed)
        key_path = run_dir / "run_key.json"
        if not key_path.is_file() or finished_summary(run_dir, full=False) is None:
            return False
        keys = run_keys(self.profile.train, self.profile.model, run_spec, seed, self.shared[run_spec.name],
                        self.steps)
        return json.loads(key_path.read_text()) in keys

    def pending(self) -> list:
        return [(r, s) for r, s in self.selected if not self.is_done(r, s)]

    def poll(self, every_s: float = 2.0) -> None:
        """Count the units workers have finished since the last look (at most every `every_s`)."""
        if self.bar is None or time.perf_counter() - self.last_check < every_s:
            return
        self.last_check = time.perf_counter()
        for run_spec, seed in self.selected:
            if unit_label(run_spec, seed) not in self.done and self.is_done(run_spec, seed):
                self.finished(run_spec, seed)

    def now_training(self, run_spec, seed: int) -> None:
        if self.bar is not None and unit_label(run_spec, seed) not in self.done:
            self.bar.set_postfix(run=f"{run_spec.name} seed {seed}")

    def finished(self, run_spec, seed: int) -> None:
        label = unit_label(run_spec, seed)
        if label not in self.done:
            self.done.add(label)
            if self.bar is not None:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_units_in_workers(module: str, profile, counter: RunCounter, workers: int, progress: bool = True) -> None:
    """Share the unfinished (run, seed) units among single-thread worker processes, each
    `python -m <module> --units run:seed,...`, balanced by `unit_cost` so that no core waits
    while another still holds several runs. The reference pass has run here already; workers
    read its cache."""
    pending = counter.pending()
    cost = {unit_label(r, s): unit_cost(r, counter.shared[r.name]) for r, s in pending}
    shares = balanced_shares([unit_label(r, s) for r, s in pending], workers, cost)
    spec = worker_profile(profile, counter.stage_dir)
    run_shares(module, spec, "--units", shares, counter.stage_dir, progress,
               on_tick=counter.poll)
