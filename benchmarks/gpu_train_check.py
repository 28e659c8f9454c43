"""GPU check (≤ 5 min, one GPU): bf16 SPoT-BCO training of a Qwen3-shaped model built from config.

Random weights (no download), Qwen3-0.6B's shape by default, sequence length 2,048
(chosen and rejected of each pair in one forward pass), gradient checkpointing, SDPA
attention, AdamW. The step is spotlib's own: `completion_logps` (LM head on completion
tokens only) + `losses.bco` with a running-mean δ. Reports tokens/s, peak memory and
MFU, and projects the paper's run (4k pairs, 2 epochs, Qwen3-8B, 8×H800) from the
measured MFU.

MFU counts model FLOPs only (no recomputation): per trained token
6·N_layers_params + 6·L·H·d_head·T (causal attention, forward+backward), plus
6·V·d for the LM head on completion tokens.

    python benchmarks/gpu_train_check.py            # on a GPU
    python benchmarks/gpu_train_check.py --smoke    # CPU-size path, seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "L40S": 362e12}
QWEN3_0_6B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                  head_dim=128, intermediate_size=3072, vocab_size=151936, tie_word_embeddings=True)
QWEN3_8B = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                head_dim=128, intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False)
SMOKE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=32, intermediate_size=128, vocab_size=512, tie_word_embeddings=True)


def layer_params(shape: dict) -> int:
    """Parameters inside the decoder layers (what every token multiplies through)."""
    d, h, kv, hd, f = (shape[k] for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                                          "head_dim", "intermediate_size"))
    attn = d * h * hd + 2 * d * kv * hd + h * hd * d + 2 * hd
    return shape["num_hidden_layers"] * (attn + 3 * d * f + 2 * d)


def train_flops_per_token(shape: dict, seq_len: int, completion_frac: float) -> float:
    attn = 6 * shape["num_hidden_layers"] * shape["num_attention_heads"] * shape["head_dim"] * seq_len
    head = 6 * shape["vocab_size"] * shape["hidden_size"] * completion_frac
    return 6 * layer_params(shape) + attn + head


def project_paper(mfu: float, peak: float, mean_tokens: int, pairs: int = 4000, epochs: int = 2,
                  gpus: int = 8) -> float:
    """Seconds for the paper's policy training at the measured MFU (reference pass = 1/3 of a step)."""
    per_token = train_flops_per_token(QWEN3_8B, mean_tokens, 0.75)
    total = pairs * epochs * 2 * mean_tokens * per_token + pairs * 2 * mean_tokens * per_token / 3
    return total / (gpus * peak * mfu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU: checks the path, not speed")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--pairs-per-step", type=int, default=2, help="pairs per micro-batch")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop timing after this many seconds")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from spotlib import losses as L
    from spotlib.train.logps import completion_logps

    if args.smoke:
        shape, device, dtype = SMOKE, torch.device("cpu"), torch.float32
        args.seq, args.prompt, args.steps, args.warmup = 128, 32, 3, 1
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU: run with --smoke for the CPU path")
        shape, device, dtype = QWEN3_0_6B, torch.device("cuda"), torch.bfloat16
    torch.manual_seed(0)
    config = Qwen3Config(**shape, max_position_embeddings=max(4096, args.seq), attention_dropout=0.0,
                         use_cache=False)
    config._attn_implementation = "sdpa"
    model = Qwen3ForCausalLM(config).to(device=device, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters())
    if not args.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.95), weight_decay=0.01)
    delta = L.DeltaTracker("running_mean")

    b = args.pairs_per_step
    ids = torch.randint(10, shape["vocab_size"], (2 * b, args.seq), device=device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "completion_mask": torch.cat([torch.zeros(2 * b, args.prompt, dtype=torch.long, device=device),
                                           torch.ones(2 * b, args.seq - args.prompt, dtype=torch.long,
                                                      device=device)], 1)}
    with torch.no_grad():  # π_ref = the start model: rewards start at 0, as in a real run
        ref = completion_logps(model, batch).sums.detach()

    def step():
        out = completion_logps(model, batch, autocast=False)
        pc, pr = out.sums[:b], out.sums[b:]
        d = delta.update(L.implicit_rewards(pc, ref[:b], 0.1), L.implicit_rewards(pr, ref[b:], 0.1))
        loss = L.bco(pc, pr, ref[:b], ref[b:], beta=0.1, delta=d)[0].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    sync()
    t0, done = time.perf_counter(), 0
    while done < args.steps and time.perf_counter() - t0 < args.budget_s:
        loss = step()
        done += 1
    sync()
    seconds = time.perf_counter() - t0
    tokens = done * 2 * b * args.seq
    tps = tokens / seconds
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    flops = train_flops_per_token(shape, args.seq, (args.seq - args.prompt) / args.seq)
    mfu = tps * flops / peak if peak else None
    result = {"device": name, "params": n_params, "seq": args.seq, "pairs_per_step": b,
              "gradient_checkpointing": not args.no_checkpointing, "steps_timed": done,
              "tokens_per_s": round(tps, 1), "loss": loss, "delta": delta.value,
              "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
              "mfu": round(mfu, 4) if mfu else None}
    if mfu:
        result["paper_projection_min"] = {f"mean_{t}_tokens": round(project_paper(mfu, peak, t) / 60, 1)
                                          for t in (2048, 8192)}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
