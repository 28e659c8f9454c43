"""The trainer shared by every method: run specs, data, log-probs, probes, the loop.

See `trainer.train_run` for one (method, seed) run and `spotlib.stages.train_methods`
for the stage that runs them all.
"""
from .runspec import METHODS, RunSpec, parse_run, plan_runs
from .trainer import RunInputs, train_run

__all__ = ["METHODS", "RunSpec", "parse_run", "plan_runs", "RunInputs", "train_run"]
