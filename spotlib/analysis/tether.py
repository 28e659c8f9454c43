"""The tether along a training run, read back from its `metrics.jsonl`.

Per optimiser step the trainer logs the batch means of the implicit rewards
r = β log(π_θ/π_ref) on y⁺ and y⁻ (`rewards/chosen`, `rewards/rejected`), δ, and the mean
gradient weights each example actually received (`tether/chosen`, `tether/rejected`): the
measured λ⁺ and λ⁻. For SPoT-BCO

    λ⁺ = βσ(δ − r⁺)     (the pull on y⁺ fades as r⁺ rises above δ)
    λ⁻ = βσ(r⁻ − δ)     (the push on y⁻ fades as r⁻ falls below δ)

`tether_curve` returns both the measured λ and the weights derived from the batch-mean
rewards by these formulas (`w_*`): they agree while the rewards of a batch are close
together, and the measured mean is the larger one once they spread (σ is convex there).
From the probe records it also returns the held-out KL(π_θ‖π_ref) and the rewards on the
fixed diagnostic pairs at the same steps: the sequence-level log-ratio that r measures on
the training data, next to the token-level drift it stands for on prompts never trained.

Notebook 04's tether lesson reads one SPoT-BCO run (`lesson_run`): at the study's learning
rates the rewards stay near 0 and the weights at β/2, so stage 04 also trains SPoT-BCO at
`train.tether_lr` (default: the top of `train.lr_grid`), first seed, the stage's data, steps and
reference, into 04_train_spot/tether/spot_bco/seed<k>/ (`train_demonstration`), keyed like
every run. Where that LR is the stage's own SPoT-BCO LR, or neither key is set (paper), nothing
extra is trained and the lesson reads the stage's SPoT-BCO run.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from spotlib import losses as L
from spotlib.io import read_jsonl

TRAIN_KEYS = {"r_chosen": "rewards/chosen", "r_rejected": "rewards/rejected", "delta": "delta",
              "lambda_chosen": "tether/chosen", "lambda_rejected": "tether/rejected"}
PROBE_KEYS = {"kl": "kl/probe", "fixed_r_chosen": "fixed/rewards_chosen", "fixed_r_rejected": "fixed/rewards_rejected"}


def _value(record: dict, key: str) -> float:
    value = record.get(key)
    return math.nan if value is None else float(value)


def tether_curve(metrics: str | Path | list[dict], beta: float, objective: str = "bco") -> dict:
    """{"train": {step, r_chosen, r_rejected, delta, lambda_*, w_*: lists}, "probe": {step, kl, fixed_r_*}}.

    `metrics`: a run's metrics.jsonl (or its records); `beta` the run's β; `objective` the
    one the run trained with (`spotlib.losses` name: the weights' formula)."""
    records = read_jsonl(metrics) if not isinstance(metrics, list) else metrics
    train = sorted((r for r in records if r.get("kind") == "train"), key=lambda r: r["step"])
    probe = sorted((r for r in records if r.get("kind") == "probe"), key=lambda r: r["step"])
    if not train:
        raise ValueError(f"{metrics if not isinstance(metrics, list) else 'metrics'}: no training records "
                         "(kind: train) to read the tether from")
    curve = {"step": [r["step"] for r in train]}
    curve.update({name: [_value(r, key) for r in train] for name, key in TRAIN_KEYS.items()})
    r_pos = torch.tensor(curve["r_chosen"], dtype=torch.float64)
    r_neg = torch.tensor(curve["r_rejected"], dtype=torch.float64)
    deltas = curve["delta"]
    w_pos, w_neg = [], []
    for i in range(len(train)):
        pos, neg = r_pos[i:i + 1], r_neg[i:i + 1]
        pairs = not math.isnan(float(neg))
        if objective in ("sft", "kl_sft"):  # 1/|y⁺| per example: not a function of the rewards
            w_pos.append(math.nan)
            w_neg.append(0.0)
            continue
        if objective != "reward_sft" and not pairs:
            raise ValueError(f"tether_curve({objective!r}): step {curve['step'][i]} has no rewards/rejected")
        wp, wn = L.gradient_weights(objective, pos, neg if pairs else None, beta=beta,
                                    delta=0.0 if math.isnan(deltas[i]) else deltas[i])
        w_pos.append(float(wp))
        w_neg.append(float(wn))
    curve["w_chosen"], curve["w_rejected"] = w_pos, w_neg
    probes = {"step": [r["step"] for r in probe]}
    probes.update({name: [_value(r, key) for r in probe] for name, key in PROBE_KEYS.items()})
    return {"train": curve, "probe": probes, "beta": beta, "objective": objective}


# ---------------------------------------------------------------------------------
# The lesson's run: SPoT-BCO where the rewards move far enough for the weights to fall.

LESSON_RUN = "spot_bco"
STAGE = "04_train_spot"


def demonstration_lr(train_cfg) -> float | None:
    """`train.tether_lr`, else the top of `train.lr_grid`; None when neither is set."""
    if train_cfg.tether_lr is not None:
        return float(train_cfg.tether_lr)
    return max(train_cfg.lr_grid) if train_cfg.lr_grid else None


def _stage_lr(train_cfg) -> float:
    from spotlib.train.trainer import lr_for

    return lr_for(train_cfg, LESSON_RUN)


def demonstration_needed(train_cfg) -> bool:
    """A run of its own only where its LR differs from the stage's SPoT-BCO LR (else that run is the lesson's)."""
    lr = demonstration_lr(train_cfg)
    return lr is not None and not math.isclose(lr, _stage_lr(train_cfg), rel_tol=1e-12)


def demonstration_dir(profile) -> Path:
    return profile.out / STAGE / "tether" / LESSON_RUN / f"seed{profile.seeds[0]}"


def demonstration_train_cfg(train_cfg):
    """The train settings with SPoT-BCO's LR set to the demonstration LR: the run is keyed by it."""
    import dataclasses

    return dataclasses.replace(train_cfg, lr={**train_cfg.lr, LESSON_RUN: demonstration_lr(train_cfg)})


def train_demonstration(profile, runs, shared: dict, steps: int, progress: bool = True) -> dict | None:
    """Stage 04's extra run for the lesson: SPoT-BCO at the demonstration LR, first seed, the stage's
    data, reference and steps, into `demonstration_dir`. A finished run with the same key is kept;
    another LR retrains it. None when no run of its own is needed or the stage trains no SPoT-BCO."""
    from spotlib.train.trainer import train_run

    spec = next((r for r in runs if r.name == LESSON_RUN), None)
    if spec is None or LESSON_RUN not in shared or not demonstration_needed(profile.train):
        return None
    from spotlib.train.tracking import training_tracking

    cfg, seed, run_dir = demonstration_train_cfg(profile.train), profile.seeds[0], demonstration_dir(profile)
    return train_run(cfg, profile.model, spec, seed, shared[LESSON_RUN], run_dir, steps=steps, device=profile.device,
                     progress=progress, tracking=training_tracking(profile, spec, seed, steps, run_dir, cfg))


def demonstration_finished(profile) -> bool:
    """False only where the lesson needs a run of its own and none is complete at its LR."""
    from spotlib.train.trainer import finished_summary

    if not demonstration_needed(profile.train):
        return True
    done = finished_summary(demonstration_dir(profile), full=False)
    return done is not None and math.isclose(float(done.get("lr", math.nan)), demonstration_lr(profile.train),
                                             rel_tol=1e-12)


def _lesson(train_cfg, stage_dir: Path, seed: int) -> dict:
    own = demonstration_needed(train_cfg)
    run_dir = stage_dir / "tether" / LESSON_RUN / f"seed{seed}" if own else stage_dir / LESSON_RUN / f"seed{seed}"
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'}: the tether lesson's run has not been trained "
                                f"(stage 04 trains it when train.methods holds {LESSON_RUN})")
    lr = demonstration_lr(train_cfg) if own else _stage_lr(train_cfg)
    return {"dir": run_dir, "lr": lr, "stage_lr": _stage_lr(train_cfg), "seed": seed, "own_run": own,
            "beta": float(train_cfg.beta)}


def lesson_run(profile) -> dict:
    """{"dir", "lr", "stage_lr", "seed", "own_run", "beta"}: the run the lesson reads (the demonstration run,
    or the stage's own SPoT-BCO run at its first seed where no other LR is asked for)."""
    return _lesson(profile.train, profile.out / STAGE, profile.seeds[0])


def lesson_from_stage(stage_dir: Path) -> dict | None:
    """`lesson_run` from a finished stage folder alone (the settings its manifest recorded), as the
    report reads it; None where the stage recorded no SPoT-BCO run or the lesson's run is absent."""
    import json
    from types import SimpleNamespace

    path = Path(stage_dir) / "manifest.json"
    try:
        params = json.loads(path.read_text()).get("params") or {}
    except (OSError, json.JSONDecodeError):
        return None
    train, seeds = params.get("train") or {}, params.get("seeds") or []
    if LESSON_RUN not in (train.get("methods") or []) or not seeds or "beta" not in train:
        return None
    cfg = SimpleNamespace(**{"tether_lr": None, "lr_grid": None, **train})
    try:
        return _lesson(cfg, Path(stage_dir), seeds[0])
    except (FileNotFoundError, ValueError):
        return None


def _finite(values: list[float]) -> list[tuple[int, float]]:
    return [(i, v) for i, v in enumerate(values) if not math.isnan(v)]


def lesson_summary(curve: dict, lesson: dict) -> str:
    """The lesson's numbers in a sentence: where the rewards, δ and the weights went along the run."""
    train, beta = curve["train"], curve["beta"]
    steps = train["step"]
    half = beta / 2

    def span(name: str, sign: str) -> str:
        values = _finite(train[name])
        (i_lo, lo), (i_hi, hi) = min(values, key=lambda t: t[1]), max(values, key=lambda t: t[1])
        return (f"{sign} ranged from {lo:.4f} (step {steps[i_lo]}, {100 * lo / half:.0f}% of β/2) to {hi:.4f} "
                f"(step {steps[i_hi]}, {100 * hi / half:.0f}%) and ends at {train[name][-1]:.4f}")

    gap = max(abs(w - lam) for w, lam in zip(train["w_chosen"] + train["w_rejected"],
                                             train["lambda_chosen"] + train["lambda_rejected"])
              if not (math.isnan(w) or math.isnan(lam)))
    margins = [p - n for p, n in zip(train["r_chosen"], train["r_rejected"])]
    source = (f"the tether run (train.tether_lr = {lesson['lr']:g}; the study's SPoT-BCO trains at "
              f"{lesson['stage_lr']:g})" if lesson["own_run"] else
              f"the study's own SPoT-BCO run at learning rate {lesson['lr']:g}")
    return (f"Reading {source}, seed {lesson['seed']}, {steps[-1]} steps, β = {beta:g}; λ = β/2 = {half:.4f} "
            f"at the start.\n"
            f"At the last step r⁺ = {train['r_chosen'][-1]:+.3f}, r⁻ = {train['r_rejected'][-1]:+.3f}, "
            f"δ = {train['delta'][-1]:+.3f} (all 0 at the start); the batch-mean margin r⁺ − r⁻ averaged "
            f"{sum(margins) / len(margins):+.3f} over the run (largest {max(margins):+.3f}).\n"
            f"{span('lambda_chosen', 'λ⁺')};\n{span('lambda_rejected', 'λ⁻')}.\n"
            f"βσ(·) of the batch-mean rewards differs from the mean weight received by at most {gap:.4f} "
            f"(only through the spread of rewards within a batch).\n" + direction_reading(curve))


def direction_reading(curve: dict) -> str:
    """Which way y⁺ moved and why λ⁺ sits where it ends: against 0 (π_ref) and against δ (the baseline)."""
    train, beta = curve["train"], curve["beta"]
    r_pos, delta, steps = train["r_chosen"][-1], train["delta"][-1], train["step"]
    fell = next((s for s, r in zip(steps, train["r_chosen"]) if r < 0), None)
    nats = r_pos / beta
    if r_pos < 0 and r_pos > delta:
        return (f"r⁺ fell below 0 at step {fell} and ends at {r_pos:+.3f}: log π(y⁺) on the training batches fell "
                f"{-nats:.2f} nats per sequence from π_ref. λ⁺ is below β/2 only because δ fell further "
                f"({delta:+.3f}): the tether let go of y⁺ relative to δ, not because y⁺ became likelier.")
    if r_pos >= 0 and r_pos > delta:
        return (f"r⁺ ends at {r_pos:+.3f}, above 0 and above δ ({delta:+.3f}): y⁺ became likelier than under π_ref "
                f"(+{nats:.2f} nats per sequence) and its pull slackened (λ⁺ < β/2).")
    return (f"r⁺ ends at {r_pos:+.3f}, below δ ({delta:+.3f}): λ⁺ > β/2, y⁺ is pulled harder than at the start"
            + (f" (r⁺ first fell below 0 at step {fell})." if fell is not None else "."))


def kl_summary(curve: dict) -> str:
    """The held-out KL next to the fixed pairs' log-ratios r/β, at the last probe and where the KL peaked."""
    probe, beta = curve["probe"], curve["beta"]
    rows = [(s, kl, rc / beta, rr / beta) for s, kl, rc, rr in
            zip(probe["step"], probe["kl"], probe["fixed_r_chosen"], probe["fixed_r_rejected"]) if not math.isnan(kl)]
    if len(rows) < 2:
        return "No held-out KL probes in this run (train.kl_probe_every: 0): nothing to set the rewards against."
    last, peak = rows[-1], max(rows, key=lambda r: r[1])
    line = (f"At step {last[0]} the held-out KL(π_θ‖π_ref) is {last[1]:.4f} nats per token; on the fixed pairs "
            f"log π_θ − log π_ref = r/β is {last[2]:+.2f} nats per sequence on y⁺ and {last[3]:+.2f} on y⁻.")
    if peak[0] != last[0]:
        line += (f" The KL peaked at step {peak[0]} ({peak[1]:.4f}), when r/β was {peak[2]:+.2f} on y⁺ "
                 f"and {peak[3]:+.2f} on y⁻.")
    return line


def stage_run_summary(profile) -> str | None:
    """How far the study's own SPoT-BCO run (first seed) moved, beside the lesson's run; None without one."""
    return _stage_run_summary(lesson_run(profile)) if demonstration_needed(profile.train) else None


def _stage_run_summary(lesson: dict) -> str | None:
    path = lesson["dir"].parents[2] / LESSON_RUN / f"seed{lesson['seed']}" / "metrics.jsonl"
    if not lesson["own_run"] or not path.is_file():
        return None
    train = tether_curve(path, beta=lesson["beta"])["train"]
    rewards = [abs(v) for _, v in _finite(train["r_chosen"] + train["r_rejected"])]
    weights = [v for _, v in _finite(train["lambda_chosen"] + train["lambda_rejected"])]
    half = lesson["beta"] / 2
    return (f"For comparison, the study's own SPoT-BCO run (learning rate {lesson['stage_lr']:g}, seed "
            f"{lesson['seed']}): |r⁺|, |r⁻| ≤ {max(rewards):.3f} along training, and its weights stayed within "
            f"{100 * min(weights) / half:.0f}%–{100 * max(weights) / half:.0f}% of β/2.")


def lesson_texts(lesson: dict) -> dict[str, str]:
    """What the lesson's cells print, by the function that prints it: the report shows the same lines."""
    curve = tether_curve(lesson["dir"] / "metrics.jsonl", beta=lesson["beta"], objective="bco")
    return {"lesson_summary": lesson_summary(curve, lesson), "stage_run_summary": _stage_run_summary(lesson) or "",
            "kl_summary": kl_summary(curve), "kl_comparison": kl_comparison(lesson)}


def lesson_curve(lesson: dict) -> dict:
    """The lesson run's `tether_curve`, read with the β it trained with."""
    return tether_curve(lesson["dir"] / "metrics.jsonl", beta=lesson["beta"], objective="bco")


def exercise_dir(profile, lr: float, beta: float) -> Path:
    return profile.out / STAGE / "exercise" / f"lr{lr:g}_beta{beta:g}" / f"seed{profile.seeds[0]}"


def kl_comparison(lesson: dict) -> str:
    """The lesson run's last held-out KL against the study's own SPoT-BCO run's (same seed), as a ratio."""
    if not lesson["own_run"]:
        return ""
    stage_path = lesson["dir"].parents[2] / LESSON_RUN / f"seed{lesson['seed']}" / "metrics.jsonl"
    if not stage_path.is_file():
        return ""
    mine = [v for _, v in _finite(lesson_curve(lesson)["probe"]["kl"])]
    theirs = [v for _, v in _finite(tether_curve(stage_path, beta=lesson["beta"])["probe"]["kl"])]
    if not mine or not theirs:
        return ""
    ratio = f"{mine[-1] / theirs[-1]:.0f}×" if theirs[-1] > 0 else "far more than"
    return (f"The lesson's run ends at a held-out KL of {mine[-1]:.3g} nats per token, {ratio} the study's own "
            f"SPoT-BCO run at learning rate {lesson['stage_lr']:g} ({theirs[-1]:.2g}): the tether_lr moves the "
            f"model far more than any run the study compares.")
