"""Stage 05: evaluate the start model and every checkpoint of stage 04 — gains and forgetting.

For each model and benchmark, each item gets k samples (avg@k): the score of sample index j
is the benchmark's number over all items, and a benchmark reports mean ± std over the k
indices. Groups follow docs/method.md §5: in-domain = mean of the in-domain benchmarks, OOD =
mean of the OOD ones, general = mean of the rest, overall = unweighted mean of all
benchmarks. A method trained with several seeds reports mean ± std across seeds, and a
difference is called a tie when

    |Δ| < tie_sigmas · sqrt(s_a²/n_a + s_b²/n_b)

(standard errors across seeds; with one seed, the binomial standard error of the items).
Retention loss = general(base) − general(model): positive means forgetting.

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
import dataclasses
import json
import math
import os
from pathlib import Path

from spotlib import evals
from spotlib.io import (DataError, JsonlAppender, Manifest, read_jsonl, weights_problem, weights_sha256,
                        write_json_atomic)
from spotlib.workers import balanced_shares, cpu_worker_count, run_shares, worker_profile

STAGE = "05_eval_forgetting"
RESULTS = "results.jsonl"
WORKER_RESULTS = "results.worker-*.jsonl"   # one per worker process, merged into RESULTS
TRAIN_STAGE = "04_train_spot"
COLUMNS = ("in_domain", "ood", "general", "overall")
# docs/method.md §5 (Qwen3-8B): ID avg, OOD avg, IFEval (general), overall.
PAPER_TABLE = {
    "base": (46.8, 29.9, 83.0, 47.1), "sft": (41.0, 25.5, 79.6, 41.8), "rft": (47.3, 26.1, 81.5, 46.4),
    "sft_plus": (50.5, 30.7, 80.0, 49.4), "spot_bco": (52.1, 41.4, 84.8, 53.3),
    "spot_bce": (51.5, 40.3, 85.8, 52.8), "dpo": (46.9, 40.4, 84.7, 49.6), "reward_sft": (45.3, 42.2, 83.7, 48.9),
}


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
                   progress: bool = True) -> None:
    """Sample k responses per item, score them, append one record per (model, benchmark, item)."""
    from spotlib.sampling import open_generator

    cfg = profile.eval
    todo = items_to_do(entry, items, results)
    if not any(todo.values()):
        return
    device = "cpu" if profile.device == "cpu" else "auto"
    # One model (or one engine per GPU) per checkpoint, reused by every chunk.
    with open_generator(cfg.backend, entry["path"], dtype=profile.model.dtype, device=device, seed=entry["seed"],
                        log_dir=results.path.parent / "engines") as (target, tokenizer):
        _evaluate_chunks(entry, todo, target, tokenizer, cfg, results, progress)


def items_to_do(entry: dict, items: dict[str, list[dict]], results: JsonlAppender) -> dict[str, list[dict]]:
    """Per benchmark, the items of `entry` with no record in `results` yet."""
    entry.setdefault("identity", weights_sha256(entry["path"])[:16])
    # The sink's own key of the record each item would get: what is there is not sampled again.
    return {name: [it for it in its if results.key_fn({"model": entry["model"], "identity": entry["identity"],
                                                      "benchmark": name, "id": it["id"]}) not in results]
            for name, its in items.items()}


def _evaluate_chunks(entry, todo, target, tokenizer, cfg, results, progress) -> None:
    from spotlib.sampling import generate

    # Benchmarks that share k are sampled together: fuller batches, one pass per chunk.
    by_k: dict[int, list[tuple[str, dict]]] = {}
    for name, pending in todo.items():
        by_k.setdefault(evals.k_for(cfg, name), []).extend((name, it) for it in pending)
    for k, jobs in by_k.items():
        chunk = max(1, cfg.batch_size * 4 // k)  # resumable in chunks without starving the batches
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


# ---------------------------------------------------------------- tables
def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def _std(xs):
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def model_rows(records: list[dict], benchmarks: list[str], entries: list[dict]) -> list[dict]:
    """One row per model: each benchmark's mean ± std over k (in %), group averages, KL."""
    by = {}
    for r in records:
        by.setdefault((r["model"], r["benchmark"]), []).append(r)
    rows = []
    for entry in entries:
        row = {k: entry[k] for k in ("model", "run", "seed", "method", "data", "delta_mode", "kl")}
        groups = {g: [] for g in evals.GROUPS}
        n_items = {}
        for name in benchmarks:
            recs = by.get((entry["model"], name), [])
            if not recs:
                continue
            bench = evals.get(name)
            k = min(len(r["metrics"]) for r in recs)
            per_k = [bench.summarize([r["metrics"][j] for r in recs]) for j in range(k)]
            scores = [100 * s["score"] for s in per_k]
            row[name] = _mean(scores)
            row[f"{name}_std_k"] = _std(scores) if k > 1 else 0.0
            for key in per_k[0]:
                if key != "score":
                    row[f"{name}:{key}"] = 100 * _mean([s[key] for s in per_k])
            groups[bench.group].append(row[name])
            n_items[name] = len(recs)
        for g in evals.GROUPS:
            row[g] = _mean(groups[g]) if groups[g] else float("nan")
        present = [row[n] for n in benchmarks if n in row]
        row["overall"] = _mean(present)
        row["n_items"] = sum(n_items.values())
        rows.append(row)
    return rows


def run_table(rows: list[dict], benchmarks: list[str], tie_sigmas: float) -> list[dict]:
    """One row per run: mean ± std across seeds per column, Δ against base, ties."""
    runs: dict[str, list[dict]] = {}
    for row in rows:
        runs.setdefault(row["run"], []).append(row)
    columns = [b for b in benchmarks if any(b in r for r in rows)] + list(COLUMNS)
    table = []
    for run, group in runs.items():
        entry = {"run": run, "method": group[0]["method"], "data": group[0]["data"],
                 "delta_mode": group[0]["delta_mode"], "seeds": len(group),
                 "kl": _mean([g["kl"] for g in group if g["kl"] is not None])
                 if any(g["kl"] is not None for g in group) else None}
        for col in columns:
            values = [g[col] for g in group if col in g and not math.isnan(g[col])]
            entry[col] = _mean(values)
            entry[f"{col}_std"] = _std(values)
            # Never below the items' binomial noise: two seeds that agree by chance are not exact.
            entry[f"{col}_se"] = max(_std(values) / math.sqrt(len(values)),
                                     _binomial_se(entry[col], group[0]["n_items"]) / math.sqrt(len(values)))
        table.append(entry)
    base = next((t for t in table if t["run"] == "base"), None)
    for entry in table:
        for col in columns:
            if base is None:
                continue
            delta = entry[col] - base[col]
            noise = tie_sigmas * math.sqrt(entry[f"{col}_se"] ** 2 + base[f"{col}_se"] ** 2)
            entry[f"d_{col}"] = delta
            entry[f"tie_{col}"] = entry["run"] != "base" and abs(delta) < noise
        entry["retention_loss"] = (base["general"] - entry["general"]) if base else float("nan")
    return table


def _binomial_se(pct: float, n: int) -> float:
    if not n or math.isnan(pct):
        return 0.0
    p = pct / 100
    return 100 * math.sqrt(max(p * (1 - p), 1e-4) / n)


def fmt(entry: dict, col: str) -> str:
    value, std = entry.get(col), entry.get(f"{col}_std", 0.0)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.1f} ± {std:.1f}" if entry.get("seeds", 1) > 1 else f"{value:.1f}"
    if f"d_{col}" in entry and entry["run"] != "base":
        tie = " (tie)" if entry.get(f"tie_{col}") else ""
        text += f" [{entry[f'd_{col}']:+.1f}{tie}]"
    return text


def markdown_table(table: list[dict], columns: list[str], title_col: str = "run") -> str:
    lines = ["| " + " | ".join([title_col, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for entry in table:
        lines.append("| " + " | ".join([entry["run"], *[fmt(entry, c) for c in columns]]) + " |")
    return "\n".join(lines)


def cross_table(table: list[dict]) -> str:
    """Data × objective (docs/method.md §7, question 2): overall and retention loss per cell."""
    cells, methods, datas = {}, [], []
    for t in table:
        if t["run"] == "base" or t["data"] is None or ":" in t["run"]:
            continue
        cells[(t["method"], t["data"])] = t
        methods += [t["method"]] if t["method"] not in methods else []
        datas += [t["data"]] if t["data"] not in datas else []
    if not cells:
        return "_no data × objective cross in this run_"
    lines = ["| objective \\ data | " + " | ".join(datas) + " |", "|" + "---|" * (len(datas) + 1)]
    for m in methods:
        row = []
        for d in datas:
            t = cells.get((m, d))
            row.append("–" if t is None else
                       f"{t['overall']:.1f} ± {t['overall_std']:.1f} (retention loss {t['retention_loss']:+.1f})")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def delta_table(table: list[dict]) -> str:
    """δ modes of SPoT-BCO (docs/method.md §7, question 4)."""
    rows = [t for t in table if t["method"] == "spot_bco" and t.get("data") in (None, "rectified")]
    if len(rows) < 2:
        return "_only one δ mode in this run_"
    lines = ["| δ mode | in-domain | OOD | general | overall |", "|---|---|---|---|---|"]
    for t in rows:
        lines.append(f"| {t['delta_mode'] or t['run']} | " + " | ".join(fmt(t, c) for c in COLUMNS) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the reading
def reading(table: list[dict]) -> str:
    """Where the study agrees with the paper (docs/method.md §5), with the numbers, column by column."""
    by = {t["run"]: t for t in table}
    base = by.get("base")
    if base is None:
        return "No base model was evaluated, so there are no deltas to compare with the paper."
    names = {"in_domain": "in-domain", "ood": "OOD", "general": "general", "overall": "overall"}
    agree = disagree = ties = 0
    lines = ["| method | column | paper Δ | this study Δ | verdict |", "|---|---|---|---|---|"]
    for run, paper in PAPER_TABLE.items():
        if run == "base" or run not in by:
            continue
        for i, col in enumerate(COLUMNS):
            paper_delta = paper[i] - PAPER_TABLE["base"][i]
            t = by[run]
            if math.isnan(t[col]):
                continue
            ours = t[f"d_{col}"]
            if t[f"tie_{col}"]:
                verdict, ties = "tie (within noise)", ties + 1
            elif (ours > 0) == (paper_delta > 0):
                verdict, agree = "agrees", agree + 1
            else:
                verdict, disagree = "disagrees", disagree + 1
            lines.append(f"| {run} | {names[col]} | {paper_delta:+.1f} | {ours:+.1f} | {verdict} |")
    head = [f"Against the paper's main table (Qwen3-8B, §7), the signs of the changes from the base model "
            f"agree in {agree}, disagree in {disagree} and are within noise in {ties} method × column cells."]
    for a, b, claim in (("spot_bco", "sft_plus", "SPoT-BCO beats SFT+ overall (paper 53.3 vs 49.4)"),
                        ("spot_bco", "sft", "SPoT-BCO beats SFT overall (paper 53.3 vs 41.8)")):
        if a in by and b in by:
            ta, tb = by[a], by[b]
            diff = ta["overall"] - tb["overall"]
            noise = 2 * math.sqrt(ta["overall_se"] ** 2 + tb["overall_se"] ** 2)
            verdict = "a tie" if abs(diff) < noise else ("agrees" if diff > 0 else "disagrees")
            head.append(f"- {claim}: here {ta['overall']:.1f} vs {tb['overall']:.1f} ({diff:+.1f}, noise ±{noise:.1f}) "
                        f"— {verdict}.")
    for run in ("sft", "spot_bco"):
        if run in by:
            t = by[run]
            head.append(f"- {run}: retention loss {t['retention_loss']:+.1f} points of general skill "
                        f"(paper: {PAPER_TABLE['base'][2] - PAPER_TABLE[run][2]:+.1f} on IFEval)"
                        + (f", held-out KL {t['kl']:.4f}" if t.get("kl") is not None else "") + ".")
    return "\n".join(head) + "\n\n" + "\n".join(lines)


# ---------------------------------------------------------------- the stage
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
    items = {name: evals.load_items(name, cfg, profile) for name in cfg.benchmarks}
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
    with JsonlAppender(stage / RESULTS, key_fn=_record_key) as results:
        for entry in entries:  # after workers: every model is found done, and only collected
            if bar is not None and entry["model"] in pending and workers == 1:
                bar.set_postfix(model=entry["model"])
            evaluate_model(entry, items, profile, results, progress=progress)
            if bar is not None and entry["model"] in pending:
                bar.update(1)
        # Only the results of these exact weights: an earlier model of the same name is not reported.
        wanted = {(e["model"], e["identity"]) for e in entries}
        records = [r for r in results.records
                   if (r["model"], r.get("identity")) in wanted and r["benchmark"] in items]
    if bar is not None:
        bar.close()
    summary = summarize(records, cfg.benchmarks, entries, stage, cfg.tie_sigmas)
    manifest.counts = {"models": len(entries), "items": {n: len(v) for n, v in items.items()},
                       "records": len(records)}
    manifest.write(complete=True)
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
    items = {name: evals.load_items(name, cfg, profile) for name in cfg.benchmarks}
    bar = None
    if progress:
        from spotlib.progress import bar as progress_bar
        bar = progress_bar(total=len(models), desc="models evaluated", unit="model")
    with JsonlAppender(stage / WORKER_RESULTS.replace("*", str(os.getpid())), key_fn=_record_key) as sink:
        if (stage / RESULTS).is_file():  # the main file is not written while workers run
            sink.done |= {_record_key(r) for r in read_jsonl(stage / RESULTS)}
        for model in models:
            if bar is not None:
                bar.set_postfix(model=model)
            evaluate_model(entries[model], items, profile, sink, progress=progress)
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


def summarize(records: list[dict], benchmarks: list[str], entries: list[dict], stage: Path,
              tie_sigmas: float = 2.0) -> dict:
    import pandas as pd

    rows = model_rows(records, benchmarks, entries)
    table = run_table(rows, benchmarks, tie_sigmas)
    pd.DataFrame(rows).drop(columns=["path"], errors="ignore").to_csv(stage / "table_models.csv", index=False)
    pd.DataFrame(table).to_csv(stage / "table.csv", index=False)
    columns = [b for b in benchmarks if any(b in r for r in rows)] + list(COLUMNS)
    main = markdown_table(table, columns)
    base_general = next((t["general"] for t in table if t["run"] == "base"), float("nan"))
    from spotlib import plots
    figures = {"bars": plots.save(plots.score_bars(table), stage / "scores_bar.png").name,
               "kl_scatter": plots.save(plots.kl_scatter(rows, base_general), stage / "kl_vs_retention.png").name}
    text = reading(table)
    sections = {"table": main, "cross": cross_table(table), "delta_modes": delta_table(table), "reading": text}
    (stage / "table.md").write_text(
        "Cells: mean ± std across seeds [Δ against base; *tie* when within noise].\n\n" + main + "\n")
    (stage / "reading.md").write_text(
        "## Main table\n\n" + sections["table"] + "\n\n## Data × objective\n\n" + sections["cross"]
        + "\n\n## δ modes\n\n" + sections["delta_modes"] + "\n\n## Reading\n\n" + text + "\n")
    summary = {"models": rows, "runs": table, "figures": figures, "markdown": sections}
    write_json_atomic(stage / "results.json", json.loads(json.dumps(summary, default=str)))
    return summary
