"""Live training curves: every record a run writes to `metrics.jsonl` also goes to the trackers
`train.report_to` names (tensorboard, wandb, trackio, mlflow; `none` for no tracker), through
accelerate's tracker classes (`accelerate.tracking`).

One tracker run per trained model: `<stage>/<run>/seed<k>` (e.g. `04_train_spot/spot_bco/seed0`,
`06_rl_init/spot_bco/seed0`). TensorBoard writes it under `<output_dir>/tensorboard/`, so
`tensorboard --logdir outputs` (`make tensorboard`) shows the runs of every profile, grouped by
profile; wandb, trackio and mlflow put it in the project (experiment) `spotlib-<profile>`.

Each record's numbers become scalars `<kind>/<key>` at the record's step: `train/loss`,
`train/rewards/chosen`, `train/rewards/margins`, `train/delta`, `train/tether/chosen`, `train/lr`,
`train/grad_norm`, `train/tokens_per_s`, `probe/kl`, ... (GRPO: `train/reward_mean`, `train/kl`, ...,
`heldout/heldout_accuracy`); `metrics.jsonl` stays the record of the run.

Why the tracker classes and not `Accelerator(log_with=...)`: stage 04 trains many runs in one
process, one after another; `Accelerator.end_training()` finishes the trackers *and* destroys the
process group the next run still trains in; one `init_trackers` project name cannot be both
TensorBoard's run folder and wandb's project; and TensorBoard's `purge_step` (a resumed run drops
the steps logged after its checkpoint) is known only once the checkpoint is found. The classes
are the ones `Accelerator.init_trackers` builds, started, logged to and finished the same way.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from spotlib.config import TRACKERS, report_to_problem  # noqa: F401 - the names report_to may hold

TENSORBOARD_DIR = "tensorboard"   # under the profile's output folder


def trackers_of(report_to: str | list[str]) -> list[str]:
    """`train.report_to` as a list of tracker names ("none" and [] mean no tracker)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [n for n in names if n != "none"]


@dataclass
class TrackerSpec:
    """Where and under which name one run is tracked."""
    report_to: list[str]
    logging_dir: str          # TensorBoard's root: <output_dir>/tensorboard
    project: str              # wandb/trackio project, mlflow experiment: spotlib-<profile>
    run_name: str             # <stage>/<run>/seed<k>
    config: dict              # the run's settings (hyperparameters)


def run_tracking(profile, run_dir: str | Path, config: dict) -> TrackerSpec | None:
    """The tracking of the run trained into `run_dir` (named by its place under the profile's output
    folder, e.g. `04_train_spot/sft/seed0`); None when `train.report_to` is none."""
    names = trackers_of(profile.train.report_to)
    if not names:
        return None
    run_dir = Path(run_dir)
    try:
        run_name = run_dir.resolve().relative_to(profile.out.resolve()).as_posix()
    except ValueError:   # a run outside the output folder: its last three parts
        run_name = "/".join(run_dir.parts[-3:])
    return TrackerSpec(names, str(profile.out / TENSORBOARD_DIR), f"spotlib-{profile.name}", run_name,
                       {"profile": profile.name, **config})


def training_tracking(profile, run_spec, seed: int, steps: int, run_dir: str | Path,
                      train_cfg=None) -> TrackerSpec | None:
    """`run_tracking` of a stage-04 run (`train_run`), with its method and train settings as its config."""
    from .runspec import NOT_IN_RUN_KEY, lr_for

    cfg = train_cfg or profile.train
    config = {"run": run_spec.name, "method": run_spec.method, "objective": run_spec.objective,
              "data": run_spec.data, "delta_mode": run_spec.delta_mode if run_spec.objective == "bco" else None,
              "seed": seed, "steps": steps, "lr": lr_for(cfg, run_spec.method),
              "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_RUN_KEY}}
    return run_tracking(profile, run_dir, config)


def flat_config(values: dict, prefix: str = "") -> dict:
    """Nested settings as `a.b: value` with values trackers accept (bool, int, float, str)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = "None" if value is None else value
        else:
            out[name] = str(value)
    return out


def scalars(record: dict, kind: str | None = None) -> dict[str, float]:
    """A metrics record's numbers as tracker scalars `<kind>/<key>` (its step and kind are not scalars)."""
    kind = record.get("kind", kind or "train")
    return {f"{kind}/{key}": float(value) for key, value in record.items()
            if key not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


def _tracker_classes():
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    from accelerate.utils import (is_mlflow_available, is_tensorboard_available, is_trackio_available,
                                  is_wandb_available)

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available,
                 "trackio": is_trackio_available, "mlflow": is_mlflow_available}
    return LOGGER_TYPE_TO_CLASS, available


def missing_trackers(report_to: str | list[str]) -> list[str]:
    """The trackers `train.report_to` names that are not installed here."""
    _, available = _tracker_classes()
    return [n for n in trackers_of(report_to) if not available[n]()]


class RunTracker:
    """The trackers of one run, started at `resume_step` (0: a fresh run, whose old TensorBoard
    folder is cleared; k: a resumed run, whose TensorBoard steps after k are purged)."""

    def __init__(self, spec: TrackerSpec, resume_step: int = 0):
        classes, _ = _tracker_classes()
        missing = missing_trackers(spec.report_to)
        if missing:
            raise RuntimeError(f"train.report_to: {', '.join(missing)} is not installed (pip install "
                               f"{' '.join(missing)}), or set train.report_to: none")
        self.spec = spec
        self.trackers = []
        self._open = 0
        tb_dir = Path(spec.logging_dir) / spec.run_name
        for name in spec.report_to:
            cls = classes[name]
            if name == "tensorboard":
                if resume_step == 0 and tb_dir.exists():
                    shutil.rmtree(tb_dir)   # another run's curves (other settings) under this name
                tracker = cls(spec.run_name, spec.logging_dir, purge_step=resume_step + 1)
            elif name == "mlflow":
                tracker = cls(spec.project, run_name=spec.run_name)
            else:   # wandb, trackio: project, run name and the stage as the run's group
                tracker = cls(spec.project, name=spec.run_name, group=spec.run_name.split("/")[0])
            tracker.start()
            # TensorBoard's hyperparameters go to a folder of their own: once per run, not per resume
            if not (name == "tensorboard" and resume_step > 0):
                tracker.store_init_configuration(flat_config(spec.config))
            self.trackers.append(tracker)

    @property
    def tensorboard_dir(self) -> Path:
        return Path(self.spec.logging_dir) / self.spec.run_name

    def log(self, record: dict, kind: str | None = None) -> None:
        values = scalars(record, kind)
        if values and "step" in record:
            for tracker in self.trackers:
                tracker.log(values, step=int(record["step"]))

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


class TrackedLog:
    """A metrics log (`JsonlAppender`) whose every new record also goes to `tracker`; closing the
    last log of a tracker finishes it. Anything else is the log's own (`records`, `done`, ...)."""

    def __init__(self, log, tracker: RunTracker | None, kind: str | None = None):
        self._log, self._tracker, self._kind = log, tracker, kind
        if tracker is not None:
            tracker._open += 1

    def append(self, record: dict):
        written = self._log.append(record)
        if self._tracker is not None:
            if not written:   # a resumed run's step after its checkpoint, which TensorBoard purged when the
                key = self._log.key_fn(record)   # run resumed: the log keeps its first record, and so do the curves
                record = next(r for r in reversed(self._log.records) if self._log.key_fn(r) == key)
            self._tracker.log(record, self._kind)
        return written

    def close(self) -> None:
        self._log.close()
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker._open -= 1
            if tracker._open == 0:
                tracker.finish()

    def __getattr__(self, name):
        return getattr(self._log, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tracked(log, spec: TrackerSpec | None, resume_step: int = 0, kind: str | None = None):
    """`log`, mirrored to the run's trackers when there are any (`spec`); else `log` itself."""
    if log is None or spec is None:
        return log
    return TrackedLog(log, RunTracker(spec, resume_step), kind)
