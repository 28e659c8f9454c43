"""spotlib's trainer against its limit and against TRL's DPOTrainer(loss_type="bco_pair"), on CPU.

Three sides train the same tiny-world model (random weights, the profile's shape) on the
same pairs, batch and sequence lengths, at the same precision and thread count:

  limit    the bare forward + backward of the model on spotlib's exact token stream (same
           rows per step, chosen + rejected in one batch padded to the longer, LM head on
           completion positions, a cross-entropy sum): no optimizer, no logging, batches
           built before the clock starts. What any trainer of this model could reach.
  spotlib  `spotlib.train.trainer.train_run` (spot_bce = BCO pair loss, δ = 0).
  TRL      `trl.DPOTrainer(loss_type=["bco_pair"])`, precomputed reference log-probs.

Gradient checkpointing is one setting for all three sides (`--gradient-checkpointing`, off
by default): TRL's `DPOConfig` turns it on unless told otherwise, and a side that recomputes
its activations in backward does more work for less memory, so it is set explicitly on
every side (spotlib: `train.gradient_checkpointing`; the limit: the model's own switch).

Each side runs in its own subprocess (its peak RSS is its own); sides are interleaved over
rounds, the order rotating, and every figure is a median over rounds. Throughput = real
(non-pad) tokens per second between the end of step 1 and the end of the last step (one
warm-up step excluded), on the wall clock and on the process's CPU clock. On a shared
machine wall rates move with the load; per-round ratios between sides measured side by
side are what count.

    python benchmarks/train_throughput.py --pairs 192 --batch 16 --rounds 3
    python benchmarks/train_throughput.py --pairs 192 --batch 16 --rounds 3 --gradient-checkpointing
    python benchmarks/train_throughput.py --smoke          # seconds: the code path only
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SIDES = ("limit", "spotlib", "trl")
SEED = 0
TARGETS = {"vs_trl": 1.5, "memory_vs_trl": 1.0, "of_limit": 0.80}
MATTERING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


# ---------------------------------------------------------------- the job

def make_job(workdir: Path, n_pairs: int, size: str) -> None:
    """A saved random-weight model of the chosen profile's shape and n arithmetic pairs."""
    from spotlib import world
    from spotlib.config import load_profile
    from spotlib.io import write_jsonl
    from spotlib.world.pretrain import save_untrained

    profile = load_profile(size)
    save_untrained(profile.world, workdir / "model")
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


def prepared_data(workdir: Path, max_len: int):
    from transformers import AutoTokenizer

    from spotlib.io import read_jsonl
    from spotlib.train import data as D

    tok = AutoTokenizer.from_pretrained(workdir / "model")
    examples = [dict(p) for p in read_jsonl(workdir / "pairs.jsonl")]
    return tok, D.prepare(tok, examples, max_len, max_len - 1, with_rejected=True)  # the trainer's limits


def pair_batches(data, pad_id: int, batch: int, steps: int) -> list[dict]:
    """spotlib's micro-batches, step by step: the seeded rows, chosen then rejected, one width."""
    import torch

    from spotlib.train.data import collate, step_rows

    out = []
    for step in range(steps):
        rows = step_rows(len(data), SEED, step, batch)
        c, r = collate(data.chosen, rows, pad_id), collate(data.rejected, rows, pad_id)
        width = max(c["input_ids"].shape[1], r["input_ids"].shape[1])

        out.append({k: torch.cat([_pad(c[k], width, pad_id if k == "input_ids" else 0),
                                  _pad(r[k], width, pad_id if k == "input_ids" else 0)]) for k in c})
    return out


def _pad(x, width: int, value: int):
    import torch

    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


# ---------------------------------------------------------------- clocks

class StepClock:
    """Wall and CPU time and the tokens seen at the end of each step."""

    def __init__(self):
        self.marks: list[tuple[float, float, int]] = []

    def mark(self, tokens_so_far: int) -> None:
        self.marks.append((time.perf_counter(), time.process_time(), tokens_so_far))

    def result(self) -> dict:
        if len(self.marks) < 2:
            raise RuntimeError(f"{len(self.marks)} step(s) recorded: need at least 2 (one is warm-up)")
        (w0, c0, k0), (w1, c1, k1) = self.marks[0], self.marks[-1]
        return {"tokens": k1 - k0, "wall_s": w1 - w0, "cpu_s": c1 - c0, "steps": len(self.marks) - 1,
                "step_tokens": [b[2] - a[2] for a, b in zip([(0, 0, 0)] + self.marks[:-1], self.marks)]}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_before_training() -> dict:
    """RSS now and its high-water mark so far (imports, data, reference log-probs); then the
    kernel's mark is reset where Linux allows it, so the training phase's own peak is read apart."""
    before = {"rss_before_mb": rss_mb(), "peak_before_mb": peak_rss_mb()}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # 5: reset the peak RSS (VmHWM) to the current RSS
        before["peak_reset"] = True
    except OSError:
        before["peak_reset"] = False
    return before


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def peaks(result: dict) -> dict:
    """The whole process's peak RSS and, where the mark was reset at training start, the
    training phase's own (getrusage reports the mark since the reset, so both are kept)."""
    if not result.get("peak_reset"):
        return {"peak_rss_mb": peak_rss_mb()}
    training = status_mb("VmHWM")
    return {"peak_training_mb": training, "peak_rss_mb": max(result["peak_before_mb"], training)}


# ---------------------------------------------------------------- the three sides

def packed_batches(data, pad_id: int, batch: int, steps: int) -> list:
    """The same rows as `pair_batches`, each micro-batch's sequences end to end in one row."""
    from spotlib.train.data import step_rows
    from spotlib.train.packing import packed_layout

    return [packed_layout([(data.chosen, rows), (data.rejected, rows)], pad_id)
            for rows in (step_rows(len(data), SEED, step, batch) for step in range(steps))]


def run_limit(workdir: Path, batch: int, max_len: int, steps: int, bf16: bool, checkpointing: bool,
              packing: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    tok, data = prepared_data(workdir, max_len)
    model = AutoModelForCausalLM.from_pretrained(workdir / "model").train()
    if packing:  # the packed token stream: one row per micro-batch, attention by segments
        from spotlib.train.packing import use_varlen
        use_varlen(model)
        return _run_limit_packed(model, packed_batches(data, tok.pad_token_id, batch, steps), bf16, checkpointing)
    batches = pair_batches(data, tok.pad_token_id, batch, steps)
    if checkpointing:  # as spotlib's trainer switches it on
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    clock, seen, before = StepClock(), 0, memory_before_training()
    for b in batches:
        target_mask = b["completion_mask"][:, 1:].bool()
        targets = b["input_ids"][:, 1:][target_mask]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             use_cache=False).last_hidden_state
            logits = head(hidden[:, :-1][target_mask]).float()
        torch.nn.functional.cross_entropy(logits, targets, reduction="sum").backward()
        model.zero_grad(set_to_none=True)
        seen += int(b["attention_mask"].sum())
        clock.mark(seen)
    return {**clock.result(), **before, "precision": "bf16 autocast" if bf16 else "fp32",
            "checkpointing": model.is_gradient_checkpointing}


def _run_limit_packed(model, layouts, bf16: bool, checkpointing: bool) -> dict:
    import torch

    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    clock, seen, before = StepClock(), 0, memory_before_training()
    for b in layouts:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = decoder(input_ids=b.input_ids, use_cache=False, **b.model_kwargs()).last_hidden_state
            logits = head(hidden[:, :-1].reshape(-1, hidden.shape[-1]).index_select(0, b.select)).float()
        torch.nn.functional.cross_entropy(logits, b.targets, reduction="sum").backward()
        model.zero_grad(set_to_none=True)
        seen += b.tokens_real
        clock.mark(seen)
    return {**clock.result(), **before, "precision": "bf16 autocast" if bf16 else "fp32",
            "checkpointing": model.is_gradient_checkpointing}


def run_spotlib(workdir: Path, batch: int, max_len: int, steps: int, bf16: bool, checkpointing: bool,
                packing: bool = False) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    import spotlib.io
    from spotlib.config import load_profile
    from spotlib.train.logps import reference_sums
    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import RunInputs, train_run

    profile = load_profile("test", overrides={
        "output_dir": str(workdir / "out"), "model.name_or_path": str(workdir / "model"),
        "train.max_steps": steps, "train.per_device_batch": batch, "train.grad_accum": 1,
        "train.kl_probe_every": 0, "train.max_len": max_len, "train.max_prompt_len": max_len - 1,
        "train.bf16_autocast": bf16, "train.gradient_checkpointing": checkpointing,
        "train.packing": packing, "train.lr": {"default": 1e-5},
        # the LM head by the tiny study's chunks (the limit takes it whole)
        "train.logits_chunk_tokens": load_profile("tiny").train.logits_chunk_tokens})
    tok, data = prepared_data(workdir, max_len)
    ref = AutoModelForCausalLM.from_pretrained(workdir / "model").eval()
    rc = reference_sums(ref, data.chosen, tok.pad_token_id, torch.device("cpu"), autocast=bf16)[0]
    rr = reference_sums(ref, data.rejected, tok.pad_token_id, torch.device("cpu"), autocast=bf16)[0]
    del ref
    # The trainer's own per-step clock leaves out its metrics write (with fsync): time from
    # one step's train record being written to the next one's, like TRL's on_step_end.
    clock, seen = StepClock(), [0]
    original = spotlib.io.JsonlAppender.append

    def append(self, record):
        written = original(self, record)
        if record.get("kind") == "train":
            seen[0] += record["tokens"]
            clock.mark(seen[0])
        return written

    spotlib.io.JsonlAppender.append = append
    before = memory_before_training()
    run_dir = workdir / f"out-{os.getpid()}"
    inputs = RunInputs(data, rc, rr, str(workdir / "model"))
    train_run(profile.train, profile.model, parse_run("spot_bce"), SEED, inputs, run_dir, steps=steps,
              device=profile.device, progress=False)
    own = [r for r in spotlib.io.read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"][1:]
    return {**clock.result(), **before,
            "own_clock_s": sum(r["tokens"] / r["tokens_per_s"] for r in own),
            "precision": "bf16 autocast" if bf16 else "fp32"}  # the profile's choice (spotlib.precision)


def run_trl(workdir: Path, batch: int, max_len: int, steps: int, bf16: bool, checkpointing: bool,
            packing: bool = False) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from spotlib.io import read_jsonl

    tok = AutoTokenizer.from_pretrained(workdir / "model")
    pairs = read_jsonl(workdir / "pairs.jsonl")[: steps * batch]
    # Conversational format: TRL applies the same chat template as spotlib.
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p["prompt"]}],
                                  "chosen": [{"role": "assistant", "content": p["chosen"]}],
                                  "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs])
    model = AutoModelForCausalLM.from_pretrained(workdir / "model")
    clock = StepClock()
    holder = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            clock.mark(int(holder["trainer"]._total_train_tokens))

    args = DPOConfig(output_dir=str(workdir / f"trl-{os.getpid()}"), per_device_train_batch_size=batch,
                     gradient_accumulation_steps=1, num_train_epochs=1, learning_rate=1e-5,
                     loss_type=["bco_pair"], beta=0.1, precompute_ref_log_probs=True, max_length=max_len,
                     bf16=bf16, use_cpu=True, logging_steps=1, save_strategy="no", report_to=[],
                     lr_scheduler_type="cosine", warmup_steps=0.05, adam_beta2=0.95, weight_decay=0.01,
                     max_grad_norm=1.0, dataloader_num_workers=0, disable_tqdm=True, seed=SEED,
                     # DPOConfig's default is True: say it, as on the other sides
                     gradient_checkpointing=checkpointing,
                     gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[Clock()])
    holder["trainer"] = trainer
    before = memory_before_training()   # TRL's reference log-probs were computed in __init__
    trainer.train()
    mixed = trainer.accelerator.mixed_precision
    return {**clock.result(), **before, "precision": "bf16 autocast" if mixed == "bf16" else "fp32",
            "checkpointing": trainer.accelerator.unwrap_model(trainer.model).is_gradient_checkpointing}


RUNNERS = {"limit": run_limit, "spotlib": run_spotlib, "trl": run_trl}


def child(which: str, workdir: Path, batch: int, max_len: int, steps: int, threads: int, bf16: bool,
          checkpointing: bool, packing: bool = False) -> None:
    import torch
    torch.set_num_threads(threads)
    result = RUNNERS[which](workdir, batch, max_len, steps, bf16, checkpointing, packing)
    result.update(peaks(result))
    print("RESULT " + json.dumps(result))


# ---------------------------------------------------------------- the machine

def machine(threads: int) -> dict:
    import torch

    from spotlib.precision import cpu_has_native_bf16, kernel_signature

    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return {"cpu": model, "flags": [f for f in MATTERING_FLAGS if f in flags], "native_bf16": cpu_has_native_bf16(),
            "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)), "threads": threads,
            "torch": torch.__version__, "kernels": kernel_signature()}


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------- summary

def summarise(rounds: list[dict[str, dict]]) -> dict:
    """Medians over rounds of each side's rates and peaks, and of the per-round ratios."""
    def med(values):
        return statistics.median(values) if values else None

    sides = [s for s in SIDES if all(s in r for r in rounds)]
    out = {"sides": {}, "ratios": {}}
    for s in sides:
        out["sides"][s] = {
            "wall_tok_s": med([r[s]["tokens"] / r[s]["wall_s"] for r in rounds]),
            "cpu_tok_s": med([r[s]["tokens"] / r[s]["cpu_s"] for r in rounds]),
            "wall_tok_s_range": [min(r[s]["tokens"] / r[s]["wall_s"] for r in rounds),
                                 max(r[s]["tokens"] / r[s]["wall_s"] for r in rounds)],
            "peak_rss_mb": med([r[s]["peak_rss_mb"] for r in rounds]),
            "rss_before_mb": med([r[s]["rss_before_mb"] for r in rounds]),
            "peak_before_mb": med([r[s]["peak_before_mb"] for r in rounds]),
            "peak_training_mb": med([r[s]["peak_training_mb"] for r in rounds if "peak_training_mb" in r[s]]),
            "precision": rounds[0][s]["precision"]}
    for name, (a, b) in {"of_limit": ("spotlib", "limit"), "vs_trl": ("spotlib", "trl"),
                         "trl_of_limit": ("trl", "limit")}.items():
        if a in sides and b in sides:
            for clock in ("wall", "cpu"):
                per_round = [(r[a]["tokens"] / r[a][f"{clock}_s"]) / (r[b]["tokens"] / r[b][f"{clock}_s"])
                             for r in rounds]
                out["ratios"][f"{name}_{clock}"] = {"median": med(per_round), "min": min(per_round),
                                                     "max": max(per_round)}
    if "spotlib" in sides and "trl" in sides:
        per_round = [r["spotlib"]["peak_rss_mb"] / r["trl"]["peak_rss_mb"] for r in rounds]
        out["ratios"]["memory_vs_trl"] = {"median": med(per_round), "min": min(per_round), "max": max(per_round)}
    return out


def report(summary: dict, precision: str) -> list[str]:
    lines = [f"-- {precision} ({len(summary['rounds'])} rounds, median [min-max of the rounds])"]
    for s, v in summary["sides"].items():
        lo, hi = v["wall_tok_s_range"]
        lines.append(f"  {s:8s} {v['wall_tok_s']:8.0f} tok/s wall [{lo:.0f}-{hi:.0f}]  {v['cpu_tok_s']:8.0f} tok/s CPU"
                     f"   peak RSS {v['peak_rss_mb']:5.0f} MB (at training start: {v['rss_before_mb']:4.0f},"
                     f" peak {v['peak_before_mb']:4.0f}; training alone: "
                     f"{'n/a' if v['peak_training_mb'] is None else format(v['peak_training_mb'], '4.0f')})"
                     f"   {v['precision']}")
    ratios = summary["ratios"]
    labels = {"of_limit": ("spotlib / limit", TARGETS["of_limit"], "≥"),
              "vs_trl": ("spotlib / TRL", TARGETS["vs_trl"], "≥"),
              "trl_of_limit": ("TRL / limit", None, "")}
    for key, (label, target, sign) in labels.items():
        if f"{key}_wall" not in ratios:
            continue
        w, c = ratios[f"{key}_wall"], ratios[f"{key}_cpu"]
        verdict = ("" if target is None else
                   f"   target {sign} {target:.2f}: {'met' if w['median'] >= target else 'NOT met'} (wall),"
                   f" {'met' if c['median'] >= target else 'NOT met'} (CPU)")
        lines.append(f"  {label:16s} {w['median']:.2f}x wall [{w['min']:.2f}-{w['max']:.2f}]"
                     f"   {c['median']:.2f}x CPU [{c['min']:.2f}-{c['max']:.2f}]{verdict}")
    if "memory_vs_trl" in ratios:
        m = ratios["memory_vs_trl"]
        ok = m["median"] <= TARGETS["memory_vs_trl"]
        lines.append(f"  peak RSS spotlib / TRL {m['median']:.2f}x [{m['min']:.2f}-{m['max']:.2f}]"
                     f"   target ≤ 1.00: {'met' if ok else 'NOT met'}")
    return lines


# ---------------------------------------------------------------- driver

def run_side(which: str, workdir: Path, args, steps: int, bf16: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    cmd = [sys.executable, __file__, "--child", which, "--workdir", str(workdir), "--batch", str(args.batch),
           "--max-len", str(args.max_len), "--steps", str(steps), "--threads", str(args.threads)]
    if bf16:
        cmd.append("--bf16")
    if args.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    if args.packing:
        cmd.append("--packing")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"train_throughput: the {which} side ({'bf16' if bf16 else 'fp32'}) failed:\n{out.stderr[-3000:]}")
    result = json.loads(line[7:])
    if result.get("checkpointing", args.gradient_checkpointing) != args.gradient_checkpointing:
        sys.exit(f"train_throughput: the {which} side ran with gradient checkpointing {result['checkpointing']},"
                 f" asked {args.gradient_checkpointing}")
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=192)
    parser.add_argument("--batch", type=int, default=16, help="pairs per step (the tiny profile trains 16)")
    parser.add_argument("--max-len", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (stage 04 runs 1 per worker)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians over them")
    parser.add_argument("--size", default="tiny", help="profile whose world model shape to use (tiny|test)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: fp32, and bf16 autocast too where the CPU has native bf16")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {','.join(SIDES)}")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="every side recomputes activations in backward (default: no side does)")
    parser.add_argument("--packing", action="store_true",
                        help="spotlib and the limit run packed micro-batches (train.packing; TRL stays padded)")
    parser.add_argument("--kernels", choices=["native", "avx2", "avx512"], default="native",
                        help="CPU kernels of every side (avx2: the tiny study's, `world.cpu_kernels`; bf16 "
                             "autocast is only native on the CPU's own kernels)")
    parser.add_argument("--json", help="also write every measurement and the summary here")
    parser.add_argument("--workdir", help="build the job here and keep it (default: a temporary folder)")
    parser.add_argument("--smoke", action="store_true",
                        help="the test model, 8 pairs, batch 2, one fp32 round: checks the code path in seconds")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.pairs, args.batch, args.rounds, args.precision = "test", 8, 2, 1, "fp32"
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        parser.error(f"--sides: expected a comma-separated subset of {','.join(SIDES)}, got {args.sides!r}")
    args.sides = [s for s in SIDES if s in sides]
    if args.pairs // args.batch < 2:
        parser.error(f"--pairs {args.pairs} at --batch {args.batch}: need at least 2 steps (one is warm-up)")
    if args.rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.child and args.kernels != "native":
        from spotlib import precision
        # restart on those kernels; the sides' processes inherit them
        precision.run_on_kernels(args.kernels, __file__, sys.argv[1:] if argv is None else list(argv))
    if args.child:
        child(args.child, Path(args.workdir), args.batch, args.max_len, args.steps, args.threads, args.bf16,
              args.gradient_checkpointing, args.packing)
        return {}
    info = machine(args.threads)
    precisions = {"auto": ["fp32"] + (["bf16"] if info["native_bf16"] else []),
                  "fp32": ["fp32"], "bf16": ["bf16"]}[args.precision]
    if "bf16" in precisions and not info["native_bf16"]:
        sys.exit("train_throughput: --precision bf16 asked, but this CPU has no native bf16 (avx512_bf16/amx_bf16):"
                 " autocast would be emulated, many times slower")
    steps = args.pairs // args.batch
    print(f"machine: {info['cpu']}; flags: {' '.join(info['flags']) or 'none of ' + ', '.join(MATTERING_FLAGS)}; "
          f"native bf16: {'yes' if info['native_bf16'] else 'no'}; {info['cores']} cores "
          f"({info['cores_usable']} usable); {args.threads} torch thread(s) per side; torch {info['torch']}")
    start_load = load()
    print(f"load average at start: {start_load} (1, 5, 15 min)")
    print(f"job: {args.size} world shape, {args.pairs} pairs, batch {args.batch} pairs = {2 * args.batch} sequences, "
          f"{steps} steps (step 1 not timed), max_len {args.max_len}; {args.rounds} interleaved round(s) of "
          f"{', '.join(args.sides)}, each side in its own process; gradient checkpointing "
          f"{'on' if args.gradient_checkpointing else 'off'} on every side")
    measured: dict[str, list[dict]] = {p: [] for p in precisions}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        make_job(workdir, args.pairs, args.size)
        for k in range(args.rounds):
            for precision in precisions:
                order = args.sides[k % len(args.sides):] + args.sides[: k % len(args.sides)]
                results = {s: run_side(s, workdir, args, steps, precision == "bf16") for s in order}
                if "limit" in results and "spotlib" in results and \
                        results["limit"]["step_tokens"] != results["spotlib"]["step_tokens"]:
                    sys.exit("train_throughput: the limit and spotlib saw different token streams: "
                             f"{results['limit']['step_tokens']} vs {results['spotlib']['step_tokens']}")
                measured[precision].append(results)
                print(f"  round {k + 1} {precision}: " + ", ".join(
                    f"{s} {r['tokens'] / r['wall_s']:.0f} tok/s" for s, r in results.items()), flush=True)
    end_load = load()
    summaries = {}
    for precision in precisions:
        summaries[precision] = summarise(measured[precision])
        summaries[precision]["rounds"] = measured[precision]
        print("\n".join(report(summaries[precision], "fp32" if precision == "fp32" else "bf16 autocast")))
    print(f"load average at end: {end_load} (1, 5, 15 min)")
    if max(float(start_load.split()[0]), float(end_load.split()[0])) > 0.75 * info["cores_usable"]:
        print("note: the machine was shared during this run (load average above the cores free for it): absolute "
              "tokens/s are depressed and noisy; the per-round ratios of sides run side by side are what count, and those on the CPU clock (time this process ran) move least with the load.")
    result = {"machine": info, "load_start": start_load, "load_end": end_load, "args": {
        k: v for k, v in vars(args).items() if k not in ("child", "steps", "bf16")}, "steps": steps,
        "precisions": summaries}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
