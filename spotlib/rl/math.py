"""The arithmetic of GRPO: group advantages, the clipped ratio loss, the k3 KL, and
completion-token log-probs computed by chunks of the LM head.

`PolicyLogps` wraps a causal LM so that one forward returns per-token log-probs (fp32)
of the completion tokens only. The decoder runs on the whole sequence; the vocabulary
projection runs on completion positions, `chunk_tokens` at a time, each chunk under
activation checkpointing when gradients are on: the full-vocabulary fp32 logits of the
batch ([tokens, 152k] for Qwen3) are never held, only one chunk's. Because the whole
computation is the wrapper's `forward`, DDP/DeepSpeed wrap this module and their
gradient hooks run.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

KL_CLAMP = 10.0  # verl's `low_var_kl` clamps k3 to [−10, 10] against rare huge ratios


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """A = (r − mean_g) / (std_g + ε) per row; `rewards` is [groups, n]. n = 1 gives A = r − r = 0."""
    rewards = rewards.float()
    if rewards.shape[1] < 2:
        return torch.zeros_like(rewards)
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)  # unbiased, as verl's compute_grpo_outcome_advantage
    return torch.where(std > 0, centered / (std + eps), torch.zeros_like(centered))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float | None = KL_CLAMP) -> torch.Tensor:
    """Per-token k3 estimate of KL(π ‖ π_ref) at tokens sampled from π: e^{Δ} − Δ − 1, Δ = log π_ref − log π."""
    delta = ref_logp - logp
    kl = torch.exp(delta) - delta - 1.0
    return kl.clamp(-clamp, clamp) if clamp is not None else kl


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                    clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss max(−Aρ, −A·clip(ρ, 1−ε, 1+ε)) and where the clip was active (bool).

    `advantages` broadcasts against the token dimension ([B, 1] for one advantage per sequence).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(π(·|context)) per position, fp32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _head_logps(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, with_entropy: bool):
    """log p(target) (fp32) for one chunk of positions, and their entropies (no grad) if asked."""
    logits = head(hidden).float()
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = token_entropy(logits)
    return logps, entropy


class PolicyLogps(nn.Module):
    """A causal LM whose forward gives completion-token log-probs, by chunks of the LM head.

    forward(input_ids, attention_mask, completion_mask, with_entropy) -> (logps [B, T−1],
    entropy [B, T−1] or None): position t holds log p(input_ids[t+1] | ..t); positions that
    are not completion targets hold 0.
    """

    def __init__(self, lm: nn.Module, chunk_tokens: int = 1024):
        super().__init__()
        if chunk_tokens < 1:
            raise ValueError(f"rl.logp_chunk_tokens: expected a positive integer, got {chunk_tokens}")
        self.lm = lm
        self.chunk_tokens = chunk_tokens

    def forward(self, input_ids, attention_mask, completion_mask, with_entropy: bool = False):
        hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                       use_cache=False).last_hidden_state
        target_mask = completion_mask[:, 1:].bool()
        states = hidden[:, :-1][target_mask]
        targets = input_ids[:, 1:][target_mask]
        head = self.lm.get_output_embeddings()
        parts, entropies = [], []
        for start in range(0, max(states.shape[0], 1), self.chunk_tokens):
            chunk = (head, states[start:start + self.chunk_tokens], targets[start:start + self.chunk_tokens],
                     with_entropy)
            if torch.is_grad_enabled():  # keep only the chunk's hidden states; logits are recomputed
                logps, entropy = checkpoint(_head_logps, *chunk, use_reentrant=False)
            else:
                logps, entropy = _head_logps(*chunk)
            parts.append(logps)
            entropies.append(entropy)
        out = torch.zeros(target_mask.shape, dtype=torch.float32, device=input_ids.device)
        out = out.masked_scatter(target_mask, torch.cat(parts))
        entropy = None
        if with_entropy:
            entropy = torch.zeros(target_mask.shape, dtype=torch.float32, device=input_ids.device)
            entropy = entropy.masked_scatter(target_mask, torch.cat(entropies))
        return out, entropy
