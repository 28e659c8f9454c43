"""Pre-training the tiny world's base model (a small Qwen3) on a mixture of its families.

Training is defined by steps, not minutes, so it is deterministic on one machine.
Loss: mean next-token cross-entropy over response tokens only (the prompt, wrapped in
the chat template, is context):  L = -(1/|R|) sum_{t in R} log p(y_t | y_<t).
AdamW, gradient clipping at 1, linear warmup then cosine decay from lr to min_lr. Each
step's batch is sorted by length and cut into micro-batches of at most `micro_batch_tokens`
padded tokens, so little compute goes to padding; the vocabulary head runs only where a
response token is predicted (prompt and padding positions never build logits).

Precision (fp32 or bf16 autocast) and torch threads are the profile's `world.bf16_autocast`
and `world.num_threads`, whatever the CPU (`spotlib.precision`); both are in the world hash.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

import torch

from spotlib import precision
from spotlib.io import share_saved_files
from spotlib.progress import bar as progress_bar

from .families import make_items
from .recipe import RECIPE_VERSION, world_hash
from .styles import oracle_solution, slipped_solution, student_solution
from .tokenizer import build_tokenizer

MIX_KEYS = ("arith", "arith_ood", "facts", "format", "oracle_style")


def build_model(world_cfg, tokenizer):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=world_cfg.hidden_size,
        num_hidden_layers=world_cfg.num_layers, num_attention_heads=world_cfg.num_heads,
        num_key_value_heads=world_cfg.num_kv_heads, head_dim=world_cfg.hidden_size // world_cfg.num_heads,
        intermediate_size=world_cfg.intermediate_size, max_position_embeddings=world_cfg.max_position,
        tie_word_embeddings=world_cfg.tie_word_embeddings, rope_theta=10000.0, attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"))
    torch.manual_seed(world_cfg.seed)
    model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_untrained(world_cfg, path) -> tuple:
    """The world's tokenizer and a randomly initialised model of its shape, saved under `path`
    (benchmarks and tests that need the model's shape, not its skills). Returns (model, tokenizer)."""
    tokenizer = build_tokenizer(world_cfg)
    model = build_model(world_cfg, tokenizer)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    share_saved_files(path)
    return model, tokenizer

def pretrain_examples(world_cfg, n: int) -> list[tuple[str, str]]:
    """n (prompt, response) pairs drawn from the mixture `world_cfg.mix` (pretrain split only)."""
    for key in world_cfg.mix:
        if key not in MIX_KEYS:
            raise ValueError(f"world.mix: unknown key {key!r} (expected some of {', '.join(MIX_KEYS)})")
    rng = random.Random(f"pretrain-{world_cfg.seed}")
    slip_rng = random.Random(f"slips-{world_cfg.seed}")
    keys = list(world_cfg.mix)
    weights = [world_cfg.mix[k] for k in keys]
    picks = rng.choices(keys, weights=weights, k=n)
    counts = {k: picks.count(k) for k in keys}
    pools = {}
    for key, count in counts.items():
        if count == 0:
            continue
        family = "arith" if key == "oracle_style" else key
        if family == "facts":
            pools[key] = make_items("facts", 3 * world_cfg.n_facts, "pretrain", seed=world_cfg.seed,
                                    world_cfg=world_cfg)
        else:
            pools[key] = make_items(family, count, "pretrain", seed=world_cfg.seed + (7 if key == "oracle_style" else 0),
                                    world_cfg=world_cfg)
    cursor = {k: 0 for k in keys}
    out = []
    for key in picks:
        pool = pools[key]
        rec = pool[cursor[key] % len(pool)] if key != "facts" else rng.choice(pool)
        cursor[key] += 1
        text = oracle_solution(rec, rng) if key == "oracle_style" else student_solution(rec, rng)
        # slips draw from their own stream: the rest of the corpus is the same with or without them
        if key in ("arith", "arith_ood") and world_cfg.slip_rate > 0 and slip_rng.random() < world_cfg.slip_rate:
            text = slipped_solution(rec, slip_rng)
        prompt = world_cfg.oracle_style_prefix + rec["prompt"] if key == "oracle_style" else rec["prompt"]
        out.append((prompt, text))
    return out


def encode_examples(tokenizer, examples) -> list[tuple[list[int], int]]:
    """Token ids (prompt + response + eos) and the prompt length of each example."""
    from spotlib.models import chat_prompt
    prompts = tokenizer([chat_prompt(tokenizer, p) for p, _ in examples], add_special_tokens=False)["input_ids"]
    responses = tokenizer([r for _, r in examples], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + r + [eos], len(p)) for p, r in zip(prompts, responses)]


def micro_batches(encoded, pad_id: int, max_tokens: int):
    """Length-sorted micro-batches: (input_ids, attention_mask, labels) with labels -100 off-response."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    groups, current = [], []
    for i in order:
        width = len(encoded[i][0])
        if current and width * (len(current) + 1) > max_tokens:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    for group in groups:
        width = max(len(encoded[i][0]) for i in group)
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        labels = torch.full((len(group), width), -100, dtype=torch.long)
        for row, i in enumerate(group):
            seq, prompt_len = encoded[i]
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
            labels[row, prompt_len:len(seq)] = torch.tensor(seq[prompt_len:])
        yield ids, mask, labels


def lr_at(step: int, world_cfg) -> float:
    if step < world_cfg.warmup_steps:
        return world_cfg.pretrain_lr * (step + 1) / world_cfg.warmup_steps
    span = max(1, world_cfg.pretrain_steps - world_cfg.warmup_steps)
    progress = min(1.0, (step - world_cfg.warmup_steps) / span)
    return world_cfg.pretrain_min_lr + 0.5 * (world_cfg.pretrain_lr - world_cfg.pretrain_min_lr) * (
        1 + math.cos(math.pi * progress))


def pretrain(world_cfg, progress: bool = True):
    """Train tokenizer and model from scratch; returns (model, tokenizer, stats)."""
    with torch_threads(world_cfg.num_threads):
        return _pretrain(world_cfg, progress)


torch_threads = precision.torch_threads  # kept under its old name for callers and tests


def response_loss_sum(model, ids, mask, labels) -> torch.Tensor:
    """Summed next-token cross-entropy over response tokens; the head runs only where one is predicted."""
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = model.lm_head(hidden[keep]).float()
    return torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum")


def make_optimizer(model, world_cfg):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    # fused: one kernel per parameter group instead of a handful per tensor (same update)
    return torch.optim.AdamW([{"params": decay, "weight_decay": world_cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=world_cfg.pretrain_lr, betas=(0.9, 0.95), fused=True)


def pretrain_step(model, optim, batch, pad_id: int, world_cfg, step: int, use_bf16: bool) -> tuple[float, int]:
    """One optimiser step over `batch` (length-sorted micro-batches, loss on response tokens only);
    returns (the step's loss, tokens seen)."""
    n_target = sum(len(s) - p for s, p in batch)
    for group in optim.param_groups:
        group["lr"] = lr_at(step, world_cfg)
    step_loss, tokens = 0.0, 0
    for ids, mask, labels in micro_batches(batch, pad_id, world_cfg.micro_batch_tokens):
        with precision.autocast_for("cpu", use_bf16):
            loss = response_loss_sum(model, ids, mask, labels) / n_target
        loss.backward()
        step_loss += loss.item()
        tokens += int(mask.sum())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    optim.zero_grad(set_to_none=True)
    return step_loss, tokens


def _pretrain(world_cfg, progress):
    start = time.time()
    torch.manual_seed(world_cfg.seed)
    tokenizer = build_tokenizer(world_cfg)
    model = build_model(world_cfg, tokenizer)
    examples = pretrain_examples(world_cfg, world_cfg.pretrain_steps * world_cfg.pretrain_batch)
    encoded = encode_examples(tokenizer, examples)
    too_long = max(len(s) for s, _ in encoded)
    if too_long > world_cfg.max_position:
        raise ValueError(f"world.max_position={world_cfg.max_position} < longest example ({too_long} tokens)")
    optim = make_optimizer(model, world_cfg)
    model.train()
    use_bf16 = precision.use_bf16("cpu", world_cfg.bf16_autocast, "world.bf16_autocast")
    tokens_seen = 0
    losses = []
    train_start = time.time()
    bar = progress_bar(total=world_cfg.pretrain_steps, desc="pre-training", unit="steps", disable=not progress)
    for step in range(world_cfg.pretrain_steps):
        batch = encoded[step * world_cfg.pretrain_batch:(step + 1) * world_cfg.pretrain_batch]
        step_loss, tokens = pretrain_step(model, optim, batch, tokenizer.pad_token_id, world_cfg, step, use_bf16)
        tokens_seen += tokens
        losses.append(step_loss)
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tokens_seen / (time.time() - train_start):.0f}")
    bar.close()
    train_wall = time.time() - train_start
    model.eval()
    stats = {"train_wall_s": round(train_wall, 1), "total_wall_s": round(time.time() - start, 1),
             "tokens": tokens_seen, "tokens_per_s": round(tokens_seen / max(train_wall, 1e-9), 1),
             "params": sum(p.numel() for p in model.parameters()), "bf16_autocast": use_bf16,
             "precision": precision.precision_name(use_bf16), "threads": torch.get_num_threads(),
             "recipe": RECIPE_VERSION, "machine": precision.machine(),
             "loss_first": round(sum(losses[:10]) / max(1, len(losses[:10])), 4),
             "loss_last": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
             "loss_curve": [round(x, 4) for x in losses[:: max(1, len(losses) // 100)]]}
    return model, tokenizer, stats


def ensure_base_model(profile, progress: bool = True) -> Path:
    """The profile's base model directory; pre-trains only when no matching manifest is there and the
    repository ships no base model of this world (`spotlib.world.shipped`: same world hash, intact weights).

    With pinned CPU kernels (`world.cpu_kernels`) and a process not started with them (a notebook
    opened in JupyterLab), pre-training runs in a child process that is."""
    from spotlib.io import weights_problem
    out = profile.base_model_path()
    manifest_path = out / "manifest.json"
    digest = world_hash(profile.world)
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError:
            manifest = {}
        # Trusted only whole: the weights must match the checksum written beside them.
        if manifest.get("world_hash") == digest and (out / "config.json").is_file() \
                and weights_problem(out, manifest.get("weights_sha256")) is None:
            return out
    from .shipped import install_shipped
    if install_shipped(profile.world, out) is not None:   # the repository's copy of this very model
        return out
    env = precision.kernel_env(profile.world.cpu_kernels)   # KernelsUnavailable before any work
    if precision.process_has_kernels(profile.world.cpu_kernels):
        build_base_model(profile.world, out, progress)
    else:
        _build_in_child(profile.world, out, env)
    return out


def build_base_model(world_cfg, out: Path, progress: bool = True) -> None:
    """Pre-train, save, score on held-out items and write the manifest (last: it marks the model whole)."""
    from spotlib.io import weights_sha256, write_json_atomic
    model, tokenizer, stats = pretrain(world_cfg, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    share_saved_files(out)
    scores = {}
    if world_cfg.manifest_eval_items > 0:
        from .evaluate import score_model, style_nll
        eval_start = time.time()
        n, cfg = world_cfg.manifest_eval_items, world_cfg
        with torch_threads(cfg.num_threads):
            scores = {f"T={t}": score_model(model, tokenizer, n, t, seed=0, world_cfg=cfg,
                                            max_new_tokens=cfg.eval_max_new_tokens) for t in (0.0, 0.7)}
            scores["nll_nats_per_token"] = style_nll(model, tokenizer, n=min(n, 64), world_cfg=cfg)
        stats["eval_wall_s"] = round(time.time() - eval_start, 1)
    write_json_atomic(out / "manifest.json", {"world_hash": world_hash(world_cfg), "weights_sha256": weights_sha256(out),
                                              "world": dataclasses.asdict(world_cfg),
                                              "stats": stats, "heldout_scores": scores})


def _build_in_child(world_cfg, out: Path, env: dict[str, str]) -> None:
    """`build_base_model` in a fresh interpreter started with the kernel environment `env`."""
    import os
    import subprocess
    import sys
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "world.json"
    spec.write_text(json.dumps(dataclasses.asdict(world_cfg)))
    print(f"pre-training in a child process on {world_cfg.cpu_kernels} kernels (world.cpu_kernels)", flush=True)
    done = subprocess.run([sys.executable, "-m", "spotlib.world.pretrain_child", str(spec), str(out)],
                          env={**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"pre-training on {world_cfg.cpu_kernels} kernels failed in its child process "
                           f"(exit code {done.returncode}); its output is above")

