"""Notebook 04's exercise: the tether lesson's SPoT-BCO run again at another learning rate or β,
trained by stage 04's own plan and inputs into a folder of its own (`spotlib.analysis.tether` reads it)."""
from __future__ import annotations


def exercise_run(profile, lr: float | None = None, beta: float | None = None, progress: bool = True) -> dict:
    """The lesson's SPoT-BCO run again at another learning rate and/or β (first seed, the stage's data,
    steps and reference), into its own folder `04_train_spot/exercise/lr<lr>_beta<β>/`: the lesson's
    and the study's runs stay as they are. Returns a `lesson_run`-shaped dict for `lesson_summary`."""
    import dataclasses

    from spotlib.stages import train_methods
    from spotlib.analysis.tether import LESSON_RUN, _stage_lr, demonstration_lr, exercise_dir
    from spotlib.train.trainer import train_run

    lr = float(lr if lr is not None else demonstration_lr(profile.train) or _stage_lr(profile.train))
    beta = float(beta if beta is not None else profile.train.beta)
    if lr <= 0 or beta <= 0:
        raise ValueError(f"exercise_run: learning rate and β must be > 0, got lr={lr:g}, β={beta:g}")
    plan = train_methods.plan_stage(profile)
    spec = next((r for r in plan.runs if r.name == LESSON_RUN), None)
    if spec is None:
        raise ValueError(f"exercise_run: train.methods holds no {LESSON_RUN}")
    shared = train_methods.shared_inputs(profile, plan, runs=[spec])
    cfg = dataclasses.replace(profile.train, beta=beta, lr={**profile.train.lr, LESSON_RUN: lr})
    run_dir = exercise_dir(profile, lr, beta)
    train_run(cfg, profile.model, spec, profile.seeds[0], shared[LESSON_RUN], run_dir, steps=plan.steps,
              device=profile.device, progress=progress)
    return {"dir": run_dir, "lr": lr, "stage_lr": _stage_lr(profile.train), "seed": profile.seeds[0],
            "own_run": True, "beta": beta}
