"""GRPO: group-relative policy optimisation with a clipped ratio and a k3 KL loss (docs/method.md).

One step of the loop, for a batch of P prompts:

1. **Rollouts.** n responses per prompt from the current policy π_old (T = 1.0),
   through `spotlib.engines.rollout.RolloutEngine` (transformers on CPU; on GPUs one vLLM
   engine per training process, colocated, the policy's weights pushed in before each rollout).
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

Several processes (torchrun on CPU with gloo, `accelerate launch` with DeepSpeed ZeRO-2 on
GPUs): every rank owns whole prompt groups — an equal block of each mini-batch — and
samples, grades and normalises them itself; the loss is the token-mean over the whole
mini-batch on all ranks (token counts all-reduced), gradients are averaged by the wrapper,
so W processes give the weights of one process on the same rollouts. Memory: log-probs
by chunks of the LM head (never the batch's full-vocabulary fp32 logits), gradient
checkpointing if asked, the reference scored without gradients and kept on the CPU
between steps on GPUs, fp32 master weights (fp32 weights with bf16 autocast in a plain
process; DeepSpeed's bf16 mode keeps fp32 masters).

Checkpoints (`accelerator.save_state`: weights, optimiser, RNG; and the step) let a killed
run resume; per-step metrics go to `metrics.jsonl`, held-out accuracy to `heldout.jsonl`.
"""
from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from spotlib.config import RLConfig
from spotlib.engines.rollout import RolloutEngine
from spotlib.io import JsonlAppender, read_jsonl, write_json_atomic
from spotlib.precision import autocast_for, use_bf16
from spotlib.progress import bar as tqdm
from spotlib.rl.math import (KL_CLAMP, PolicyLogps, clipped_pg_loss, group_advantages, k3_kl,  # noqa: F401
                             masked_mean, token_entropy)
from spotlib.tokens import build_completion_batch
from spotlib.rl.run_state import (check_config, claim_run_dir, init_identity, key_config, resume, run_result,
                                  save_checkpoint, save_pretrained_atomic)
from spotlib.rl.schedule import layout, prompt_schedule, rank_share, split_even, total_steps
from spotlib.train.tracking import RunTracker, TrackedLog

RewardFn = Callable[[list[dict], list[str]], Sequence[bool]]  # a grader: records, responses -> correct?


# ----------------------------------------------------------------------------- helpers

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


def _forward(model, batch, with_entropy: bool = False):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 completion_mask=batch["completion_mask"], with_entropy=with_entropy)


def _using_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def make_accelerator(device: torch.device, cfg: RLConfig, grad_accum: int, deepspeed_config: str | None = None):
    """The run's Accelerator: plain, DDP (torchrun; gloo on CPU) or DeepSpeed (`accelerate launch`); with
    `deepspeed_config` (the profile's `train.deepspeed_config`) a DeepSpeed engine built directly, on any device."""
    from accelerate import Accelerator

    if deepspeed_config:
        from spotlib.config import REPO_ROOT
        from spotlib.train.deepspeed_run import DeepSpeedAccelerator

        path = Path(deepspeed_config)
        return DeepSpeedAccelerator(path if path.is_absolute() else REPO_ROOT / path, device_type=device.type,
                                    micro_batch=cfg.micro_batch, grad_accum=grad_accum,
                                    max_grad_norm=cfg.max_grad_norm, bf16=device.type == "cuda")
    deepspeed = _using_deepspeed()
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if deepspeed else "no",
                              gradient_accumulation_steps=grad_accum)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # no prepared dataloader tells DeepSpeed the batch: say it here
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.micro_batch
        plugin.deepspeed_config["gradient_accumulation_steps"] = grad_accum
        plugin.deepspeed_config["gradient_clipping"] = cfg.max_grad_norm
    return accelerator


class _Reference:
    """The KL reference (no grad): on the GPU only while scoring when `offload` is set."""

    def __init__(self, model: PolicyLogps, device: torch.device, offload: bool):
        self.model = model.requires_grad_(False).eval()
        self.device = device
        self.offload = offload and device.type == "cuda"
        self.model.to("cpu" if self.offload else device)

    @contextlib.contextmanager
    def on_device(self):
        if self.offload:
            self.model.to(self.device)
        try:
            yield self.model
        finally:
            if self.offload:
                self.model.to("cpu")
                torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- the trainer

def train_grpo(init_path: str | os.PathLike, run_dir: str | os.PathLike, items: list[dict],
               reward_fn: RewardFn, cfg: RLConfig, *, heldout: list[dict] | None = None,
               seed: int = 0, device: str = "auto", max_len: int = 512,
               max_prompt_len: int | None = None, backend: str = "transformers",
               dtype: str | None = None, progress: bool = True, engine=None,
               deepspeed_config: str | None = None, tracking=None) -> dict:
    """GRPO from the model saved at `init_path` (also the KL reference) on `items` (problem records).

    Runs in this process, or as one rank of several (torchrun / `accelerate launch`): each
    rank samples, grades and scores its share of every step's prompt groups, gradients are
    averaged by the DDP/DeepSpeed wrapper, and the loss is the token-mean over the whole
    mini-batch on all ranks. Weights: fp32 with bf16 autocast in a plain process; under
    DeepSpeed `dtype` (bf16) with DeepSpeed's fp32 master weights. `engine` replaces the
    rollout engine (tests inject fixed rollouts); it is released when the run ends. `tracking`
    (`spotlib.train.tracking.run_tracking`): the trackers its records also go to.
    Writes `run_dir/{metrics.jsonl, heldout.jsonl, checkpoint/, final/}`; a run whose
    `final/` exists returns at once, a killed run resumes from `checkpoint/`.
    Returns {"final": path, "steps": int, "metrics": [...], "heldout": [...]}.
    """
    from spotlib.models import load_model, resolve_device

    run_dir = Path(run_dir)
    final_dir = run_dir / "final"
    check_config(cfg)
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_prompts, grad_accum = layout(cfg, world)
    accelerator = make_accelerator(dev, cfg, grad_accum, deepspeed_config)
    if accelerator.num_processes != world:
        raise RuntimeError(f"WORLD_SIZE={world} but accelerate sees {accelerator.num_processes} processes")
    if accelerator.is_main_process:
        claim_run_dir(run_dir, {"config": key_config(cfg), "seed": seed, "init": init_identity(init_path), "max_len": max_len,
                         "items": [it["id"] for it in items], "heldout": [it["id"] for it in heldout or []],
                         "processes": world})  # a checkpoint resumes only on as many processes
    accelerator.wait_for_everyone()
    if (final_dir / "done.json").is_file():
        if engine is not None:
            engine.release()
        return run_result(run_dir)
    if not items:
        raise ValueError("train_grpo: no training prompts")

    dev = accelerator.device
    deepspeed = _using_deepspeed() or bool(deepspeed_config)
    weights = (dtype or "bfloat16") if deepspeed else "float32"
    lm, tokenizer = load_model(init_path, dtype=weights, device=str(dev))
    if cfg.gradient_checkpointing:
        _checkpoint_activations(lm)
    ref_lm, _ = load_model(init_path, dtype=dtype if dev.type == "cuda" else "float32", device="cpu")
    reference = _Reference(PolicyLogps(ref_lm, cfg.logp_chunk_tokens), dev, cfg.offload_reference)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(PolicyLogps(lm, cfg.logp_chunk_tokens), optimizer)
    policy = accelerator.unwrap_model(model).lm  # the HF model: rollouts, saving
    steps = total_steps(cfg, len(items))
    schedule = prompt_schedule(len(items), cfg.prompts_per_step, steps, seed)
    start = resume(run_dir / "checkpoint", accelerator)
    engine = engine or RolloutEngine(backend, init_path, seed, rank=accelerator.process_index, world=world,
                                     gpu_memory=cfg.vllm_gpu_memory, max_len=max_len)
    bf16 = use_bf16(dev, cfg.bf16_autocast, "rl.bf16_autocast") and not deepspeed  # DeepSpeed: bf16 weights
    amp = lambda: autocast_for(dev, bf16)  # noqa: E731 - a fresh context each use
    run = _Run(accelerator, model, policy, reference, tokenizer, optimizer, engine, cfg, dev, amp, max_len,
               max_prompt_len, local_prompts * world, grad_accum)

    main = accelerator.is_main_process
    metrics = JsonlAppender(run_dir / "metrics.jsonl", key_fn=lambda r: r["step"]) if main else None
    held = JsonlAppender(run_dir / "heldout.jsonl", key_fn=lambda r: r["step"]) if main else None
    if main and tracking is not None:   # live curves: both logs' records to the run's trackers too
        tracker = RunTracker(tracking, start)
        metrics, held = TrackedLog(metrics, tracker, "train"), TrackedLog(held, tracker, "heldout")
    try:
        if heldout and start == 0 and not _logged(run_dir / "heldout.jsonl", 0, accelerator):
            _append(held, _heldout_record(0, run, heldout, reward_fn, seed))
        bar = tqdm(range(start, steps), desc=f"grpo {run_dir.parent.name}/{run_dir.name}",
                   disable=not (progress and main), initial=start, total=steps)
        for step in bar:
            record = grpo_step(run, [items[i] for i in schedule[step]], reward_fn, step=step, seed=seed)
            _append(metrics, record)
            done = step + 1
            if heldout and (done % cfg.eval_every == 0 or done == steps):
                _append(held, _heldout_record(done, run, heldout, reward_fn, seed))
            if cfg.save_every and done % cfg.save_every == 0 and done < steps:
                save_checkpoint(run_dir / "checkpoint", accelerator, done)
            bar.set_postfix(reward=f"{record['reward_mean']:+.2f}", kl=f"{record['kl']:.4f}")
    finally:
        engine.release()  # before anything else (evaluation, the next run) needs the GPU
    if main:
        metrics.close()
        held.close()
        save_pretrained_atomic(final_dir, policy, tokenizer)
        write_json_atomic(final_dir / "done.json", {"steps": steps, "config": key_config(cfg), "seed": seed,
                                                    "processes": world})
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    accelerator.wait_for_everyone()
    del model, optimizer, policy, reference, run
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return run_result(run_dir)


def _checkpoint_activations(lm) -> None:
    """Activation (gradient) checkpointing of every decoder layer, non-reentrant."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):  # transformers ≥ 5 (the old name warns)
        lm.activation_checkpointing_enable(kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    lm.config.use_cache = False


@dataclass
class _Run:
    """What every GRPO step of one run uses."""
    accelerator: object
    model: object          # PolicyLogps of the policy, as prepared (DDP / DeepSpeed / plain)
    policy: object         # the unwrapped HF policy
    reference: _Reference
    tokenizer: object
    optimizer: object
    engine: object
    cfg: RLConfig
    device: torch.device
    amp: Callable
    max_len: int
    max_prompt_len: int | None
    per_mini: int          # prompt groups per optimiser step, all ranks together
    grad_accum: int        # micro-batches per optimiser step on each rank


def _all_sum(accelerator, values: list[float]) -> list[float]:
    """Element-wise sum over ranks (identity in one process)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def _all_max(accelerator, value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return float(tensor)


def grpo_step(run: _Run, step_items: list[dict], reward_fn: RewardFn, *, step: int, seed: int) -> dict:
    """One GRPO step (rollouts, rewards, advantages, mini-batch updates) on this rank's share
    of `step_items` (the step's prompts, the same list on every rank); returns the step's
    metrics over all ranks."""
    t0 = time.perf_counter()
    cfg, acc, dev, amp = run.cfg, run.accelerator, run.device, run.amp
    world, rank, n = acc.num_processes, acc.process_index, cfg.rollouts_per_prompt
    mine = [step_items[i] for i in rank_share(range(len(step_items)), run.per_mini, world, rank)]
    responses = run.engine.sample(run.policy, run.tokenizer, [it["prompt"] for it in mine], n=n,
                                  temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                  max_new_tokens=cfg.max_new_tokens, seed=seed * 100_003 + step,
                                  batch_size=cfg.rollout_batch, autocast=amp(), ids=[it["id"] for it in mine])
    t_rollout = time.perf_counter() - t0
    flat_items = [it for it in mine for _ in range(n)]
    flat_resp = [r for group in responses for r in group]
    rewards = torch.tensor([1.0 if ok else -1.0 for ok in reward_fn(flat_items, flat_resp)])
    advantages = group_advantages(rewards.view(len(mine), n)).view(-1)  # each group lives on one rank
    lengths = [len(run.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in flat_resp]
    # The engine's own word (vLLM's finish_reason): decoded text re-tokenised need not give back
    # the sampled tokens, so its length cannot tell a cut response from a finished one.
    truncated = [reason == "length" for group in run.engine.finish_reasons for reason in group]
    if len(truncated) != len(flat_resp):
        raise RuntimeError(f"rollout engine: {len(truncated)} finish reasons for {len(flat_resp)} responses")

    # This rank's part of each mini-batch, in micro-batches; π_old and π_ref log-probs first.
    per_rank = run.per_mini // world * n
    minis = [split_even(range(s, s + per_rank), run.grad_accum) for s in range(0, len(flat_items), per_rank)]
    batches = {}
    with run.reference.on_device() as reference:
        for chunks in minis:
            for chunk in chunks:
                batch = _batch(run.tokenizer, [flat_items[i] for i in chunk], [flat_resp[i] for i in chunk],
                               [truncated[i] for i in chunk], run.max_len, run.max_prompt_len, dev)
                with torch.no_grad(), amp():
                    batch["old_logps"] = _forward(acc.unwrap_model(run.model), batch)[0]
                    batch["ref_logps"] = _forward(reference, batch)[0]
                batch["advantages"] = advantages[chunk].to(dev).unsqueeze(1)
                batches[tuple(chunk)] = batch

    run.model.train()
    sums = {"pg_loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_frac": 0.0}
    ratio_max, tokens_seen, grad_norms = 1.0, 0, []
    for _ in range(cfg.ppo_epochs):
        for chunks in minis:
            local_tokens = sum(int(batches[tuple(c)]["completion_mask"][:, 1:].sum()) for c in chunks)
            mini_tokens = max(_all_sum(acc, [local_tokens])[0], 1.0)
            for chunk in chunks:
                batch = batches[tuple(chunk)]
                mask = batch["completion_mask"][:, 1:].float()
                with acc.accumulate(run.model):
                    with amp():
                        logps, entropy = _forward(run.model, batch, with_entropy=True)
                    pg, clipped = clipped_pg_loss(logps, batch["old_logps"], batch["advantages"], cfg.clip_eps)
                    kl = k3_kl(logps, batch["ref_logps"])
                    # Token-mean over the mini-batch on all ranks: the wrapper averages gradients
                    # over ranks (× world) and accelerate divides by the accumulation steps.
                    scale = world * run.grad_accum / mini_tokens
                    acc.backward(((pg + cfg.kl_coef * kl) * mask).sum() * scale)
                    if acc.sync_gradients:
                        norm = acc.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
                        run.optimizer.step()
                        run.optimizer.zero_grad(set_to_none=True)
                        if norm is not None:
                            grad_norms.append(float(norm))
                with torch.no_grad():
                    sums["pg_loss"] += float((pg * mask).sum())
                    sums["kl"] += float((kl * mask).sum())
                    sums["entropy"] += float((entropy * mask).sum())
                    sums["clip_frac"] += float((clipped.float() * mask).sum())
                    ratio = torch.exp(logps - batch["old_logps"])
                    ratio_max = max(ratio_max, float((ratio * mask).max()))
                tokens_seen += int(mask.sum())
    run.model.eval()

    acc_groups = (rewards.view(len(mine), n) > 0).float()
    totals = _all_sum(acc, [float(rewards.sum()), float((rewards > 0).sum()), float(len(rewards)),
                            float((acc_groups.mean(1) == 1).sum()), float((acc_groups.mean(1) == 0).sum()),
                            float(len(mine)), sums["pg_loss"], sums["kl"], sums["entropy"], sums["clip_frac"],
                            float(tokens_seen), float(sum(lengths)), float(sum(truncated))])
    (reward_sum, correct, count, solve_all, solve_none, groups, pg_sum, kl_sum, ent_sum, clip_sum,
     tokens, length_sum, cut_sum) = totals
    tokens = max(tokens, 1.0)
    return {
        "step": step + 1,
        "reward_mean": reward_sum / count,
        "accuracy": correct / count,
        "solve_all_frac": solve_all / groups,
        "solve_none_frac": solve_none / groups,
        "pg_loss": pg_sum / tokens,
        "kl": kl_sum / tokens,
        "entropy": ent_sum / tokens,
        "clip_frac": clip_sum / tokens,
        "ratio_max": _all_max(acc, ratio_max),
        "grad_norm": sum(grad_norms) / len(grad_norms) if grad_norms else None,
        "response_len": length_sum / count,
        "truncated_frac": cut_sum / count,
        "updates": len(minis) * cfg.ppo_epochs,
        "lr": cfg.lr,
        "processes": world,
        "rollout_s": round(t_rollout, 3),
        "step_s": round(time.perf_counter() - t0, 3),
    }


def _heldout_record(step: int, run: _Run, heldout: list[dict], reward_fn: RewardFn, seed: int) -> dict:
    """Greedy accuracy on held-out problems (not used for training), each rank scoring a share."""
    t0 = time.perf_counter()
    acc = run.accelerator
    mine = heldout[acc.process_index::acc.num_processes]
    correct = 0
    if mine:
        outs = run.engine.sample(run.policy, run.tokenizer, [it["prompt"] for it in mine], n=1, temperature=0.0,
                                 top_p=1.0, top_k=-1, max_new_tokens=run.cfg.max_new_tokens, seed=seed,
                                 batch_size=run.cfg.rollout_batch, autocast=run.amp(), ids=[it["id"] for it in mine])
        correct = sum(bool(ok) for ok in reward_fn(mine, [o[0] for o in outs]))
    total_correct, total = _all_sum(acc, [float(correct), float(len(mine))])
    return {"step": step, "heldout_accuracy": total_correct / total, "n": int(total),
            "eval_s": round(time.perf_counter() - t0, 3)}


def _append(appender, record: dict) -> None:
    if appender is not None:  # the main process writes the logs
        appender.append(record)


def _logged(path: Path, step: int, accelerator) -> bool:
    """Whether `path` (a jsonl log) already holds `step` — decided by the main process for all."""
    found = 0.0
    if accelerator.is_main_process and path.is_file():
        found = float(any(r.get("step") == step for r in read_jsonl(path)))
    return _all_max(accelerator, found) > 0

