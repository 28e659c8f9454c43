"""spotlib's trainer against TRL's DPOTrainer(loss_type="bco_pair") on the same job, on CPU.

Same tiny-world model (random weights, the tiny profile's shape), same pairs, same
batch, same sequence lengths, same precision (bf16 autocast over fp32 weights), same
thread count, reference log-probs precomputed on both sides and not timed. Each
trainer runs in its own subprocess so its peak memory (max RSS) is its own.
Throughput = real (non-pad) tokens of chosen + rejected sequences per second of the
training loop, first step excluded (warm-up).

    python benchmarks/train_throughput.py --pairs 96 --batch 8 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_job(workdir: Path, n_pairs: int, size: str):
    """A saved random-weight model of the chosen profile's shape and n arithmetic pairs."""
    from spotlib import world
    from spotlib.config import load_profile
    from spotlib.io import write_jsonl
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    profile = load_profile(size)
    tok = build_tokenizer(profile.world)
    model = build_model(profile.world, tok)
    model.save_pretrained(workdir / "model")
    tok.save_pretrained(workdir / "model")
    rng = random.Random(0)
    pairs = []
    for it in world.make_items("arith", n_pairs, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        lines = good.split("\n")
        i = 1 + rng.randrange(max(1, len(lines) - 2))
        lines[i] = lines[i] + "1"
        pairs.append({"id": it["id"], "prompt": it["prompt"], "chosen": good, "rejected": "\n".join(lines),
                      "answer": it["answer"], "source": "rectified"})
    write_jsonl(workdir / "pairs.jsonl", pairs)
    return sum(p["chosen"].count(" ") for p in pairs)


def real_tokens(workdir: Path, max_len: int) -> tuple[int, int]:
    """(total real tokens of all chosen+rejected sequences, pairs) under the chat template."""
    from transformers import AutoTokenizer

    from spotlib.io import read_jsonl
    from spotlib.tokens import build_completion_batch

    tok = AutoTokenizer.from_pretrained(workdir / "model")
    pairs = read_jsonl(workdir / "pairs.jsonl")
    total = 0
    for key in ("chosen", "rejected"):
        batch = build_completion_batch(tok, [p["prompt"] for p in pairs], [p[key] for p in pairs], max_len)
        total += int(batch["attention_mask"].sum())
    return total, len(pairs)


def run_spotlib(workdir: Path, batch: int, max_len: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spotlib.config import load_profile
    from spotlib.io import read_jsonl
    from spotlib.train import data as D
    from spotlib.train.logps import cpu_bf16_is_fast, reference_sums
    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import RunInputs, train_run

    n = len(read_jsonl(workdir / "pairs.jsonl"))
    steps = n // batch
    profile = load_profile("test", overrides={
        "output_dir": str(workdir / "out"), "model.name_or_path": str(workdir / "model"),
        "train.max_steps": steps, "train.per_device_batch": batch, "train.grad_accum": 1,
        "train.kl_probe_every": 0, "train.max_len": max_len, "train.max_prompt_len": max_len,
        "train.lr": {"default": 1e-5}})
    run = parse_run("spot_bce")
    tok = AutoTokenizer.from_pretrained(workdir / "model")
    examples = [dict(p) for p in read_jsonl(workdir / "pairs.jsonl")]
    data = D.prepare(tok, examples, max_len, max_len, with_rejected=True)
    ref = AutoModelForCausalLM.from_pretrained(workdir / "model").eval()
    fast = cpu_bf16_is_fast()
    rc = reference_sums(ref, data.chosen, tok.pad_token_id, torch.device("cpu"), autocast=fast)[0]
    rr = reference_sums(ref, data.rejected, tok.pad_token_id, torch.device("cpu"), autocast=fast)[0]
    del ref
    train_run(profile, run, 0, RunInputs(data, rc, rr, str(workdir / "model")), workdir / "out" / "run",
              steps=steps, progress=False)
    records = [r for r in read_jsonl(workdir / "out" / "run" / "metrics.jsonl") if r["kind"] == "train"][1:]
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in records)
    return {"tokens": sum(r["tokens"] for r in records), "seconds": seconds, "steps": len(records)}


def run_trl(workdir: Path, batch: int, max_len: int) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from spotlib.train.logps import cpu_bf16_is_fast

    from spotlib.io import read_jsonl

    tok = AutoTokenizer.from_pretrained(workdir / "model")
    pairs = read_jsonl(workdir / "pairs.jsonl")
    # Conversational format: TRL applies the same chat template as spotlib.
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                                  "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                  "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    model = AutoModelForCausalLM.from_pretrained(workdir / "model")
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())

    args = DPOConfig(output_dir=str(workdir / "trl"), per_device_train_batch_size=batch,
                     gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=1e-5,
                     loss_type=["bco_pair"], beta=0.1, precompute_ref_log_probs=True, max_length=max_len,
                     bf16=cpu_bf16_is_fast(), use_cpu=True, logging_steps=1, save_strategy="no", report_to=[],
                     lr_scheduler_type="cosine", warmup_steps=0.05, adam_beta2=0.95, weight_decay=0.01,
                     max_grad_norm=1.0, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    steps = len(times) - 1
    return {"seconds": times[-1] - times[0], "steps": steps}


def child(which: str, workdir: Path, batch: int, max_len: int, threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    result = run_spotlib(workdir, batch, max_len) if which == "spotlib" else run_trl(workdir, batch, max_len)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=96)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", default="tiny", help="profile whose world model shape to use (tiny|test)")
    parser.add_argument("--child", choices=["spotlib", "trl"])
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.workdir), args.batch, args.max_len, args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        make_job(workdir, args.pairs, args.size)
        tokens, n = real_tokens(workdir, args.max_len)
        per_step = tokens / n * args.batch
        results = {}
        for which in ("spotlib", "trl"):
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
            out = subprocess.run([sys.executable, __file__, "--child", which, "--workdir", tmp,
                                  "--batch", str(args.batch), "--max-len", str(args.max_len),
                                  "--threads", str(args.threads)],
                                 capture_output=True, text=True, env=env, cwd=REPO)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{which} failed:\n{out.stderr[-3000:]}")
            res = json.loads(line[7:])
            # Both measured over steps 2..end; tokens from the same pairs at the same batch.
            res["tokens_per_s"] = res.get("tokens", per_step * res["steps"]) / res["seconds"]
            results[which] = res
    from spotlib.train.logps import cpu_bf16_is_fast
    s, t = results["spotlib"], results["trl"]
    print(f"model: {args.size} world shape; {args.pairs} pairs, batch {args.batch}, "
          f"{tokens / n / 2:.0f} tokens/sequence, {args.threads} thread(s), bf16 autocast: {cpu_bf16_is_fast()}")
    for name, r in results.items():
        print(f"{name:8s} {r['tokens_per_s']:9.0f} tok/s   peak RSS {r['peak_rss_mb']:7.0f} MB   ({r['steps']} steps timed)")
    print(f"ratio    tokens/s spotlib/TRL = {s['tokens_per_s'] / t['tokens_per_s']:.2f}x   "
          f"peak memory spotlib/TRL = {s['peak_rss_mb'] / t['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
