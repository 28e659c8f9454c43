"""GPU check of the paper path's trainer: stage 04 relaunched under `accelerate launch` with
DeepSpeed ZeRO-2 on one GPU, bf16 with fp32 master weights, a Qwen3-0.6B-shaped model built
from config (random weights, no download), pairs of ~2,048 tokens per sequence.

Prints tokens/s, MFU, the trainer's peak GPU memory against `spotlib.memory_plan`'s
prediction for the same profile, and the paper run projected from the measured MFU.

    python benchmarks/gpu_trainer_check.py --out /tmp/trainer_check     # on a GPU, with deepspeed
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_train_check import PEAK_BF16, QWEN3_0_6B, project_paper, train_flops_per_token  # noqa: E402


def long_pairs(tokenizer, n: int, tokens: int, seed: int = 0) -> list[dict]:
    """Pairs whose completions hold about `tokens` tokens (digits tokenize one by one)."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        words, text = [], ""
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
            words += [str(rng.randrange(10, 99)) for _ in range(64)]
            text = " + ".join(words)
        wrong = text[: len(text) // 2] + "7" + text[len(text) // 2 + 1:]
        pairs.append({"id": f"p{i}", "prompt": f"Add the numbers {i}.", "chosen": text, "rejected": wrong,
                      "answer": "", "source": "rectified"})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seq", type=int, default=2048, help="completion tokens per sequence")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    import torch
    import yaml
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from spotlib.config import load_profile
    from spotlib.io import write_jsonl
    from spotlib.memory_plan import build_plan
    from spotlib.world.tokenizer import build_tokenizer

    work = Path(args.out)
    base = work / "base"
    tokenizer = build_tokenizer(load_profile("test").world)
    if not (base / "config.json").is_file():
        config = Qwen3Config(**QWEN3_0_6B, max_position_embeddings=2 * args.seq + 256, use_cache=False,
                             bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(0)
        Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(base)
        tokenizer.save_pretrained(base)
    write_jsonl(work / "stage" / "03_filter" / "pairs.jsonl", long_pairs(tokenizer, args.pairs, args.seq))

    card = torch.cuda.get_device_properties(0).total_memory / 2**30
    raw = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())
    raw.update(name="gpu_trainer_check", device="cuda", seeds=[0], output_dir=str(work / "stage"))
    raw["model"] = dict(raw["model"], name_or_path=str(base), max_len=args.seq + 128)
    raw["train"].update(methods=["spot_bco"], ablations=[], num_processes=1, max_steps=args.steps,
                        per_device_batch=1, grad_accum=2, max_len=args.seq + 128, max_prompt_len=64,
                        kl_probe_every=0, edit_diag_pairs=0, save_every=0)
    raw["hardware"] = dict(raw.get("hardware") or {}, gpus=1, gpu_memory_gib=round(card, 1))
    profile_path = work / "gpu_trainer_check.yaml"
    profile_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    started = time.perf_counter()
    log = work / "stage04.log"
    with log.open("w") as f:  # from notebooks/, as papermill runs it
        code = subprocess.call([sys.executable, "-m", "spotlib.stages.train_methods", "--profile", str(profile_path)],
                               cwd=REPO / "notebooks", stdout=f, stderr=subprocess.STDOUT)
    if code != 0:
        print(log.read_text()[-6000:])
        sys.exit(f"stage 04 failed ({code}); log: {log}")
    wall = time.perf_counter() - started

    run_dir = work / "stage" / "04_train_spot" / "spot_bco" / "seed0"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    timed = train[2:] or train  # the first steps warm up kernels and allocators
    tokens = sum(r["tokens"] for r in timed)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in timed)
    tps = tokens / seconds
    name = torch.cuda.get_device_name()
    peak_flops = next((v for k, v in PEAK_BF16.items() if k in name), None)
    mean_seq = tokens / (len(timed) * 2 * 2)  # 2 micro-batches of one pair (2 sequences) per step
    mfu = tps * train_flops_per_token(QWEN3_0_6B, int(mean_seq), 0.97) / peak_flops if peak_flops else None
    measured = max(r.get("peak_memory_gib", 0.0) for r in train)
    plan = build_plan(load_profile(profile_path), gpus=1, gpu_memory_gib=card)
    predicted = next(s.peak for s in plan.stages if s.stage == "04_train_spot") / 2**30
    saved = json.loads((run_dir / "config.json").read_text())
    result = {"device": name, "steps": len(train), "stage_wall_s": round(wall, 1),
              "tokens_per_s": round(tps, 1), "mean_tokens_per_sequence": round(mean_seq),
              "mfu": round(mfu, 4) if mfu else None,
              "peak_memory_gib": round(measured, 2), "planned_peak_gib": round(predicted, 2),
              "measured_over_planned": round(measured / predicted, 3),
              "saved_dtype": saved.get("dtype") or saved.get("torch_dtype"),
              "losses": [round(r["loss"], 5) for r in train], "delta": train[-1]["delta"]}
    if mfu:
        result["paper_projection_min"] = {f"mean_{t}_tokens": round(project_paper(mfu, peak_flops, t) / 60, 1)
                                          for t in (2048, 8192)}
    print(json.dumps(result, indent=2))
    (work / "gpu_trainer_check.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
