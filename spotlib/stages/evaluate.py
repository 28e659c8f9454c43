"""Stage 05: evaluate the start model and every checkpoint of stage 04 — gains and forgetting.

The tables (avg@k, group means, seeds, ties, retention loss) are computed by
`spotlib.analysis.tables`; this module runs the models and writes what it computes.

The models are the base and exactly the checkpoints the profile names (`train.methods`,
`train.ablations` × `seeds`); each result is keyed by the checksum of the weights that
produced it, so a retrained model is evaluated anew and never reported with old scores.

On a CPU with `train.cpu_workers` > 1 (the same key as stage 04's: how many single-thread
processes the machine runs side by side), the models still to evaluate are shared out
among that many worker processes (`--models`), balanced by the samples each has left. Each
worker appends to its own `results.worker-<pid>.jsonl`; this process merges them into
`results.jsonl` (by the same record key: none twice, none lost) and deletes them, also
when it finds them left by an interrupted run. Every sample has its own seed, so where a
model is evaluated changes nothing.

    python -m spotlib.stages.evaluate --profile tiny [--models base/seed0,sft/seed1]
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path

from spotlib import evals
from spotlib.report import model_card
from spotlib.analysis import tables
from spotlib.io import (DataError, JsonlAppender, Manifest, read_jsonl, weights_problem, weights_sha256,
                        write_json_atomic)
from spotlib.launch.workers import balanced_shares, cpu_worker_count, run_shares, worker_profile

STAGE = "05_eval_forgetting"
RESULTS = "results.jsonl"
WORKER_RESULTS = "results.worker-*.jsonl"   # one per worker process, merged into RESULTS
TRAIN_STAGE = "04_train_spot"


# ---------------------------------------------------------------- which models
def find_checkpoints(profile) -> list[dict]:
    """The checkpoints the profile names: every run of `train` × `seeds`, under
    04_train_spot/<run>/seed<k>/, finished and with weights that match their checksum.
    Folders of runs the profile no longer names are not looked at."""
    from spotlib.train.runspec import plan_runs

    root = profile.out / TRAIN_STAGE
    found, missing = [], []
    for run_spec in plan_runs(profile.train):
        for seed in profile.seeds:
            seed_dir = root / run_spec.dirname / f"seed{seed}"
            summary_path = seed_dir / "summary.json"
            try:
                summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
            except json.JSONDecodeError:
                raise DataError(f"{summary_path}: not valid JSON (re-run stage 04 for this run)") from None
            if not summary.get("complete") or not (seed_dir / "config.json").is_file():
                missing.append(str(seed_dir))
                continue
            problem = weights_problem(seed_dir, summary.get("weights_sha256"))
            if problem:
                raise DataError(f"{problem}; delete {seed_dir} and re-run stage 04")
            spec = _spec(summary.get("run") or run_spec.name, profile)
            run = summary.get("run") or spec.get("run")
            found.append({"model": f"{run}/seed{seed}", "run": run, "seed": seed, "path": seed_dir,
                          "method": summary.get("method", spec.get("method", run)),
                          "data": summary.get("data", spec.get("data")),
                          "delta_mode": summary.get("delta_mode", spec.get("delta_mode")),
                          "kl": final_kl(seed_dir, summary)})
    if missing:
        raise DataError(f"no finished stage-04 model for {len(missing)} run(s) the profile names: "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} (run stage 04 first)")
    return found


def _spec(name: str, profile) -> dict:
    """method / data / δ of a run name (`spot_bco@direct:ema`), as stage 04 reads it."""
    from spotlib.train.runspec import parse_run

    try:
        spec = parse_run(name, profile.train.delta_mode)
    except ValueError:
        return {"run": name, "method": name}
    return {"run": spec.name, "method": spec.method, "data": spec.data,
            "delta_mode": spec.delta_mode if spec.objective == "bco" else None}


def final_kl(run_dir: Path, summary: dict) -> float | None:
    """Held-out token KL(π_θ‖π_ref) at the end of training (`kl/probe` of stage 04)."""
    probe = summary.get("final_probe") or {}
    if "kl/probe" in probe:
        return float(probe["kl/probe"])
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for record in reversed(read_jsonl(path)):
            if record.get("kind", "probe") == "probe" and "kl/probe" in record:
                return float(record["kl/probe"])
    return None


def models_to_evaluate(profile) -> list[dict]:
    base = [{"model": f"base/seed{s}", "run": "base", "seed": s, "path": profile.base_model_path(),
             "method": "base", "data": None, "delta_mode": None, "kl": 0.0} for s in profile.seeds]
    return (base if profile.eval.include_base else []) + find_checkpoints(profile)


# ---------------------------------------------------------------- generation and scoring
def _record_key(record: dict) -> tuple:
    """A result belongs to the weights that produced it: a retrained model is evaluated anew."""
    return (record["model"], record.get("identity"), record["benchmark"], record["id"])


def evaluate_model(entry: dict, items: dict[str, list[dict]], profile, results: JsonlAppender,
                   progress: bool = True, pool=None) -> None:
    """Sample k responses per item, score them, append one record per (model, benchmark, item).
    `pool`: an engine pool kept for the stage (`stage_engines`); it is switched to this model."""
    from spotlib.engines.settings import pool_options
    from spotlib.models import load_tokenizer
    from spotlib.engines.sampling import open_generator

    cfg = profile.eval
    todo = items_to_do(entry, items, results)
    if not any(todo.values()):
        return
    if pool is not None:  # the stage's engines, started once: this model's weights loaded into them
        pool.load(entry["path"])
        _evaluate_chunks(entry, todo, pool, load_tokenizer(entry["path"]), cfg, results, progress)
        return
    device = "cpu" if profile.device == "cpu" else "auto"
    # One model (or one engine per GPU) per checkpoint, reused by every chunk.
    with open_generator(cfg.backend, entry["path"], dtype=profile.model.dtype, device=device, seed=entry["seed"],
                        log_dir=results.path.parent / "engines", engine_options=pool_options(profile)) as (target, tokenizer):
        _evaluate_chunks(entry, todo, target, tokenizer, cfg, results, progress)


@contextlib.contextmanager
def stage_engines(profile, entries: list[dict], log_dir: Path):
    """One engine pool for the whole stage (engine backends; None otherwise): started once with the
    first model, then each model's weights are loaded into the running engines (`EnginePool.load`)."""
    from spotlib.engines.settings import pool_options
    from spotlib.engines.sampling import ENGINE_BACKENDS, choose_backend

    if not entries or choose_backend(profile.eval.backend) not in ENGINE_BACKENDS:
        yield None
        return
    from spotlib.engines.pool import EnginePool

    with EnginePool(choose_backend(profile.eval.backend), str(entries[0]["path"]), seed=entries[0]["seed"],
                    log_dir=log_dir, **pool_options(profile)) as pool:
        yield pool


def items_to_do(entry: dict, items: dict[str, list[dict]], results: JsonlAppender) -> dict[str, list[dict]]:
    """Per benchmark, the items of `entry` with no record in `results` yet."""
    entry.setdefault("identity", weights_sha256(entry["path"])[:16])
    # The sink's own key of the record each item would get: what is there is not sampled again.
    return {name: [it for it in its if results.key_fn({"model": entry["model"], "identity": entry["identity"],
                                                      "benchmark": name, "id": it["id"]}) not in results]
            for name, its in items.items()}


def _evaluate_chunks(entry, todo, target, tokenizer, cfg, results, progress) -> None:
    from spotlib.engines.pool import EnginePool
    from spotlib.engines.sampling import generate

    # Benchmarks that share k are sampled together: fuller batches, one pass per chunk.
    by_k: dict[int, list[tuple[str, dict]]] = {}
    for name, pending in todo.items():
        by_k.setdefault(evals.k_for(cfg, name), []).extend((name, it) for it in pending)
    for k, jobs in by_k.items():
        # Resumable in chunks without starving the batches; an engine pool gets all of them at once.
        chunk = len(jobs) if isinstance(target, EnginePool) else max(1, cfg.batch_size * 4 // k)
        for start in range(0, len(jobs), chunk):
            part = jobs[start:start + chunk]
            # Seeds from (model seed, benchmark, item id, sample index): chunking and resume change nothing.
            outs = generate(target, tokenizer, [it["prompt"] for _, it in part], n=k, temperature=cfg.temperature,
                            top_p=cfg.top_p, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                            seed=entry["seed"], keys=[f"{n}|{it['id']}" for n, it in part],
                            batch_size=cfg.batch_size, backend=cfg.backend, progress=progress)
            for name in dict.fromkeys(n for n, _ in part):
                rows = [i for i, (n, _) in enumerate(part) if n == name]
                bench = evals.get(name)
                scores = bench.score_all([part[i][1] for i in rows for _ in range(k)],
                                         [r for i in rows for r in outs[i]], cfg)
                for j, i in enumerate(rows):
                    results.append({"model": entry["model"], "identity": entry["identity"],
                                    "run": entry["run"], "seed": entry["seed"], "benchmark": name, "group": bench.group, "id": part[i][1]["id"],
                                    "responses": outs[i], "metrics": scores[j * k:(j + 1) * k]})


# ---------------------------------------------------------------- the stage
def summarize(records: list[dict], benchmarks: list[str], entries: list[dict], stage: Path,
              tie_sigmas: float = 2.0) -> dict:
    """Write the tables (CSV and markdown), figures and reading of these records; return them."""
    import pandas as pd

    from spotlib.report import plots

    rows, table, sections = tables.run_tables(records, benchmarks, entries, tie_sigmas)
    pd.DataFrame(rows).drop(columns=["path"], errors="ignore").to_csv(stage / "table_models.csv", index=False)
    pd.DataFrame(table).to_csv(stage / "table.csv", index=False)
    base_general = next((t["general"] for t in table if t["run"] == "base"), float("nan"))
    figures = {"bars": plots.save(plots.score_bars(table), stage / "scores_bar.png").name,
               "kl_scatter": plots.save(plots.kl_scatter(rows, base_general, plots.retention_noise(table, tie_sigmas)),
                                        stage / "kl_vs_retention.png").name}
    (stage / "table.md").write_text(tables.table_md(sections))
    (stage / "reading.md").write_text(tables.reading_md(sections))
    summary = {"models": rows, "runs": table, "figures": figures, "markdown": sections, "tie_sigmas": tie_sigmas}
    write_json_atomic(stage / "results.json", json.loads(json.dumps(summary, default=str)))
    return summary


def run(profile, progress: bool = True) -> dict:
    """Evaluate base + checkpoints, write results.jsonl, tables, figures and reading.md."""
    from spotlib.config import load_profile

    if isinstance(profile, (str, Path)):
        profile = load_profile(profile)
    cfg = profile.eval
    stage = profile.stage_dir(STAGE)
    entries = models_to_evaluate(profile)
    missing = [e["path"] for e in entries if not Path(e["path"], "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no saved model here (run the earlier stages first)")
    for entry in entries:
        entry["identity"] = weights_sha256(entry["path"])[:16]
    inputs = {e["model"]: e["identity"] for e in entries}
    manifest = Manifest(stage, params={"eval": dataclasses.asdict(cfg), "seeds": profile.seeds}, inputs=inputs)
    if manifest.is_fresh() and (stage / "results.json").is_file():
        return json.loads((stage / "results.json").read_text())
    items = {name: evals.load_items(name, cfg, profile.world) for name in cfg.benchmarks}
    merge_worker_results(stage)  # what workers of an interrupted run finished counts
    with JsonlAppender(stage / RESULTS, key_fn=_record_key) as results:
        cost = {e["model"]: sum(len(its) * evals.k_for(cfg, name)
                                for name, its in items_to_do(e, items, results).items()) for e in entries}
    pending = [e["model"] for e in entries if cost[e["model"]]]
    workers = cpu_worker_count(profile, len(pending))
    if workers > 1:
        shares = balanced_shares(pending, workers, cost)
        run_shares("spotlib.stages.evaluate", worker_profile(profile, stage), "--models", shares, stage, progress)
        merge_worker_results(stage)
    bar = None
    if progress:
        from spotlib.progress import bar as progress_bar
        bar = progress_bar(total=len(entries), initial=len(entries) - len(pending), desc="models evaluated",
                           unit="model")
    todo_here = [e for e in entries if e["model"] in pending] if workers == 1 else []
    with JsonlAppender(stage / RESULTS, key_fn=_record_key) as results, \
            stage_engines(profile, todo_here, stage / "engines") as pool:
        for entry in entries:  # after workers: every model is found done, and only collected
            if bar is not None and entry["model"] in pending and workers == 1:
                bar.set_postfix(model=entry["model"])
            evaluate_model(entry, items, profile, results, progress=progress, pool=pool)
            if bar is not None and entry["model"] in pending:
                bar.update(1)
        # Only the results of these exact weights: an earlier model of the same name is not reported.
        wanted = {(e["model"], e["identity"]) for e in entries}
        records = [r for r in results.records
                   if (r["model"], r.get("identity")) in wanted and r["benchmark"] in items]
    if bar is not None:
        bar.close()
    summary = summarize(records, cfg.benchmarks, entries, stage, cfg.tie_sigmas)
    model_card.add_evaluation_scores(entries, summary["models"], cfg.benchmarks)   # each checkpoint's card
    manifest.counts = {"models": len(entries), "items": {n: len(v) for n, v in items.items()},
                       "records": len(records)}
    manifest.write(complete=True, outputs=("results.json",))
    return summary


def evaluate_share(profile, models: list[str], progress: bool = True) -> list[str]:
    """A worker's share: evaluate these models (names as `sft/seed1`) into this process's own
    `results.worker-<pid>.jsonl`, skipping what `results.jsonl` already holds."""
    stage = profile.stage_dir(STAGE)
    entries = {e["model"]: e for e in models_to_evaluate(profile)}
    unknown = [m for m in models if m not in entries]
    if unknown:
        raise ValueError(f"--models {unknown[0]!r}: not among the models this profile evaluates "
                         f"({', '.join(list(entries)[:4])}, ...)")
    cfg = profile.eval
    items = {name: evals.load_items(name, cfg, profile.world) for name in cfg.benchmarks}
    bar = None
    if progress:
        from spotlib.progress import bar as progress_bar
        bar = progress_bar(total=len(models), desc="models evaluated", unit="model")
    with JsonlAppender(stage / WORKER_RESULTS.replace("*", str(os.getpid())), key_fn=_record_key) as sink:
        if (stage / RESULTS).is_file():  # the main file is not written while workers run
            sink.done |= {_record_key(r) for r in read_jsonl(stage / RESULTS)}
        with stage_engines(profile, [entries[m] for m in models], stage / "engines" / f"share-{os.getpid()}") as pool:
            for model in models:
                if bar is not None:
                    bar.set_postfix(model=model)
                evaluate_model(entries[model], items, profile, sink, progress=progress, pool=pool)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return models


def merge_worker_results(stage: Path) -> int:
    """Append the workers' records to `results.jsonl` (those it lacks, by record key; a torn
    last line is dropped: that item is sampled again), then delete the worker files."""
    parts = sorted(stage.glob(WORKER_RESULTS))
    if not parts:
        return 0
    added = 0
    with JsonlAppender(stage / RESULTS, key_fn=_record_key, fsync=False) as results:
        for part in parts:
            with JsonlAppender(part, key_fn=_record_key, fsync=False) as records:
                added += sum(results.append(r) for r in records.records)
    with (stage / RESULTS).open("rb+") as handle:  # once, for all the records merged
        os.fsync(handle.fileno())
    for part in parts:
        part.unlink()
    return added


def main(argv=None) -> None:
    from spotlib.config import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--models", help="evaluate only these models, as run/seed<k>,... (a worker's share)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    if args.models is not None:
        evaluate_share(profile, [m for m in args.models.split(",") if m])
    else:
        run(profile)


if __name__ == "__main__":
    main()
