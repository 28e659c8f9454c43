"""GRPO: group-relative policy optimisation with a clipped ratio and a k3 KL loss (PAPER.md §6).

One step of the loop, for a batch of P prompts:

1. **Rollouts.** n responses per prompt from the current policy π_old (T = 1.0),
   through `spotlib.sampling.generate` (transformers on CPU; vLLM on GPUs, with the
   policy's weights pushed into the engine before each rollout).
2. **Rewards.** r = +1 if the grader accepts the response, else −1.
3. **Advantages**, normalised inside each prompt's group of n (verl's GRPO):
       A_i = (r_i − mean(r_group)) / (std(r_group) + ε),   std with Bessel's correction;
   a group whose rewards are all equal carries no signal (A = 0).
4. **Update**, in mini-batches of prompts (verl's `ppo_mini_batch_size`), one optimiser
   step each, on the token-level loss averaged over every completion token of the
   mini-batch ("token-mean"):
       ρ_t   = π_θ(y_t | x, y_<t) / π_old(y_t | x, y_<t)
       L^pg  = max(−A ρ_t, −A clip(ρ_t, 1 − ε, 1 + ε))
       L^kl  = k3_t = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1
       L     = mean_t(L^pg) + β_kl · mean_t(L^kl)
   k3 is the low-variance, always non-negative, unbiased estimator of KL(π_θ ‖ π_ref)
   from samples of π_θ (Schulman, "Approximating KL divergence"); π_ref is the run's
   start model. Policy entropy and the KL are logged, not optimised otherwise.

Checkpoints (weights with `save_pretrained`, optimiser, step) let a killed run resume;
per-step metrics go to `metrics.jsonl`, held-out accuracy to `heldout.jsonl`.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from spotlib.config import RLConfig
from spotlib.io import JsonlAppender, params_hash, read_jsonl, write_json_atomic
from spotlib.tokens import build_completion_batch, gather_logps

RewardFn = Callable[[list[dict], list[str]], Sequence[bool]]  # a grader: records, responses -> correct?

KL_CLAMP = 10.0  # verl's `low_var_kl` clamps k3 to [−10, 10] against rare huge ratios


# ----------------------------------------------------------------------------- the maths

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


# ----------------------------------------------------------------------------- helpers

def cpu_has_fast_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX). Without them CPU autocast is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast over fp32 weights where it pays: on GPUs, and on CPUs with native bf16
    (2× faster there, NOTES-CPU.md; on an AVX2-only CPU it is ~10× slower, so it is skipped)."""
    if not enabled or (device.type == "cpu" and not _FAST_BF16()):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


_FAST_BF16 = functools.cache(cpu_has_fast_bf16)


def prompt_schedule(n_items: int, prompts_per_step: int, steps: int, seed: int) -> list[list[int]]:
    """Item indices for every step: epochs of seeded permutations, cut into consecutive slices.

    Two runs with the same seed see the same prompts in the same order (equal budgets).
    """
    order: list[int] = []
    epoch = 0
    while len(order) < steps * prompts_per_step:
        perm = list(range(n_items))
        random.Random(seed * 7919 + epoch).shuffle(perm)
        order.extend(perm)
        epoch += 1
    return [order[s * prompts_per_step:(s + 1) * prompts_per_step] for s in range(steps)]


def total_steps(cfg: RLConfig, n_items: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return math.ceil(n_items * cfg.epochs / cfg.prompts_per_step)


def _sequence_forward(model, batch: dict[str, torch.Tensor], with_entropy: bool):
    """(token log-probs [B, T−1] fp32, entropies [B, T−1] or None) for a completion batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logps = gather_logps(logits, batch["input_ids"][:, 1:])
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = token_entropy(logits)
    return logps, entropy


def _batch(tokenizer, items, responses, truncated, max_len, max_prompt_len, device):
    """Completion batch; a truncated response gets no eos target (the model never wrote one)."""
    batch = build_completion_batch(tokenizer, [it["prompt"] for it in items], list(responses),
                                   max_len=max_len, max_prompt_len=max_prompt_len)
    mask = batch["completion_mask"]
    for row, cut in enumerate(truncated):
        if cut:
            last = int(mask[row].nonzero().max())
            mask[row, last] = 0
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------- rollouts

class RolloutEngine:
    """Samples n responses per prompt from the current policy.

    transformers: generates with the policy module itself. vLLM: one engine per process
    built from the start model's folder; before each rollout the policy's current weights
    are loaded into it in place (`model.load_weights(named tensors)` on the engine's
    model, found in-process; vLLM's prefix cache is reset because cached prompt KV came
    from the old weights).
    """

    def __init__(self, backend: str, init_path: str | os.PathLike, seed: int):
        from spotlib.sampling import choose_backend

        self.backend = choose_backend(backend)
        self.init_path = str(init_path)
        self.seed = seed
        if self.backend == "vllm":
            # The model must live in this process for in-place weight loading (vLLM V1).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    def sample(self, policy, tokenizer, prompts: Sequence[str], *, n: int, temperature: float,
               top_p: float, top_k: int, max_new_tokens: int, seed: int, batch_size: int,
               autocast) -> list[list[str]]:
        from spotlib.sampling import generate

        if self.backend == "vllm":
            llm = self.push_weights(policy)
            return generate(llm, tokenizer, prompts, n=n, temperature=temperature,
                            top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens, seed=seed,
                            backend="vllm", progress=False)
        with autocast:
            return generate(policy, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                            top_k=top_k, max_new_tokens=max_new_tokens, seed=seed,
                            batch_size=batch_size, backend="transformers", progress=False)

    def push_weights(self, policy):
        from spotlib.sampling import vllm_engine

        # The policy trains on the same GPU: leave it most of the memory.
        llm = vllm_engine(self.init_path, self.seed, memory_fraction=float(os.environ.get("SPOT_RL_VLLM_MEM", "0.3")))
        weights = ((name, tensor.detach()) for name, tensor in policy.state_dict().items())
        model = _vllm_model_handle(llm)
        if model is not None:
            model.load_weights(weights)
        else:  # engine core in another process: ship the tensors through vLLM's RPC
            state = [(name, tensor.detach().cpu()) for name, tensor in policy.state_dict().items()]
            llm.collective_rpc(_load_weights_on_worker, args=(state,))
        if hasattr(llm, "reset_prefix_cache"):
            llm.reset_prefix_cache()
        return llm


def _vllm_model_handle(llm):
    """The engine's torch module when it runs in this process (V1 in-process, or V0), else None."""
    paths = (("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),
             ("llm_engine", "engine_core", "engine_core", "model_executor", "driver_worker", "worker",
              "model_runner", "model"),
             ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"))
    for path in paths:
        node = llm
        try:
            for attr in path:
                node = getattr(node, attr)
            return node
        except AttributeError:
            continue
    return None


def _load_weights_on_worker(worker, state):
    worker.model_runner.model.load_weights(iter(state))


# ----------------------------------------------------------------------------- the trainer

def train_grpo(init_path: str | os.PathLike, run_dir: str | os.PathLike, items: list[dict],
               reward_fn: RewardFn, cfg: RLConfig, *, heldout: list[dict] | None = None,
               seed: int = 0, device: str = "auto", max_len: int = 512,
               max_prompt_len: int | None = None, backend: str = "transformers",
               dtype: str | None = None, progress: bool = True) -> dict:
    """GRPO from the model saved at `init_path` (also the KL reference) on `items` (problem records).

    `dtype` is the weights' dtype on GPUs (CPU: fp32 weights, bf16 autocast where it pays).
    Writes `run_dir/{metrics.jsonl, heldout.jsonl, checkpoint/, final/}`; a run whose
    `final/` exists returns at once, a killed run resumes from `checkpoint/`.
    Returns {"final": path, "steps": int, "metrics": [...], "heldout": [...]}.
    """
    from spotlib.models import load_model, resolve_device

    run_dir = Path(run_dir)
    _claim(run_dir, {"config": asdict(cfg), "seed": seed, "init": str(init_path), "max_len": max_len,
                     "items": [it["id"] for it in items], "heldout": [it["id"] for it in heldout or []]})
    final_dir = run_dir / "final"
    if (final_dir / "done.json").is_file():
        return _result(run_dir)
    if not items:
        raise ValueError("train_grpo: no training prompts")
    _check(cfg)

    dev = resolve_device(device)
    weights = "float32" if dev.type == "cpu" else (dtype or "bfloat16")
    policy, tokenizer = load_model(init_path, dtype=weights, device=str(dev))
    reference, _ = load_model(init_path, dtype=weights, device=str(dev))
    reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                  weight_decay=cfg.weight_decay)
    steps = total_steps(cfg, len(items))
    schedule = prompt_schedule(len(items), cfg.prompts_per_step, steps, seed)
    start = _resume(run_dir / "checkpoint", policy, optimizer)
    engine = RolloutEngine(backend, init_path, seed)
    amp = lambda: autocast_for(dev, cfg.bf16_autocast)  # noqa: E731 - a fresh context each use

    metrics = JsonlAppender(run_dir / "metrics.jsonl", key_fn=lambda r: r["step"])
    held = JsonlAppender(run_dir / "heldout.jsonl", key_fn=lambda r: r["step"])
    if heldout and start == 0 and 0 not in held:
        held.append(_heldout_record(0, policy, tokenizer, heldout, reward_fn, cfg, engine, amp, seed))
    bar = tqdm(range(start, steps), desc=f"grpo {run_dir.parent.name}/{run_dir.name}",
               disable=not progress, initial=start, total=steps)
    for step in bar:
        record = grpo_step(policy, reference, tokenizer, optimizer, [items[i] for i in schedule[step]],
                           reward_fn, cfg, engine=engine, step=step, seed=seed, device=dev,
                           max_len=max_len, max_prompt_len=max_prompt_len, amp=amp)
        metrics.append(record)
        done = step + 1
        if heldout and (done % cfg.eval_every == 0 or done == steps):
            held.append(_heldout_record(done, policy, tokenizer, heldout, reward_fn, cfg, engine, amp, seed))
        if cfg.save_every and done % cfg.save_every == 0 and done < steps:
            _save_checkpoint(run_dir / "checkpoint", policy, tokenizer, optimizer, done)
        bar.set_postfix(reward=f"{record['reward_mean']:+.2f}", kl=f"{record['kl']:.4f}")
    metrics.close()
    held.close()
    _save_pretrained_atomic(final_dir, policy, tokenizer)
    write_json_atomic(final_dir / "done.json", {"steps": steps, "config": asdict(cfg), "seed": seed})
    shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return _result(run_dir)


def grpo_step(policy, reference, tokenizer, optimizer, step_items: list[dict], reward_fn: RewardFn,
              cfg: RLConfig, *, engine: RolloutEngine, step: int, seed: int, device: torch.device,
              max_len: int, max_prompt_len: int | None, amp) -> dict:
    """One GRPO step (rollouts, rewards, advantages, mini-batch updates); returns its metrics."""
    t0 = time.perf_counter()
    n = cfg.rollouts_per_prompt
    responses = engine.sample(policy, tokenizer, [it["prompt"] for it in step_items], n=n,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                              max_new_tokens=cfg.max_new_tokens, seed=seed * 100_003 + step,
                              batch_size=cfg.rollout_batch, autocast=amp())
    t_rollout = time.perf_counter() - t0
    flat_items = [it for it in step_items for _ in range(n)]
    flat_resp = [r for group in responses for r in group]
    rewards = torch.tensor([1.0 if ok else -1.0 for ok in reward_fn(flat_items, flat_resp)])
    advantages = group_advantages(rewards.view(len(step_items), n)).view(-1)
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in flat_resp]
    truncated = [length >= cfg.max_new_tokens for length in lengths]

    # Mini-batches of whole prompt groups; π_old log-probs for all of them before any update.
    per_mini = min(cfg.mini_batch, len(step_items)) * n
    order = list(range(len(flat_items)))
    minis = [order[i:i + per_mini] for i in range(0, len(order), per_mini)]
    micro = lambda idx: [idx[i:i + cfg.micro_batch] for i in range(0, len(idx), cfg.micro_batch)]  # noqa: E731
    batches = {}
    for mini in minis:
        for chunk in micro(mini):
            batch = _batch(tokenizer, [flat_items[i] for i in chunk], [flat_resp[i] for i in chunk],
                           [truncated[i] for i in chunk], max_len, max_prompt_len, device)
            with torch.no_grad(), amp():
                batch["old_logps"] = _sequence_forward(policy, batch, False)[0]
                batch["ref_logps"] = _sequence_forward(reference, batch, False)[0]
            batch["advantages"] = advantages[chunk].to(device).unsqueeze(1)
            batches[tuple(chunk)] = batch

    policy.train()
    sums = {"pg_loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_frac": 0.0, "ratio_max": 1.0}
    tokens_seen = 0
    grad_norms = []
    for _ in range(cfg.ppo_epochs):
        for mini in minis:
            chunks = micro(mini)
            mini_tokens = sum(int(batches[tuple(c)]["completion_mask"][:, 1:].sum()) for c in chunks)
            optimizer.zero_grad(set_to_none=True)
            for chunk in chunks:
                batch = batches[tuple(chunk)]
                mask = batch["completion_mask"][:, 1:].float()
                with amp():
                    logps, entropy = _sequence_forward(policy, batch, True)
                pg, clipped = clipped_pg_loss(logps, batch["old_logps"], batch["advantages"], cfg.clip_eps)
                kl = k3_kl(logps, batch["ref_logps"])
                # Token-mean over the whole mini-batch: each micro-batch adds its share.
                loss = ((pg + cfg.kl_coef * kl) * mask).sum() / max(mini_tokens, 1)
                loss.backward()
                with torch.no_grad():
                    sums["pg_loss"] += float((pg * mask).sum())
                    sums["kl"] += float((kl * mask).sum())
                    sums["entropy"] += float((entropy * mask).sum())
                    sums["clip_frac"] += float((clipped.float() * mask).sum())
                    ratio = torch.exp(logps - batch["old_logps"])
                    sums["ratio_max"] = max(sums["ratio_max"], float((ratio * mask).max()))
                tokens_seen += int(mask.sum())
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)))
            optimizer.step()
    policy.eval()
    optimizer.zero_grad(set_to_none=True)

    acc_groups = (rewards.view(len(step_items), n) > 0).float()
    tokens = max(tokens_seen, 1)
    return {
        "step": step + 1,
        "reward_mean": float(rewards.mean()),
        "accuracy": float((rewards > 0).float().mean()),
        "solve_all_frac": float((acc_groups.mean(1) == 1).float().mean()),
        "solve_none_frac": float((acc_groups.mean(1) == 0).float().mean()),
        "pg_loss": sums["pg_loss"] / tokens,
        "kl": sums["kl"] / tokens,
        "entropy": sums["entropy"] / tokens,
        "clip_frac": sums["clip_frac"] / tokens,
        "ratio_max": sums["ratio_max"],
        "grad_norm": sum(grad_norms) / len(grad_norms),
        "response_len": sum(lengths) / len(lengths),
        "truncated_frac": sum(truncated) / len(truncated),
        "updates": len(grad_norms),
        "lr": cfg.lr,
        "rollout_s": round(t_rollout, 3),
        "step_s": round(time.perf_counter() - t0, 3),
    }


def _heldout_record(step, policy, tokenizer, heldout, reward_fn, cfg, engine, amp, seed) -> dict:
    """Greedy accuracy on held-out problems (not used for training)."""
    t0 = time.perf_counter()
    outs = engine.sample(policy, tokenizer, [it["prompt"] for it in heldout], n=1, temperature=0.0,
                         top_p=1.0, top_k=-1, max_new_tokens=cfg.max_new_tokens, seed=seed,
                         batch_size=cfg.rollout_batch, autocast=amp())
    correct = [bool(ok) for ok in reward_fn(heldout, [o[0] for o in outs])]
    return {"step": step, "heldout_accuracy": sum(correct) / len(correct), "n": len(correct),
            "eval_s": round(time.perf_counter() - t0, 3)}


# ----------------------------------------------------------------------------- checkpoints

def _check(cfg: RLConfig) -> None:
    for name in ("rollouts_per_prompt", "prompts_per_step", "mini_batch", "micro_batch", "ppo_epochs",
                 "rollout_batch", "eval_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"rl.{name}: expected a positive integer, got {getattr(cfg, name)}")
    if cfg.rollouts_per_prompt < 2:
        raise ValueError("rl.rollouts_per_prompt: GRPO needs at least 2 rollouts per prompt")


def _claim(run_dir: Path, key: dict) -> None:
    """Keep a run folder's earlier work only if it was made with the same settings; else start clean."""
    key_file = run_dir / "run_key.json"
    digest = params_hash(key)
    if run_dir.exists() and (not key_file.is_file() or json.loads(key_file.read_text()).get("hash") != digest):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not key_file.is_file():
        write_json_atomic(key_file, {"hash": digest, **key})


def _save_pretrained_atomic(path: Path, model, tokenizer) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _save_checkpoint(path: Path, model, tokenizer, optimizer, step: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "trainer_state.pt")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _resume(path: Path, policy, optimizer) -> int:
    """Load weights and optimiser state from a checkpoint; returns the step to start from."""
    state_file = path / "trainer_state.pt"
    if not state_file.is_file():
        return 0
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(str(path), dtype=next(policy.parameters()).dtype)
    policy.load_state_dict(saved.state_dict())
    state = torch.load(state_file, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def _result(run_dir: Path) -> dict:
    metrics = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    held = read_jsonl(run_dir / "heldout.jsonl") if (run_dir / "heldout.jsonl").is_file() else []
    return {"final": str(run_dir / "final"), "steps": len(metrics), "metrics": metrics, "heldout": held}
