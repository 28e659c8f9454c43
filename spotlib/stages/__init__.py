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
    title: str = ""  # its section heading in the report


STAGES = [
    Stage("01_sample", "01_sample.ipynb", "base model; all/errors/correct.jsonl", "Sampling the student"),
    Stage("02_rectify", "02_rectify.ipynb", "rectified.jsonl, direct.jsonl (Oracle)",
          "Rectifying the student's mistakes"),
    Stage("03_filter", "03_filter.ipynb", "pairs/sft_plus/sft_direct/rft.jsonl, proximity report",
          "Verifying and filtering: how proximal are the pairs?"),
    Stage("04_train_spot", "04_train_spot.ipynb", "one checkpoint per method and seed, metrics.jsonl",
          "Training every method, and measuring the tether"),
    Stage("05_eval_forgetting", "05_eval_forgetting.ipynb", "results table, figures, report.md",
          "Evaluation: what each method gained, and what it forgot"),
    Stage("06_rl_init", "06_rl_init.ipynb", "GRPO from base vs from SPoT, Table 4", "RL from the SPoT checkpoint"),
]
