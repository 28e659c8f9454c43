"""Stage 01: sample the student once per training problem; keep its wrong answers.

Writes under outputs/<profile>/01_sample/:
  all.jsonl      every sample, graded            (appended as it goes: a crash resumes)
  errors.jsonl   the wrong ones: the rectification input
  correct.jsonl  the right ones: the RFT baseline's data
  manifest.json  params, input hashes, counts, wall time
"""
from __future__ import annotations

import time
from pathlib import Path
from collections import Counter

from spotlib.problems import dapo_records, load_dapo_rows
from spotlib.io import JsonlAppender, Manifest, dir_sha256, params_hash, read_jsonl, write_jsonl

STAGE = "01_sample"
CHUNK = 256  # problems generated between two appends: the most a crash can lose (transformers backend)
SEEDING = "per-sample: sha256(profile seed | problem id | sample index)"  # spotlib.engines.sampling.sample_seed


def load_train_problems(profile, count: int | None = None) -> list[dict]:
    """Problem records `{id, family, prompt, answer, meta}` for the profile's training set:
    the first `count` of them (default `sample.num_problems`)."""
    cfg = profile.sample
    count = cfg.num_problems if count is None else count
    if cfg.dataset == "world":
        from spotlib import world

        return world.make_items("arith", count, split="train", seed=profile.seed, world_cfg=profile.world)
    rows = load_dapo_rows(cfg.dataset, cfg.dataset_config, cfg.dataset_split, cfg.data_files)
    return dapo_records(rows, count, source=cfg.data_files or cfg.dataset)


def ensure_student(profile) -> str:
    """The student's path; for the tiny world, pre-train the base model first (cached); for the
    rehearsal, also write its public-format data files."""
    if profile.assets == "rehearsal":
        from spotlib.plan import rehearsal

        rehearsal.prepare(profile)
    if profile.model.name_or_path == "world":
        from spotlib import world

        return str(world.ensure_base_model(profile))
    return profile.model.name_or_path


def grade(profile, records: list[dict], responses: list[str]) -> list[tuple[bool, str | None]]:
    """(correct, extracted answer) for each response."""
    from spotlib.grading import grade_records

    return grade_records(records, responses, profile.sample)


def run(profile, progress: bool = True) -> dict:
    out_dir = profile.stage_dir(STAGE)
    student = ensure_student(profile)
    from spotlib.world.gate import check_base_model
    check_base_model(profile, out_dir)  # stops here on a base model outside the profile's targets
    problems = load_train_problems(profile)
    model_hash = dir_sha256(student) if Path(student).is_dir() else student  # a local model: its files
    # "seeding" names the scheme: samples drawn under another one are not this run's (no mixing on resume).
    manifest = Manifest(out_dir, params={"sample": profile.to_dict()["sample"], "seed": profile.seed,
                                         "seeding": SEEDING},
                        inputs={"student": model_hash, "problems": params_hash(problems)})
    if manifest.is_fresh():
        return manifest.load()["summary"]

    started = time.perf_counter()
    all_path = out_dir / "all.jsonl"
    if all_path.exists() and not _same_run(out_dir, manifest):
        all_path.unlink()  # params or inputs changed: the old samples are not this run's
    manifest.write(complete=False)
    cfg = profile.sample
    with JsonlAppender(all_path, key_fn=lambda r: (r["id"], r["sample_id"])) as sink:
        todo = [p for p in problems if any((p["id"], j) not in sink for j in range(cfg.n))]
        if todo:
            from spotlib.engines.settings import pool_options
            from spotlib.engines.sampling import ENGINE_BACKENDS, choose_backend, generate, open_generator

            # Engines get every prompt at once (each worker its whole share: vLLM schedules them
            # together instead of waiting on each chunk's slowest sample); workers report progress.
            chunk_size = len(todo) if choose_backend(cfg.backend) in ENGINE_BACKENDS else CHUNK

            # One model (or one engine per GPU) for the whole stage, reused by every chunk.
            from spotlib.progress import bar

            # samples done/total across chunks (each chunk's generation has its own bar)
            samples_bar = bar(total=len(problems) * cfg.n, initial=len(sink.records), desc="samples",
                              unit="sample", disable=not progress)
            with samples_bar, open_generator(cfg.backend, student, dtype=profile.model.dtype,
                                             device=profile.device, seed=profile.seed, log_dir=out_dir / "engines",
                                             engine_options=pool_options(profile)) as (model, tokenizer):
                for start in range(0, len(todo), chunk_size):
                    chunk = todo[start:start + chunk_size]
                    # Seeds from (profile seed, problem id, sample index): a resumed run repeats an
                    # uninterrupted one, whatever was left to do.
                    outputs = generate(model, tokenizer, [p["prompt"] for p in chunk], n=cfg.n,
                                       temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                       max_new_tokens=cfg.max_new_tokens, seed=profile.seed,
                                       keys=[p["id"] for p in chunk], batch_size=cfg.batch_size,
                                       backend=cfg.backend, progress=progress)
                    flat = [(p, j, y) for p, ys in zip(chunk, outputs) for j, y in enumerate(ys)
                            if (p["id"], j) not in sink]
                    verdicts = grade(profile, [p for p, _, _ in flat], [y for _, _, y in flat])
                    for (p, j, y), (ok, pred) in zip(flat, verdicts):
                        sink.append({**p, "sample_id": j, "response": y, "pred": pred, "correct": ok})
                    samples_bar.update(len(flat))
                    samples_bar.set_postfix(wrong=sum(not r["correct"] for r in sink.records))
        samples = sorted(sink.records, key=lambda r: (r["id"], r["sample_id"]))

    errors = [r for r in samples if not r["correct"]]
    correct = [r for r in samples if r["correct"]]
    write_jsonl(out_dir / "errors.jsonl", errors)
    write_jsonl(out_dir / "correct.jsonl", correct)
    summary = summarize(samples)
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    manifest.counts = {"samples": len(samples), "errors": len(errors), "correct": len(correct)}
    manifest.timings = {"sample_and_grade_s": summary["wall_time_s"]}
    manifest.write(complete=True, summary=summary, outputs=("all.jsonl", "errors.jsonl", "correct.jsonl"))
    return summary


def _same_run(out_dir, manifest: Manifest) -> bool:
    """Whether a partial all.jsonl belongs to the run about to start (same params and inputs)."""
    try:
        return manifest.load().get("key") == manifest.key()
    except (FileNotFoundError, ValueError):
        return False


def summarize(samples: list[dict]) -> dict:
    """Accuracy overall and by a difficulty key (number of operations, or data source)."""
    by_group: dict[str, Counter] = {}
    for r in samples:
        meta = r.get("meta") or {}
        group = str(meta.get("n_ops", meta.get("data_source", r.get("family", "all"))))
        by_group.setdefault(group, Counter())[r["correct"]] += 1
    n = len(samples)
    n_correct = sum(r["correct"] for r in samples)
    return {
        "samples": n,
        "correct": n_correct,
        "errors": n - n_correct,
        "accuracy": round(n_correct / n, 4) if n else 0.0,
        "by_group": {g: {"n": c[True] + c[False], "accuracy": round(c[True] / (c[True] + c[False]), 4)}
                     for g, c in sorted(by_group.items())},
    }


def load_samples(profile, which: str = "all") -> list[dict]:
    return read_jsonl(profile.stage_dir(STAGE) / f"{which}.jsonl")


def base_model_card(profile) -> dict | None:
    """The tiny base model's held-out scores (greedy and T=0.7) and pre-training figures."""
    path = profile.base_model_path() / "manifest.json"
    if not path.is_file():
        return None
    import json

    import pandas as pd

    manifest = json.loads(path.read_text())
    scores = {k: v for k, v in manifest.get("heldout_scores", {}).items() if isinstance(v, dict)}
    table = pd.DataFrame(scores).rename_axis("family")
    stats = manifest.get("stats", {})
    note = (f"{stats.get('params', 0) / 1e6:.2f}M parameters, {stats.get('tokens', 0):,} tokens in "
            f"{stats.get('train_wall_s', float('nan')):.0f} s ({stats.get('tokens_per_s', 0):,.0f} tokens/s, "
            f"{stats.get('threads', '?')} threads, bf16 autocast {stats.get('bf16_autocast')})")
    nll = manifest.get("heldout_scores", {}).get("nll_nats_per_token")
    if isinstance(nll, dict):
        note += "; NLL per token: " + ", ".join(f"{k} {v:.2f}" for k, v in nll.items())
    return {"scores": table, "note": note, "manifest": manifest}
