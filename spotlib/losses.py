"""The objectives every method trains with, written as the paper's equations.

All functions take per-sequence **summed** completion log-probs (fp32, shape [B]) and
return `(losses [B], chosen_rewards [B], rejected_rewards [B] | None)`, where the
implicit reward is

    r(x, y) = β · (log π_θ(y|x) − log π_ref(y|x))          (detached)

| objective    | loss per example                                   |
|--------------|----------------------------------------------------|
| `sft`        | −log π_θ(y⁺|x) / |y⁺|        (token-mean NLL)      |
| `kl_sft`     | sft + c · mean_t KL(π_θ(·|x,y<t) ‖ π_ref(·|x,y<t))  |
| `dpo`        | −log σ(r⁺ − r⁻)                                     |
| `reward_sft` | −log σ(r⁺)                                         |
| `bce`        | −log σ(r⁺) − log σ(−r⁻)                            |
| `bco`        | −log σ(r⁺ − δ) − log σ(−(r⁻ − δ))                  |

δ (a stop-gradient estimate of ½E[r⁺ + r⁻]) is kept by `DeltaTracker`.

`gradient_weights` gives each objective's weights w⁺, w⁻ in
−∂loss = w⁺ · ∇log π(y⁺|x) − w⁻ · ∇log π(y⁻|x): how hard a step pulls y⁺ up and
pushes y⁻ down. For the reward-based objectives w⁺ = βσ(·) decays to 0 as r⁺ grows:
the "elastic tether" — a per-example early stop once the policy has moved far
enough from π_ref. SFT's weight never decays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def implicit_rewards(policy_logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """r = β (log π_θ − log π_ref), detached: rewards are read, never differentiated."""
    return (beta * (policy_logps - ref_logps)).detach()


def _rewards_or_none(policy_logps, ref_logps, beta):
    if policy_logps is None or ref_logps is None:
        return None
    return implicit_rewards(policy_logps, ref_logps, beta)


def sft(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor | None = None,
        ref_chosen_logps: Tensor | None = None, ref_rejected_logps: Tensor | None = None, *,
        beta: float = 0.1, chosen_counts: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """SFT (and SFT+, RFT): loss = −log π_θ(y⁺|x) / |y⁺| (token-mean NLL per example).

    Rewards are reported when reference log-probs are given (for monitoring only).
    """
    losses = -policy_chosen_logps / chosen_counts.clamp(min=1)
    return (losses, _rewards_or_none(policy_chosen_logps, ref_chosen_logps, beta),
            _rewards_or_none(policy_rejected_logps, ref_rejected_logps, beta))


def kl_sft(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor | None = None,
           ref_chosen_logps: Tensor | None = None, ref_rejected_logps: Tensor | None = None, *,
           beta: float = 0.1, chosen_counts: Tensor, token_kl_sums: Tensor, kl_coef: float):
    """KL-regularised SFT: loss = −log π_θ(y⁺|x)/|y⁺| + c · Σ_t KL_t / |y⁺|.

    KL_t = Σ_v π_θ(v|x,y⁺<t) (log π_θ − log π_ref)(v|x,y⁺<t) is the exact token-level
    KL over the vocabulary at each completion position of the same sequences
    (`token_kl_sums` [B], from `token_kl`), with gradient through π_θ.
    """
    counts = chosen_counts.clamp(min=1)
    losses = -policy_chosen_logps / counts + kl_coef * token_kl_sums / counts
    return (losses, _rewards_or_none(policy_chosen_logps, ref_chosen_logps, beta),
            _rewards_or_none(policy_rejected_logps, ref_rejected_logps, beta))


def dpo(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float = 0.1):
    """DPO (sigmoid): loss = −log σ(β[(log π_θ − log π_ref)(y⁺) − (log π_θ − log π_ref)(y⁻)])."""
    margin = beta * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps))
    return (-F.logsigmoid(margin), implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
            implicit_rewards(policy_rejected_logps, ref_rejected_logps, beta))


def reward_sft(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor | None = None,
               ref_chosen_logps: Tensor | None = None, ref_rejected_logps: Tensor | None = None, *,
               beta: float = 0.1):
    """Reward-SFT (positive-only BCE): loss = −log σ(r⁺), r⁺ with gradient."""
    logits = beta * (policy_chosen_logps - ref_chosen_logps)
    return (-F.logsigmoid(logits), implicit_rewards(policy_chosen_logps, ref_chosen_logps, beta),
            _rewards_or_none(policy_rejected_logps, ref_rejected_logps, beta))


def bco(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float = 0.1,
        delta: float | Tensor = 0.0):
    """SPoT-BCO: loss = −log σ(r⁺ − δ) − log σ(−(r⁻ − δ)), δ a constant (stop-gradient)."""
    if isinstance(delta, Tensor):
        delta = delta.detach()
    chosen = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected = beta * (policy_rejected_logps - ref_rejected_logps)
    losses = -F.logsigmoid(chosen - delta) - F.logsigmoid(-(rejected - delta))
    return losses, chosen.detach(), rejected.detach()


def bce(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor, ref_rejected_logps: Tensor, *, beta: float = 0.1):
    """SPoT-BCE: loss = −log σ(r⁺) − log σ(−r⁻)  (= `bco` with δ = 0)."""
    return bco(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
               beta=beta, delta=0.0)


def token_kl(policy_logits: Tensor, ref_logits: Tensor, mask: Tensor) -> Tensor:
    """Σ_t mask_t · KL(π_θ ‖ π_ref) at each position, exact over the vocab, in fp32: [B].

    Logits are [B, T, V] for the same positions; `mask` [B, T] selects completion tokens. The
    trainer (kl_sft) calls it on one LM-head chunk at a time, each position a row of length 1.
    """
    logp = F.log_softmax(policy_logits.float(), dim=-1)
    logq = F.log_softmax(ref_logits.float(), dim=-1)
    per_position = (logp.exp() * (logp - logq)).sum(-1)
    return (per_position * mask.to(per_position.dtype)).sum(-1)


# ---------------------------------------------------------------------------------
# Gradient weights (docs/method.md): the elastic tether in closed form.

OBJECTIVES = ("sft", "kl_sft", "reward_sft", "dpo", "bce", "bco")


def gradient_weights(objective: str, chosen_rewards: Tensor, rejected_rewards: Tensor | None = None, *,
                     beta: float = 0.1, delta: float = 0.0, chosen_counts: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:
    """(w⁺, w⁻) with −∂loss/∂log π(y⁺) = w⁺ and ∂loss/∂log π(y⁻) = w⁻, per example.

    | objective  | w⁺             | w⁻            |
    |------------|----------------|---------------|
    | sft        | 1/|y⁺|         | 0             |
    | kl_sft     | 1/|y⁺| (NLL part; the KL term acts on the whole distribution) | 0 |
    | reward_sft | βσ(−r⁺)        | 0             |
    | dpo        | βσ(−(r⁺ − r⁻)) | the same      |
    | bce        | βσ(−r⁺)        | βσ(r⁻)        |
    | bco        | βσ(δ − r⁺)     | βσ(r⁻ − δ)    |

    (Per token, SFT's weight is 1; the summed log-prob carries 1/|y⁺| under a token mean.)
    """
    r_pos = chosen_rewards.float()
    zeros = torch.zeros_like(r_pos)
    if objective in ("sft", "kl_sft"):
        if chosen_counts is None:
            raise ValueError(f"gradient_weights({objective!r}) needs chosen_counts")
        return 1.0 / chosen_counts.float().clamp(min=1), zeros
    if objective == "reward_sft":
        return beta * torch.sigmoid(-r_pos), zeros
    if rejected_rewards is None:
        raise ValueError(f"gradient_weights({objective!r}) needs rejected_rewards")
    r_neg = rejected_rewards.float()
    if objective == "dpo":
        w = beta * torch.sigmoid(-(r_pos - r_neg))
        return w, w
    if objective == "bce":
        delta = 0.0
    elif objective != "bco":
        raise ValueError(f"unknown objective {objective!r} (expected one of {', '.join(OBJECTIVES)})")
    return beta * torch.sigmoid(delta - r_pos), beta * torch.sigmoid(r_neg - delta)


# ---------------------------------------------------------------------------------
# δ: the moving baseline of SPoT-BCO.

DELTA_MODES = ("running_mean", "ema", "none")


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_sum(values: Tensor) -> Tensor:
    """Sum over processes when torch.distributed is up; the identity otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@dataclass
class DeltaTracker:
    """δ for SPoT-BCO; updated with each micro-batch **before** that batch's loss.

    Each micro-batch contributes m = mean(cat(r⁺, r⁻)) (its mean reward). With P
    processes, the P values are all-reduced first (sum S = Σ_p m_p, count P).

    - `running_mean` (the authors' code): cumulative, count-weighted mean of the
      micro-batch means, starting at 0:  n ← n + P;  δ ← δ + (S − P·δ)/n.
      (So δ after k single-process updates is (m₁ + … + m_k)/k.)
    - `ema` (the paper's words): δ ← d·δ + (1 − d)·S/P, starting at 0.
    - `none`: δ = 0 always, which makes BCO equal BCE.

    `state_dict()` / `load_state_dict()` carry δ across checkpoints so a resumed run
    continues exactly.
    """
    mode: str = "running_mean"
    decay: float = 0.99
    value: float = 0.0
    count: float = 0.0
    _pending: Tensor | None = field(default=None, repr=False, compare=False)  # δ not yet read from the device

    def __post_init__(self):
        if self.mode not in DELTA_MODES:
            raise ValueError(f"unknown delta mode {self.mode!r} (expected one of {', '.join(DELTA_MODES)})")

    def update(self, chosen_rewards: Tensor, rejected_rewards: Tensor) -> float:
        """Fold in one micro-batch; returns the δ to use for that batch."""
        if self.mode == "none":
            return 0.0
        self.update_on_device(chosen_rewards, rejected_rewards)
        self.settle()
        return self.value

    def update_on_device(self, chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor | float:
        """`update` without reading the device: δ stays a tensor (fp64, the same arithmetic as
        Python floats) until `settle()`; returns it in fp32 for the loss, as a Python float
        would act on fp32 rewards."""
        if self.mode == "none":
            return 0.0
        batch_mean = torch.cat([chosen_rewards.detach().float().reshape(-1),
                                rejected_rewards.detach().float().reshape(-1)]).mean()
        total = _all_reduce_sum(batch_mean.reshape(1)).double()[0]
        processes = float(_world_size())
        value = self._pending if self._pending is not None else torch.tensor(self.value, dtype=torch.float64,
                                                                             device=total.device)
        if self.mode == "running_mean":
            self.count += processes
            value = value + (total - processes * value) / self.count
        else:
            value = self.decay * value + (1.0 - self.decay) * total / processes
        self._pending = value
        return value.float()

    def settle(self) -> None:
        """Read δ from the device into `value` (once per logged step)."""
        if self._pending is not None:
            self.value, self._pending = float(self._pending), None

    def state_dict(self) -> dict:
        self.settle()
        return {"mode": self.mode, "decay": self.decay, "value": self.value, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self._pending = None
        if state.get("mode", self.mode) != self.mode:
            raise ValueError(f"checkpoint δ mode {state.get('mode')!r} differs from {self.mode!r}")
        self.value = float(state["value"])
        self.count = float(state["count"])
        self.decay = float(state.get("decay", self.decay))


def sigmoid(x: float) -> float:
    """Plain-float σ for plots and tables."""
    return 1.0 / (1.0 + math.exp(-x))
