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
