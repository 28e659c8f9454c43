"""One training configuration of the distributed equivalence tests, in this process or as
one rank under `torchrun` (gloo): a random micro Qwen3, a handful of synthetic pairs.

    python tests/dist_worker.py --base BASE --out DIR --runs one=4,1 accum=2,2          # 1 process
    torchrun --nproc_per_node 2 tests/dist_worker.py --base BASE --out DIR --runs two=2,1

For each run NAME=B,G (per-device batch B, accumulation G) and each method in --methods,
trains `--steps` steps into DIR/NAME/<method>/ (final weights, metrics.jsonl); writes DIR/info.json (process count, reference log-prob sums and counts,
scored in batches of --ref-tokens padded tokens, shared across the processes).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

N_PAIRS = 7  # odd: two processes cannot split the reference rows evenly


def run_logged(args: list[str], log: Path, timeout: int = 300, **env) -> None:
    """Run this worker (or torchrun over it) from a test, its output in `log`, one thread per process;
    a failure shows the log's tail."""
    import os
    import subprocess

    from spotlib.config import REPO_ROOT

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", **env)
    with log.open("w") as handle:
        done = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed; its log: {log}\n{log.read_text()[-3000:]}"


def build_base(folder: Path) -> None:
    """A random micro Qwen3 (from config) and the micro world's tokenizer, saved like a base model."""
    from spotlib.config import load_profile
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    world_cfg = load_profile("test").world
    tokenizer = build_tokenizer(world_cfg)
    build_model(world_cfg, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def synthetic_examples(n: int) -> list[dict]:
    """Pairs of differing lengths whose y⁻ differs from y⁺ in one number."""
    rng = random.Random(0)
    examples = []
    for i in range(n):
        a, b = rng.randrange(10, 99), rng.randrange(10, 99)
        steps = " ".join(f"{a} + {k} = {a + k}." for k in range(rng.randrange(1, 5)))
        examples.append({"id": f"p{i}", "prompt": f"Compute {a} + {b}.",
                         "chosen": f"{steps} {a} + {b} = {a + b}",
                         "rejected": f"{steps} {a} + {b} = {a + b + 1 + rng.randrange(9)}"})
    return examples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="NAME=B,G: per-device batch B, accumulation G")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["sft", "dpo", "spot_bco"])
    parser.add_argument("--ref-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (under accelerate launch + DeepSpeed)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--bf16", action="store_true", help="GPU: bf16 (DeepSpeed keeps fp32 master weights)")
    parser.add_argument("--deepspeed-config", help="train under this DeepSpeed JSON (engine built directly)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spotlib.config import load_profile
    from spotlib.train import data as D
    from spotlib.train.logps import reference_sums
    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import RunInputs, make_accelerator, train_run

    out = Path(args.out)

    def profile_for(batch: int, grad_accum: int):
        return load_profile("test", overrides={
            "output_dir": str(out), "device": args.device, "train.bf16": args.bf16, "model.name_or_path": args.base,
            "train.per_device_batch": batch, "train.grad_accum": grad_accum, "train.max_steps": args.steps,
            "train.lr": {"default": args.lr}, "train.warmup_ratio": 0.0, "train.kl_probe_every": 0,
            "train.bf16_autocast": False, "train.deepspeed_config": args.deepspeed_config,
            "train.max_grad_norm": 1e6})  # clipping is a global-norm op: keep it out of the comparison

    runs = []
    for spec in args.runs:
        name, _, sizes = spec.partition("=")
        batch, grad_accum = (int(x) for x in sizes.split(","))
        runs.append((name, profile_for(batch, grad_accum)))
    accelerator = make_accelerator(runs[0][1].train, runs[0][1].device)
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    reference = AutoModelForCausalLM.from_pretrained(args.base).eval().to(accelerator.device)
    data = D.prepare(tokenizer, synthetic_examples(N_PAIRS), 256, 128, with_rejected=True)
    ref_c, counts_c = reference_sums(reference, data.chosen, tokenizer.pad_token_id, accelerator.device,
                                     max_tokens=args.ref_tokens)
    ref_r, _ = reference_sums(reference, data.rejected, tokenizer.pad_token_id, accelerator.device,
                              max_tokens=args.ref_tokens)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "info.json").write_text(json.dumps({
            "processes": accelerator.num_processes, "ref_chosen": ref_c.tolist(), "ref_rejected": ref_r.tolist(),
            "counts_chosen": counts_c.tolist(), "accelerator": type(accelerator).__name__}))
    for name, profile in runs:
        accelerator = make_accelerator(profile.train, profile.device)
        for method in args.methods:
            run = parse_run(method)
            inputs = RunInputs(data, ref_c, ref_r if run.info.pairs else None, args.base)
            train_run(profile.train, profile.model, run, 0, inputs, out / name / method, steps=args.steps,
                      device=profile.device, progress=False, accelerator=accelerator)
            if hasattr(accelerator, "last_engine") and accelerator.is_main_process:  # what the engine really ran
                (out / name / method / "engine.json").write_text(json.dumps(accelerator.last_engine))


if __name__ == "__main__":
    main()
