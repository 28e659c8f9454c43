"""Learning-rate sweep: tune each method's LR on the validation split, and draw the frontier.

For every method in `train.methods`, every learning rate in `train.lr_grid` and every seed
in `train.sweep_seeds` (default: the first of `profile.seeds`), train exactly as stage 04
does — same examples, steps, batch, reference log-probs and trainer; only the learning rate
differs — then evaluate the model on the tiny world's **val** split (never the test items of
stage 05) with the profile's eval sampling settings, and delete its weights. A seed is one
replicate of everything (training order, evaluation draws), shared by every LR of the grid;
the base model is evaluated once per seed on the same items. With base scores b and a
model's scores m (accuracy in %), per seed and then as mean ± SE over seeds
(`spotlib.analysis.frontier`):

    in-domain gain  = m.in_domain − b.in_domain                (arith)
    OOD gain        = m.ood − b.ood                            (arith_ood)
    retention loss  = b.general − m.general                    (mean of facts and format)
    overall         = mean of the four families' accuracies

Selection rule, the same for every method: the chosen LR maximises the mean val
**overall** score, which rewards in-domain gains and penalises forgetting alike; ties go to
the smaller retention loss, then to the smaller learning rate. Beside it, each method's
**matched point** (`spotlib.analysis.frontier.matched_point`): its best in-domain gain within 2
points of retention loss, so that no method is judged only where it trains least; and its
**best point** (`spotlib.analysis.frontier.best_point`): its best in-domain gain at any LR, whatever
it forgets — where a method that buys accuracy with forgetting (SFT) shows both.

`train.sweep_variants` adds runs swept on the same grid and seeds and drawn on the same
frontier without being chosen into `train.lr` — the pair objectives taken apart
(`spot_bco+edit_only`, `spot_bce+rejected_only`, ...; see `spotlib.train.runspec`).

Writes outputs/<profile>/sweep/: `base/seed<k>/results.jsonl` and `<run>/lr<lr>/seed<k>/`
(per point: `results.jsonl` per item, `point.json` when finished, the training
`summary.json` and `metrics.jsonl`); `points.jsonl` (per seed), `frontier.jsonl` (mean ± SE
per run and LR), `chosen_lr.json` ({method: lr}), `matched_lr.json`, `chosen_lr.yaml` (a
`train: lr:` mapping for the profile; `matched_lr.yaml` the same at the matched points, to run
stages 04-05 there on the test split), `frontier.png`, `sweep.md` and `manifest.json`.
A finished point is skipped when the sweep runs again. On a CPU with
`train.cpu_workers` > 1, the unfinished points are shared out by method among that many
single-thread worker processes (`--methods`), and this process then writes the summary.

    python -m spotlib.stages.sweep --profile tiny [--methods sft spot_bco] [--lr-grid 1e-4 3e-4]
        [--seeds 0 1 2] [--variants spot_bco+edit_only spot_bco+rejected_only]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path

from spotlib import evals
from spotlib.analysis import frontier, tables
from spotlib.report.frontier_figure import plot_frontier
from spotlib.io import JsonlAppender, Manifest, params_hash, write_json_atomic, write_jsonl
from spotlib.stages import evaluate, train_methods
from spotlib.train.runspec import parse_run
from spotlib.train.trainer import NOT_IN_RUN_KEY, train_run
from spotlib.launch.workers import cpu_worker_count, run_in_workers, worker_profile

STAGE = "sweep"
SPLIT = "val"
RULE = ("maximise the validation overall score (mean of the four families' accuracies); "
        "ties go to the smaller retention loss, then to the smaller learning rate")


def lr_name(lr: float) -> str:
    return f"lr{lr:g}"


def point_dir(out: Path, run_dirname: str, lr: float, seed: int) -> Path:
    return out / run_dirname / lr_name(lr) / f"seed{seed}"


def sweep_seeds(profile) -> list[int]:
    """`train.sweep_seeds`, or the first of the profile's seeds."""
    return list(profile.train.sweep_seeds) or [profile.seeds[0]]


def _entry(model: str, run: str, seed: int, path: Path, method: str, data=None, delta_mode=None, kl=None) -> dict:
    return {"model": model, "run": run, "seed": seed, "path": path, "method": method, "data": data,
            "delta_mode": delta_mode, "kl": kl}


def _scores(entry: dict, items: dict[str, list[dict]], profile, results_path: Path, progress: bool) -> dict:
    """Evaluate one model on the val items (resumable per item) and return its score row."""
    with JsonlAppender(results_path, key_fn=lambda r: (r["model"], r["benchmark"], r["id"])) as results:
        evaluate.evaluate_model(entry, items, profile, results, progress=progress)
        records = [r for r in results.records if r["model"] == entry["model"] and r["benchmark"] in items]
    (row,) = tables.model_rows(records, list(items), [entry])
    row.pop("path", None)
    return row


def _finished_point(point_dir: Path, key: str) -> dict | None:
    """The point's row when it was finished under the same settings (`key`)."""
    path = point_dir / "point.json"
    if path.is_file():
        done = json.loads(path.read_text())
        if done.get("key") == key:
            return done
    return None


def _point(profile, run_spec, lr: float, seed: int, point_dir: Path, items, steps: int, shared, progress,
           key: str) -> dict:
    """Train (run, lr, seed) into point_dir/model, evaluate it on val, keep the metrics only.

    A finished point is reused only if it was made with the same settings (`key`)."""
    point_path = point_dir / "point.json"
    model_dir = point_dir / "model"
    done = _finished_point(point_dir, key)
    if done is not None:
        shutil.rmtree(model_dir, ignore_errors=True)  # a kill between the two left the weights behind
        return done
    if point_path.is_file():
        shutil.rmtree(point_dir)  # other settings: start the point afresh
    train_cfg = dataclasses.replace(profile.train, lr={run_spec.method: lr, "default": lr})
    summary = train_run(train_cfg, profile.model, run_spec, seed, shared()[run_spec.name], model_dir, steps=steps,
                        device=profile.device, progress=progress)
    entry = _entry(f"{run_spec.name}@{lr_name(lr)}/seed{seed}", run_spec.name, seed, model_dir, run_spec.method,
                   run_spec.data, run_spec.delta_mode if run_spec.objective == "bco" else None,
                   evaluate.final_kl(model_dir, summary))
    row = _scores(entry, items, profile, point_dir / "results.jsonl", progress)
    row.update({"lr": lr, "steps": summary.get("steps"), "train_seconds": summary.get("train_seconds"),
                "final_loss": (summary.get("final") or {}).get("loss")})
    for name in ("summary.json", "metrics.jsonl"):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, point_dir / name)
    row["key"] = key
    write_json_atomic(point_path, row)
    shutil.rmtree(model_dir)
    return row


def _points_in_workers(profile, runs, grids: dict[str, list[float]], out: Path, key: str, workers: int, shared,
                       progress) -> None:
    """Share the unfinished points out by method among single-thread worker processes.

    Pair objectives cost about twice a single-sequence one, so methods go to the least
    loaded worker, costliest first. The reference pass runs here once, before the workers."""
    def pending(run_spec):
        return sum(_finished_point(point_dir(out, run_spec.dirname, lr, seed), key) is None
                   for lr in grids[run_spec.name] for seed in sweep_seeds(profile))

    todo = [(pending(r) * (2 if r.info.pairs else 1), r) for r in runs]
    todo = sorted([t for t in todo if t[0]], key=lambda t: -t[0])
    if len(todo) < 2:
        return
    shared()
    groups = [[0, []] for _ in range(min(workers, len(todo)))]
    for cost, run_spec in todo:
        group = min(groups, key=lambda g: g[0])
        group[0] += cost
        group[1].append(run_spec.name)
    spec = worker_profile(profile, out)
    base = set(profile.train.lr_grid)
    jobs = [(f"sweep{i}", ["spotlib.stages.sweep", "--profile", str(spec), "--points-only", "--methods", *names,
                           *_extra_lrs_args({n: [lr for lr in grids[n] if lr not in base] for n in names})])
            for i, (_, names) in enumerate(groups)]
    run_in_workers(jobs, out, len(jobs), progress)


def _extra_lrs_args(extra: dict[str, list[float]]) -> list[str]:
    """`--extra-lrs run=lr,lr ...` for a worker (nothing when no run has LRs beyond the grid)."""
    pairs = [f"{run}={','.join(f'{lr:g}' for lr in lrs)}" for run, lrs in extra.items() if lrs]
    return ["--extra-lrs", *pairs] if pairs else []


def parse_extra_lrs(pairs: list[str] | None) -> dict[str, list[float]]:
    """{run: [lr]} from `run=lr,lr` arguments."""
    out: dict[str, list[float]] = {}
    for pair in pairs or []:
        run, sep, lrs = pair.partition("=")
        if not sep or not lrs:
            raise ValueError(f"--extra-lrs: expected run=lr[,lr...], got {pair!r}")
        out.setdefault(run, []).extend(float(x) for x in lrs.split(","))
    return out


def choose(rows: list[dict]) -> dict[str, float]:
    """{run: lr} by the selection rule (see RULE) over each run's points (mean over seeds)."""
    chosen = {}
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        best = max(mine, key=lambda r: (_num(r["overall"]), -_num(r["retention_loss"], inf=True), -r["lr"]))
        chosen[run] = best["lr"]
    return chosen


def _num(x, inf: bool = False) -> float:
    """NaN sorts last: as −∞ when maximised, +∞ for a loss that is minimised."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return math.inf if inf else -math.inf
    return float(x)


# ---------------------------------------------------------------- outputs
def sweep_markdown(rows: list[dict], bases: dict[int, dict], chosen: dict[str, float], profile) -> str:
    """`rows`: the frontier (mean ± SE per run and LR); `bases`: the base model's scores per seed."""
    seeds = sorted(bases)
    base = {k: frontier.mean_se([b[k] for b in bases.values()])[0] for k in ("in_domain", "ood", "general", "overall")}
    n_items = next(iter(bases.values()))["n_items"]
    lines = [f"# Learning-rate frontier ({profile.name}, {SPLIT} split, seeds {', '.join(map(str, seeds))})", "",
             f"Selection rule, the same for every method: {RULE}.", "",
             f"Base model on {SPLIT} (mean over the seeds' evaluation draws): in-domain {base['in_domain']:.1f}, "
             f"OOD {base['ood']:.1f}, general {base['general']:.1f}, overall {base['overall']:.1f} (%), on "
             f"{n_items} items (avg@k at the eval settings). Changes are against the base evaluated with the "
             f"same seed; ± is the standard error over {len(seeds)} seed(s) (none with one seed).", "",
             frontier.frontier_markdown(rows, chosen, tie_points=profile.train.sweep_bracket_tie,
                                        sigmas=profile.eval.tie_sigmas),
             "Chosen learning rates: " + ", ".join(f"{run} {lr:g}" for run, lr in chosen.items()) + "."]
    return "\n".join(lines) + "\n"


def chosen_yaml(chosen: dict[str, float], profile, rule: str = RULE) -> str:
    import yaml

    lrs = {"default": profile.train.lr["default"]} if "default" in profile.train.lr else {}
    lrs.update(chosen)
    head = f"# Chosen on the {SPLIT} split by spotlib.stages.sweep ({profile.name}): {rule}.\n"
    return head + yaml.safe_dump({"train": {"lr": lrs}}, sort_keys=False)


MATCHED_RULE = (f"each method's matched point: the best mean in-domain gain within "
                f"{frontier.MATCHED_RETENTION_LOSS:g} points of retention loss (the chosen LR where none is)")


# ---------------------------------------------------------------- the stage
def run(profile, progress: bool = True, methods: list[str] | None = None, points_only: bool = False,
        extra_lrs: dict[str, list[float]] | None = None) -> dict:
    """Sweep `train.lr_grid` for each method; write the points, the chosen LRs and the frontier.

    With `train.sweep_bracket` > 0 a run whose chosen, matched or best point sits on an edge of its
    LRs is swept half a decade further on that side, round after round (`spotlib.analysis.frontier.
    bracket_extensions`). `extra_lrs` ({run: [lr]}) adds LRs to some runs' grids (a worker's share
    of such a round). `points_only` trains and evaluates the points and returns them without writing
    the sweep's summary (a worker's share, or `make calibrate`'s SFT points beside a finished sweep)."""
    cfg = profile.train
    # Stage 04's runs plus the variants: the same n and steps as there (variants share their data).
    plan = train_methods.plan_stage(profile.replace(train=dataclasses.replace(
        cfg, ablations=list(cfg.ablations) + list(cfg.sweep_variants))))
    if methods:
        canon = lambda specs: {parse_run(m, cfg.delta_mode).name: m for m in specs}  # noqa: E731
        wanted = set(canon(methods))
        known = canon(cfg.methods) | canon(cfg.sweep_variants)
        unknown = sorted(wanted - set(known))
        if unknown:
            raise ValueError(f"--methods: {', '.join(unknown)} not in train.methods or train.sweep_variants "
                             f"({', '.join(known)})")
        cfg = dataclasses.replace(cfg, methods=[m for n, m in canon(cfg.methods).items() if n in wanted],
                                  sweep_variants=[m for n, m in canon(cfg.sweep_variants).items() if n in wanted])
        profile = profile.replace(train=cfg)
    grid = sorted(set(cfg.lr_grid))
    if not grid:
        raise ValueError(f"{profile.source or profile.name}: key train.lr_grid is empty "
                         "(list the learning rates to sweep, e.g. [1.0e-5, 3.0e-5, 1.0e-4])")
    specs = [parse_run(m, cfg.delta_mode) for m in cfg.methods]
    variants = [parse_run(m, cfg.delta_mode) for m in cfg.sweep_variants]
    methods_seen = [s.method for s in specs]
    if len(set(methods_seen)) != len(methods_seen):
        raise ValueError("train.methods: the sweep tunes one LR per method (train.lr is keyed by method); "
                         f"got several runs of one method: {', '.join(s.name for s in specs)}")
    seeds = sweep_seeds(profile)
    out = profile.stage_dir(STAGE)
    names = [s.name for s in specs + variants]
    runs = [next(r for r in plan.runs if r.name == name) for name in dict.fromkeys(names)]
    params = {"train": dataclasses.asdict(cfg), "eval": dataclasses.asdict(profile.eval),
              "model": dataclasses.asdict(profile.model), "seeds": seeds, "split": SPLIT, "rule": RULE,
              "matched_retention_loss": frontier.MATCHED_RETENTION_LOSS}
    manifest = Manifest(out, params=params, inputs=plan.inputs_hash)
    if manifest.is_fresh() and not points_only:
        # Nothing to train or evaluate; the summary (chosen, matched and best points, figure, tables)
        # is derived again from the stored points by this code, so it never lags the code that reads it.
        old = manifest.load()
        summary = _summarise(old["points"], {int(k): v for k, v in old["bases"].items()}, specs, profile, out)
        old.update(summary)
        write_json_atomic(manifest.path, old)
        return old

    # What a point depends on besides (run, lr, seed): data, steps, trainer and eval settings.
    point_key = params_hash({"inputs": plan.inputs_hash, "steps": plan.steps, "n": plan.n,
                             "train": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_RUN_KEY},
                             "eval": dataclasses.asdict(profile.eval), "model": dataclasses.asdict(profile.model)})
    items = {name: evals.load_items(name, profile.eval, profile.world, split=SPLIT)
             for name in profile.eval.benchmarks}
    bases = {}
    for seed in seeds:  # the base under each seed's evaluation draws: changes are paired per seed
        base_dir = out / "base" / f"seed{seed}"
        base_entry = _entry(f"base/seed{seed}", "base", seed, Path(plan.base_path), "base", kl=0.0)
        base_key = base_dir / "key.json"
        if base_key.is_file() and json.loads(base_key.read_text()) != point_key:
            shutil.rmtree(base_dir)  # other settings: evaluate the base again
        bases[seed] = _scores(base_entry, items, profile, base_dir / "results.jsonl", progress)
        write_json_atomic(base_key, point_key)

    cache = {}

    def shared():  # the reference pass only when some point still needs training
        if not cache:
            cache.update(train_methods.shared_inputs(profile, plan, runs))
        return cache

    workers = 1 if methods else cpu_worker_count(profile, len(runs))
    extra = {name: list(lrs) for name, lrs in (extra_lrs or {}).items()}
    while True:
        grids = {r.name: sorted(set(grid) | set(extra.get(r.name, ()))) for r in runs}
        if workers > 1:  # the loop below then finds every point done and only collects it
            _points_in_workers(profile, runs, grids, out, point_key, workers, shared, progress)
        points = []
        for run_spec in runs:
            for lr in grids[run_spec.name]:
                for seed in seeds:
                    t0 = time.perf_counter()
                    row = _point(profile, run_spec, lr, seed, point_dir(out, run_spec.dirname, lr, seed), items,
                                 plan.steps, shared, progress, point_key)
                    points.append(row)
                    if progress:
                        print(f"{run_spec.name:20s} lr {lr:<8g} seed {seed} overall {row['overall']:5.1f}  "
                              f"({time.perf_counter() - t0:.1f} s)")
        rows = frontier.with_changes(points, bases)
        if points_only or not cfg.sweep_bracket:
            break
        table = frontier.aggregate(rows)
        more = frontier.bracket_extensions(table, choose(table), grid, cfg.sweep_bracket,
                                           tie_points=cfg.sweep_bracket_tie, sigmas=profile.eval.tie_sigmas)
        if not more:
            break
        if progress:
            added = (f"{run} + {', '.join(f'{lr:g}' for lr in lrs)}" for run, lrs in more.items())
            print("bracketing: " + "; ".join(added))
        for name, lrs in more.items():
            extra.setdefault(name, []).extend(lrs)
    if points_only:
        return {"points": rows, "bases": bases}
    summary = _summarise(rows, bases, specs, profile, out)
    manifest.counts.update({"runs": len(runs), "lrs": len(grid), "seeds": len(seeds), "points": len(rows),
                            "lrs_beyond_grid": {name: sorted(lrs) for name, lrs in extra.items() if lrs},
                            "steps": plan.steps, "examples_per_run": plan.n,
                            "items": {n: len(v) for n, v in items.items()}})
    return manifest.write(rule=RULE, base=bases[seeds[0]], bases={str(k): v for k, v in bases.items()},
                          points=rows, **summary)


def _summarise(rows: list[dict], bases: dict[int, dict], specs, profile, out: Path) -> dict:
    """From the per-seed points: the frontier, the chosen / matched / best points, the LR files,
    the figure and sweep.md; returns the manifest's summary fields."""
    table = frontier.aggregate(rows)
    chosen = choose(table)
    plain = {s.name: s.method for s in specs}  # variants are drawn, never chosen into train.lr
    by_method = {plain[name]: lr for name, lr in chosen.items() if name in plain}
    matched = {plain.get(name, name): lr for name, lr in frontier.matched_lrs(table).items()}

    write_jsonl(out / "points.jsonl", rows)
    write_jsonl(out / "frontier.jsonl", table)
    write_json_atomic(out / "chosen_lr.json", by_method)
    write_json_atomic(out / "matched_lr.json", matched)
    (out / "chosen_lr.yaml").write_text(chosen_yaml(by_method, profile))
    # Stage 04/05 at the matched points (test split): the same study with these learning rates.
    at_matched = {m: (matched.get(m) if matched.get(m) is not None else lr) for m, lr in by_method.items()}
    (out / "matched_lr.yaml").write_text(chosen_yaml(at_matched, profile, MATCHED_RULE))
    plot_frontier(table, chosen, out / "frontier.png")
    (out / "sweep.md").write_text(sweep_markdown(table, bases, chosen, profile))
    return {"chosen": by_method, "matched": matched, "frontier": table, "main_table": frontier.main_table(table, chosen)}


def main(argv=None) -> None:
    from spotlib.config import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--methods", nargs="+",
                        help="a subset of train.methods and train.sweep_variants (default: all)")
    parser.add_argument("--lr-grid", nargs="+", type=float, help="overrides train.lr_grid")
    parser.add_argument("--variants", nargs="+", help="overrides train.sweep_variants (e.g. spot_bco+edit_only)")
    parser.add_argument("--seeds", nargs="+", type=int, help="overrides train.sweep_seeds")
    parser.add_argument("--extra-lrs", nargs="+", metavar="RUN=LR[,LR]",
                        help="LRs beyond train.lr_grid for some runs (the bracketing rounds' worker shares)")
    parser.add_argument("--points-only", action="store_true",
                        help="train and evaluate the points only; leave the sweep's summary as it is")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in (("train.lr_grid", args.lr_grid), ("train.sweep_variants", args.variants),
                                               ("train.sweep_seeds", args.seeds)) if value}
    profile = load_profile(args.profile, overrides=overrides)
    if argv is None:   # the command line: compute on the profile's CPU kernels
        from spotlib import precision
        precision.run_on_kernels(profile.world.cpu_kernels, "spotlib.stages.sweep", sys.argv[1:])
    result = run(profile, methods=args.methods, points_only=args.points_only,
                 extra_lrs=parse_extra_lrs(args.extra_lrs))
    print(f"{len(result['points'])} points" if args.points_only else json.dumps(result["chosen"], indent=2))


if __name__ == "__main__":
    main()
