"""GPU check of stage 04's trainer at the paper's lengths: padded against packed micro-batches.

For each model shape (Qwen3-0.6B and Qwen3-1.7B, random weights built from config, no
download) and each batching (`train.packing` off and on), `spotlib.train.trainer.train_run`
trains spot_bco on pairs whose lengths follow the paper's distribution (log-normal, mean
≈ 2,048 tokens, at most 8,192; y⁻ within ±5% of y⁺), one process, bf16 autocast over fp32
master weights, with the settings the memory plan chooses for the card
(`spotlib.train.settings`: gradient checkpointing, micro-batch, no ZeRO on one process,
fused AdamW). Reports per run:

- tokens/s: the data's tokens (prompt + completion) per second, warm-up steps left out;
- MFU: model FLOPs of those tokens (6·N per token, causal attention per sequence, the LM head
  on completion tokens) over the card's dense bf16 peak;
- HFU: the FLOPs the hardware ran (padding included, recomputation included) over the peak;
- tokens_real / tokens_computed, peak memory against the plan's stage-04 peak;

and projects the paper's training (Qwen3-8B shape, 4k pairs × 2 epochs + the reference pass,
8×H800) from the MFU measured at the largest shape, printing its assumptions.

    python benchmarks/gpu_trainer_check.py --out /tmp/trainer_check          # on a GPU
    python benchmarks/gpu_trainer_check.py --smoke --out /tmp/trainer_smoke  # CPU, tiny shapes, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_train_check import PEAK_BF16, QWEN3_0_6B, QWEN3_8B, SMOKE, layer_params  # noqa: E402

QWEN3_1_7B = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                  head_dim=128, intermediate_size=6144, vocab_size=151936, tie_word_embeddings=True)
SHAPES = {"qwen3-0.6b": QWEN3_0_6B, "qwen3-1.7b": QWEN3_1_7B}
SMOKE_SHAPES = {"smoke-a": SMOKE, "smoke-b": dict(SMOKE, num_hidden_layers=3)}
H800_PEAK = 989e12
PAPER = {"pairs": 4000, "epochs": 2, "gpus": 8, "gpu": "H800 SXM", "peak_bf16_flops": H800_PEAK}


# ---------------------------------------------------------------- data

def paper_lengths(n: int, mean: float, longest: int, shortest: int, seed: int) -> list[int]:
    """Log-normal lengths (σ 0.6) with the given mean, clipped to [shortest, longest]."""
    rng = random.Random(seed)
    sigma = 0.6
    mu = math.log(mean) - sigma ** 2 / 2
    return [min(longest, max(shortest, round(rng.lognormvariate(mu, sigma)))) for _ in range(n)]


def make_pairs(n: int, vocab: int, mean: float, longest: int, prompt: int, seed: int):
    """TrainData of n pairs of random token ids at the paper's lengths (prompt + completion)."""
    from spotlib.train.data import Tokenized, TrainData

    rng = random.Random(seed)
    chosen_lens = paper_lengths(n, mean, longest, prompt + 16, seed)
    ids_c, ids_r, prompts = [], [], []
    for length in chosen_lens:
        rejected = min(longest, max(prompt + 16, round(length * rng.uniform(0.95, 1.05))))
        head = [rng.randrange(10, vocab) for _ in range(prompt)]
        ids_c.append(head + [rng.randrange(10, vocab) for _ in range(length - prompt)])
        ids_r.append(head + [rng.randrange(10, vocab) for _ in range(rejected - prompt)])
        prompts.append(prompt)
    examples = [{"id": f"p{i}"} for i in range(n)]
    return TrainData(examples, Tokenized(ids_c, prompts), Tokenized(ids_r, list(prompts)))


# ---------------------------------------------------------------- FLOPs

def step_flops(shape: dict, data, rows: list[int], micro: int, padded: bool, recompute: bool) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of one optimiser step over `rows`, micro-batches of `micro` pairs.

    Model: 6·N_layers per token, 6·layers·heads·head_dim·L per token of a length-L sequence
    (causal attention, forward + backward), 6·V·h per completion token (the LM head).
    Hardware: the same over the positions run (a padded micro-batch runs every row at its
    widest sequence), plus one more forward of the decoder (2·N, 2·attention) with recomputation."""
    n_layer = layer_params(shape)
    attn = 6 * shape["num_hidden_layers"] * shape["num_attention_heads"] * shape["head_dim"]
    head = 6 * shape["vocab_size"] * shape["hidden_size"]
    model = hardware = 0.0
    for first in range(0, len(rows), micro):
        seqs = [(tok.ids[i], tok.prompt_lens[i]) for tok in (data.chosen, data.rejected)
                for i in rows[first:first + micro]]
        width = max(len(s) for s, _ in seqs)
        for ids, prompt in seqs:
            run = width if padded else len(ids)
            body = 6 * n_layer * len(ids) + attn * len(ids) ** 2
            body_run = 6 * n_layer * run + attn * run ** 2
            lm_head = head * (len(ids) - prompt)
            model += body + lm_head
            hardware += body_run * (4 / 3 if recompute else 1) + lm_head
    return model, hardware


# ---------------------------------------------------------------- one run

def build_base(path: Path, shape: dict, max_positions: int, smoke: bool) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from spotlib.config import load_profile
    from spotlib.world.tokenizer import build_tokenizer

    if (path / "config.json").is_file():
        return
    tokenizer = build_tokenizer(load_profile("test").world)
    config = Qwen3Config(**shape, max_position_embeddings=max_positions, use_cache=False,
                         bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(config)
    (model if smoke else model.to(torch.bfloat16)).save_pretrained(path)
    tokenizer.save_pretrained(path)


def run_one(name: str, shape: dict, packing: bool, args, work: Path, card_gib: float | None) -> dict:
    import torch

    from spotlib.config import load_profile
    from spotlib.plan.memory import build_plan
    from spotlib.train import settings
    from spotlib.train.data import step_rows
    from spotlib.train.logps import reference_sums
    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import RunInputs, train_run

    cuda = not args.smoke
    base = work / name / "base"
    build_base(base, shape, args.max_len + 64, args.smoke)
    overrides = {"name": "gpu_trainer_check", "device": "cuda" if cuda else "cpu", "seeds": [0],
                 "output_dir": str(work / name / "out"), "model.name_or_path": str(base),
                 "model.dtype": "float32", "model.max_len": args.max_len,
                 "train.methods": ["spot_bco"], "train.ablations": [], "train.num_processes": 1,
                 "train.accelerate_config": None, "train.max_steps": args.steps,
                 "train.per_device_batch": args.per_step, "train.grad_accum": 1,
                 "train.max_len": args.max_len, "train.max_prompt_len": args.prompt,
                 "train.kl_probe_every": 0, "train.edit_diag_pairs": 0, "train.save_every": 0,
                 "train.packing": packing, "train.bf16": cuda, "train.bf16_autocast": False,
                 "hardware.gpus": 1, "hardware.gpu_memory_gib": card_gib or 80.0}
    if not cuda:  # training only: no engine samples here, and vLLM's CPU build needs settings of its own
        overrides.update({f"{section}.backend": "transformers" for section in ("sample", "eval", "rl")})
    profile = load_profile("paper", overrides=overrides)
    choice = settings.choose(profile, gpus=1, gpu_memory_gib=card_gib or 80.0, cuda=cuda)
    profile = load_profile("paper", overrides={**overrides, **choice.overrides()})
    t = profile.train
    n_pairs = args.steps * t.per_device_batch * t.grad_accum
    data = make_pairs(n_pairs, shape["vocab_size"], args.mean, args.max_len, args.prompt, seed=0)
    device = torch.device("cuda" if cuda else "cpu")

    from spotlib.train.trainer import load_model
    ref = load_model(str(base), "bfloat16" if cuda else "float32").to(device).eval()
    pad_id = 0
    rc = reference_sums(ref, data.chosen, pad_id, device, max_tokens=4 * args.max_len)[0]
    rr = reference_sums(ref, data.rejected, pad_id, device, max_tokens=4 * args.max_len)[0]
    del ref
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run_dir = work / name / ("packed" if packing else "padded")
    inputs = RunInputs(data, rc, rr, str(base), data_key=f"{name}-{n_pairs}")
    started = time.perf_counter()
    summary = train_run(t, profile.model, parse_run("spot_bco"), 0, inputs, run_dir, steps=args.steps,
                        device=profile.device, progress=False)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    timed = train[args.warmup:] or train
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed)
    real = sum(r["tokens"] for r in timed)
    computed = sum(r["tokens_computed"] for r in timed)
    model_flops = hardware_flops = 0.0
    effective = t.per_device_batch * t.grad_accum
    for r in timed:
        rows = step_rows(len(data), 0, r["step"] - 1, effective)
        m, h = step_flops(shape, data, rows, t.per_device_batch, not packing, t.gradient_checkpointing)
        model_flops, hardware_flops = model_flops + m, hardware_flops + h
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if cuda and k in torch.cuda.get_device_name()), None)
    stage = next(s for s in build_plan(profile, gpus=1, gpu_memory_gib=card_gib or 80.0).stages
                 if s.stage.startswith("04"))
    measured = max((r.get("peak_memory_gib", 0.0) for r in train), default=0.0) if cuda else None
    return {"shape": name, "packing": packing, "steps_timed": len(timed), "stage_wall_s": round(wall, 1),
            "settings": {k: v for k, v in vars(choice).items() if k != "notes"} | {"notes": list(choice.notes)},
            "tokens_per_s": round(real / seconds, 1), "tokens_real": real, "tokens_computed": computed,
            "real_over_computed": round(real / computed, 4),
            "mean_tokens_per_sequence": round(real / (2 * effective * len(timed))),
            "mfu": round(model_flops / seconds / peak, 4) if peak else None,
            "hfu": round(hardware_flops / seconds / peak, 4) if peak else None,
            "peak_memory_gib": round(measured, 2) if measured else None,
            "planned_peak_gib": round(stage.peak / 2**30, 2),
            "measured_over_planned": round(measured / (stage.peak / 2**30), 3) if measured else None,
            "summary_tokens": [summary.get("tokens_real"), summary.get("tokens_computed")],
            "losses": [round(r["loss"], 5) for r in train], "delta": train[-1]["delta"]}


def projection(mfu: float, mean_tokens: float) -> dict:
    """The paper's policy training on 8×H800 at `mfu`, Qwen3-8B shape, and its assumptions."""
    from gpu_train_check import train_flops_per_token

    per_token = train_flops_per_token(QWEN3_8B, int(mean_tokens), 0.75)
    tokens = PAPER["pairs"] * 2 * mean_tokens
    flops = PAPER["epochs"] * tokens * per_token + tokens * per_token / 3   # + the reference pass (forward only)
    seconds = flops / (PAPER["gpus"] * PAPER["peak_bf16_flops"] * mfu)
    return {"minutes": float(f"{seconds / 60:.3g}"),   # 3 significant digits: a smoke run on CPU can be far below 0.1
            "assumptions": {**PAPER, "model": "Qwen3-8B shape", "mean_tokens_per_sequence": round(mean_tokens),
                            "completion_fraction": 0.75, "mfu": mfu,
                            "mfu_from": "the largest shape measured here, assumed to hold at 8B",
                            "reference_pass": "one no-grad forward per sequence (1/3 of a training step)",
                            "flops_per_token": round(per_token)}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: the whole path in seconds")
    parser.add_argument("--shapes", default=None, help=f"comma-separated subset of {','.join(SHAPES)}")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the rates")
    parser.add_argument("--per-step", type=int, default=8, help="pairs per optimiser step (the plan splits it)")
    parser.add_argument("--mean", type=float, default=2048, help="mean tokens per sequence")
    parser.add_argument("--max-len", type=int, default=8192)
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens per sequence")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: by its name)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.warmup, args.per_step = 3, 1, 4
        args.mean, args.max_len, args.prompt = 48, 128, 8
        args.peak_tflops = args.peak_tflops or 0.01   # nominal (10 GFLOP/s): exercises the MFU arithmetic
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA GPU: run with --smoke for the CPU path")
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    if args.shapes:
        shapes = {k: shapes[k] for k in args.shapes.split(",")}
    card = None if args.smoke else torch.cuda.get_device_properties(0).total_memory / 2**30
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for name, shape in shapes.items():
        for packing in (False, True):
            runs.append(run_one(name, shape, packing, args, work, card))
            print(json.dumps(runs[-1]), flush=True)
    result = {"device": "cpu" if args.smoke else torch.cuda.get_device_name(), "torch": torch.__version__,
              "smoke": args.smoke, "runs": runs}
    last = [r for r in runs if r["shape"] == list(shapes)[-1] and r["packing"]][0]
    if last["mfu"]:
        result["paper_projection"] = projection(last["mfu"], args.mean)
    print(json.dumps(result, indent=2))
    (work / "gpu_trainer_check.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
