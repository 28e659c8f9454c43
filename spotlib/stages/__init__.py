"""One module per study stage; each exposes `run(profile, progress=True) -> dict`.

The notebooks call these functions and draw their results; the logic lives here so
tests can cover it. `STAGES` is the study's one list of stages, in order: `reproduce`
runs their notebooks and `report` writes their sections.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str       # the stage's folder under outputs/<profile>/
    notebook: str   # its notebook under notebooks/
    produces: str


STAGES = [
    Stage("01_sample", "01_sample.ipynb", "base model; all/errors/correct.jsonl"),
    Stage("02_rectify", "02_rectify.ipynb", "rectified.jsonl, direct.jsonl (Oracle)"),
    Stage("03_filter", "03_filter.ipynb", "pairs/sft_plus/sft_direct/rft.jsonl, proximity report"),
    Stage("04_train_spot", "04_train_spot.ipynb", "one checkpoint per method and seed, metrics.jsonl"),
    Stage("05_eval_forgetting", "05_eval_forgetting.ipynb", "results table, figures, report.md"),
    Stage("06_rl_init", "06_rl_init.ipynb", "GRPO from base vs from SPoT, Table 4"),
]
