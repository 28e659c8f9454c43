"""Stage 06: GRPO from the base model and from the SPoT checkpoint, with equal budgets.

Both runs see the same prompts in the same order, take the same number of steps with
the same rollouts, learning rate and KL coefficient; each run's KL reference is its own
start model (docs/method.md). Afterwards the two start models and the two RL results are
evaluated with stage 05's benchmarks and settings into a table shaped like the paper's
Table 4 (in-domain, OOD, general/retention).

Writes under outputs/<profile>/06_rl_init/:
  <init>/seed<k>/metrics.jsonl   per-step reward, KL, entropy, clip fraction, lengths
  <init>/seed<k>/heldout.jsonl   greedy accuracy on held-out problems along training
  <init>/seed<k>/final/          the RL model (save_pretrained)
  curves.csv                     both runs' curves in one long table
  table4.csv, table4.md          the final evaluation
  manifest.json                  params, input hashes, summary

With `rl.num_processes` > 1 (0: one per visible GPU) the GRPO runs are relaunched in
their own processes — `accelerate launch` with `train.accelerate_config` (DeepSpeed
ZeRO-2) on GPUs, `torchrun` (gloo) on CPU — and this process evaluates once they have
exited, so no training process or rollout engine holds a GPU during evaluation. In one
process, each run releases its rollout engine before the next run or the evaluation.

    python -m spotlib.stages.rl_init --profile tiny
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import time
from pathlib import Path

from spotlib.analysis import tables
from spotlib.io import Manifest, dir_sha256, params_hash, write_json_atomic
from spotlib.report.model_card import CARD

STAGE = "06_rl_init"
START_LABELS = {"base": "base", "spot_bco": "SPoT"}

def init_path(profile, method: str) -> Path:
    """Where a run starts: the base model, or a 04 checkpoint (its first seed)."""
    if method == "base":
        path = profile.base_model_path()
    else:
        path = profile.out / "04_train_spot" / method / f"seed{profile.seeds[0]}"
    if not (path / "config.json").is_file() and method != "base":
        raise FileNotFoundError(f"{path}: no saved {method} checkpoint (run stage 04_train_spot first)")
    return path


def make_grader(profile):
    """records, responses -> [correct]: the tiny world's scorer or math-verify (reward ±1)."""
    from spotlib.oracle.verify import verify_many

    return lambda records, responses: verify_many(profile, records, responses)


def rl_problems(profile) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out problems). Held-out: the world's `val` split, else the
    `rl.heldout_items` rows after the `sample.num_problems` that stage 01 samples (and stages 03
    and 04 train on), so neither start model has trained on a held-out problem."""
    from spotlib.stages.sample import load_train_problems

    cfg = profile.rl
    if profile.sample.dataset == "world":
        from spotlib import world

        train = load_train_problems(profile, cfg.num_prompts)
        heldout = world.make_items("arith", cfg.heldout_items, split="val", seed=profile.seed,
                                   world_cfg=profile.world)
        return train[:cfg.num_prompts], heldout
    used = profile.sample.num_problems
    if cfg.num_prompts > used:
        raise ValueError(f"rl.num_prompts={cfg.num_prompts}: more than the sample.num_problems={used} rows "
                         f"stage 01 uses; the rows after them are the held-out problems")
    rows = load_train_problems(profile, used + cfg.heldout_items)
    if len(rows) < used + cfg.heldout_items:
        raise ValueError(f"rl.heldout_items={cfg.heldout_items}: the dataset has {len(rows)} problems and stage 01 "
                         f"uses the first {used}; lower sample.num_problems to {max(len(rows) - cfg.heldout_items, 0)} "
                         f"so the held-out problems lie outside what the start models trained on")
    return rows[:cfg.num_prompts], rows[used:used + cfg.heldout_items]


def fingerprint(path: Path) -> str:
    """Content hash of a small model folder; names, sizes and mtimes of a large one."""
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.name != CARD)
    if sum(p.stat().st_size for p in files) < 200 * 2**20:
        return dir_sha256(path, skip=(CARD,))   # the model card describes the model, later stages add to it
    digest = hashlib.sha256()
    for p in files:
        stat = p.stat()
        digest.update(f"{p.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def score_model(profile, model_path: Path, progress: bool = False, pool=None) -> dict[str, float]:
    """benchmark -> score (avg@k of the headline metric) with the 05 registry and eval settings.

    Same benchmarks, items, k, sampling settings and backend as stage 05 (`spotlib.evals`,
    `eval.backend`), so the start models' rows can be checked against 05's table. One
    generator per model gets every benchmark's prompts in one call. `pool`: the stage's engine
    pool (`evaluate.stage_engines`, started once), switched to this model.
    """
    import contextlib

    import torch

    from spotlib import evals
    from spotlib.engines.settings import pool_options
    from spotlib.precision import autocast_for
    from spotlib.engines.sampling import ENGINE_BACKENDS, choose_backend, generate, open_generator

    ecfg = profile.eval
    backend = choose_backend(ecfg.backend)
    loaded = {name: evals.load_items(name, ecfg, profile.world) for name in ecfg.benchmarks}
    by_k: dict[int, list[tuple[str, int]]] = {}  # benchmarks that share k: one generate call
    for name, items in loaded.items():
        by_k.setdefault(evals.k_for(ecfg, name), []).extend((name, i) for i in range(len(items)))
    outs: dict[tuple[str, int], list[str]] = {}
    if pool is not None:
        from spotlib.models import load_tokenizer

        pool.load(model_path)
        generator = contextlib.nullcontext((pool, load_tokenizer(model_path)))
    else:
        generator = open_generator(backend, model_path, dtype=profile.model.dtype, device=profile.device, seed=0,
                                   log_dir=profile.stage_dir(STAGE) / "engines", engine_options=pool_options(profile))
    with generator as (target, tokenizer):
        device = torch.device("cpu") if backend in ENGINE_BACKENDS else next(target.parameters()).device
        for k, jobs in by_k.items():
            with torch.no_grad(), autocast_for(device, profile.rl.bf16_autocast and backend in ("transformers",)):
                texts = generate(target, tokenizer, [loaded[n][i]["prompt"] for n, i in jobs], n=k,
                                 temperature=ecfg.temperature, top_p=ecfg.top_p, top_k=ecfg.top_k,
                                 max_new_tokens=ecfg.max_new_tokens, seed=0, batch_size=ecfg.batch_size,
                                 keys=[i for _, i in jobs], backend=backend,  # each benchmark's own positions
                                 progress=progress)
            outs.update(zip(jobs, texts))
    scores = {}
    for name, items in loaded.items():
        bench = evals.get(name)
        k = evals.k_for(ecfg, name)
        per_sample = [bench.summarize(bench.score_all(items, [outs[(name, i)][j] for i in range(len(items))],
                                                      ecfg))["score"] for j in range(k)]
        scores[name] = sum(per_sample) / k
    return scores


def curves(runs: dict[str, dict]) -> list[dict]:
    """One long table: (init, step, metric values) for both runs' training and held-out curves."""
    rows = []
    for method, result in runs.items():
        held = {h["step"]: h["heldout_accuracy"] for h in result["heldout"]}
        if 0 in held:
            rows.append({"init": method, "step": 0, "heldout_accuracy": held[0]})
        for m in result["metrics"]:
            rows.append({"init": method, "step": m["step"], "reward_mean": m["reward_mean"],
                         "kl": m["kl"], "entropy": m["entropy"], "clip_frac": m["clip_frac"],
                         "response_len": m["response_len"], "heldout_accuracy": held.get(m["step"])})
    return rows


def run(profile, progress: bool = True) -> dict:
    """Both GRPO runs, their curves and the Table-4-shaped evaluation; returns the summary."""
    import pandas as pd

    stage_dir = profile.stage_dir(STAGE)
    cfg = profile.rl
    seed = profile.seeds[0]
    starts = {m: init_path(profile, m) for m in cfg.init_methods}
    train_items, heldout = rl_problems(profile)
    manifest = Manifest(stage_dir,
                        params={"rl": dataclasses.asdict(cfg), "seed": seed, "eval": profile.to_dict()["eval"],
                                "max_len": profile.model.max_len, "grading": profile.sample.grading},
                        inputs={**{m: fingerprint(p) for m, p in starts.items()},
                                "prompts": params_hash([r["id"] for r in train_items]),
                                "heldout": params_hash([r["id"] for r in heldout])})
    if manifest.is_fresh():
        return manifest.load()["summary"]
    manifest.write(complete=False)

    from spotlib.launch.relaunch import node_count, profile_nodes, relaunch_grpo

    processes = num_processes(profile)
    if processes * node_count(profile) > 1:  # trained by launched processes, read back from disk
        from spotlib.rl.run_state import finished_result

        t0 = time.perf_counter()
        relaunch_grpo(profile, processes)
        if profile_nodes(profile).rank > 0:  # node 0 evaluates and writes the stage's results
            return {"stage_dir": str(stage_dir), "node_rank": profile_nodes(profile).rank}
        timings = {"grpo_launched_s": round(time.perf_counter() - t0, 1), "grpo_processes": processes}
        runs = {m: finished_result(stage_dir / m / f"seed{seed}") for m in starts}
    else:
        runs, timings = train_runs(profile, starts, train_items, heldout, progress)
    release_engines()  # nothing of the RL runs may hold a GPU while the models are evaluated
    curve_rows = curves(runs)
    pd.DataFrame(curve_rows).to_csv(stage_dir / "curves.csv", index=False)

    t0 = time.perf_counter()
    models = {}
    for method, start in starts.items():
        label = START_LABELS.get(method, method)
        models[label] = start
        models[f"{label} + GRPO" if method != "base" else "GRPO"] = Path(runs[method]["final"])
    from spotlib.stages.evaluate import stage_engines

    # One engine pool for every model of the evaluation (engine backends): started once, weights swapped.
    entries = [{"path": path, "seed": 0} for path in models.values()]
    with stage_engines(profile, entries, stage_dir / "engines") as pool:
        scores = {label: score_model(profile, path, pool=pool) for label, path in models.items()}
    _cards(profile, starts, runs, scores, len(train_items), params_hash([r["id"] for r in train_items]))
    timings["evaluate_s"] = round(time.perf_counter() - t0, 1)
    rows = tables.table4(scores)
    pd.DataFrame(rows).to_csv(stage_dir / "table4.csv", index=False)
    (stage_dir / "table4.md").write_text(tables.table4_markdown(rows))

    summary = {"stage_dir": str(stage_dir), "table4": rows, "timings": timings,
               "runs": {m: _run_summary(r) for m, r in runs.items()}}
    write_json_atomic(stage_dir / "summary.json", summary)
    manifest.counts.update({"train_prompts": len(train_items), "heldout": len(heldout),
                            "steps": {m: r["steps"] for m, r in runs.items()}})
    manifest.timings.update(timings)
    manifest.write(complete=True, summary=summary)
    return summary


def _cards(profile, starts: dict[str, Path], runs: dict[str, dict], scores: dict, n_prompts: int,
           prompts_hash: str) -> None:
    """Each GRPO model's card, with its row of Table 4 (%)."""
    from spotlib.report import model_card

    for method, start in starts.items():
        label = START_LABELS.get(method, method)
        final = Path(runs[method]["final"])
        model_card.grpo_card(profile, method, start, final, steps=runs[method]["steps"], n_prompts=n_prompts,
                             prompts_hash=prompts_hash, start_hash=fingerprint(start))
        row = scores[f"{label} + GRPO" if method != "base" else "GRPO"]
        model_card.add_scores(final, {name: 100 * value for name, value in row.items()},
                              "stage 06 (06_rl_init/table4.csv)")


def train_runs(profile, starts: dict[str, Path], train_items, heldout, progress: bool = True):
    """Both GRPO runs, in this process or as one rank of a launched group: ({method: result}, timings).

    A run whose final model exists (trained by launched processes) returns at once."""
    from spotlib.rl.grpo import train_grpo
    from spotlib.train.tracking import run_tracking

    cfg, seed = profile.rl, profile.seeds[0]
    stage_dir = profile.stage_dir(STAGE)
    grader = make_grader(profile)
    runs, timings = {}, {}
    for method, start in starts.items():
        t0 = time.perf_counter()
        run_dir = stage_dir / method / f"seed{seed}"
        tracking = run_tracking(profile, run_dir, {"init": method, "seed": seed, "rl": dataclasses.asdict(cfg)})
        runs[method] = train_grpo(start, run_dir, train_items, grader, cfg,
                                  heldout=heldout, seed=seed, device=profile.device,
                                  max_len=profile.model.max_len, backend=cfg.backend,
                                  dtype=profile.model.dtype, progress=progress,
                                  deepspeed_config=profile.train.deepspeed_config, tracking=tracking)
        timings[f"grpo_{method}_s"] = round(time.perf_counter() - t0, 1)
    return runs, timings


def release_engines() -> None:
    """Free rollout engines cached in this process (each run already released its own)."""
    from spotlib.engines.rollout import release_cached_engines

    release_cached_engines()


def num_processes(profile) -> int:
    """GRPO training processes per node: `rl.num_processes`, 0 meaning one per visible GPU; 1 inside a launched rank."""
    import torch

    from spotlib.launch.relaunch import launched

    if launched():
        return 1
    wanted = profile.rl.num_processes
    if wanted < 0:
        raise ValueError(f"rl.num_processes: expected 0 (one per GPU) or a positive count, got {wanted}")
    return wanted or max(torch.cuda.device_count(), 1)


def main(argv=None) -> None:
    from spotlib.config import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--train-only", action="store_true",
                        help="only the GRPO runs (what each launched process does)")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    if args.train_only:
        starts = {m: init_path(profile, m) for m in profile.rl.init_methods}
        train_items, heldout = rl_problems(profile)
        train_runs(profile, starts, train_items, heldout, progress=False)
    else:
        run(profile)


def _run_summary(result: dict) -> dict:
    """Curve end points: first and last step's reward (mean of the 3 last), held-out accuracy."""
    metrics, held = result["metrics"], result["heldout"]
    tail = metrics[-3:]
    return {
        "steps": result["steps"],
        "reward_first": metrics[0]["reward_mean"] if metrics else None,
        "reward_last3": sum(m["reward_mean"] for m in tail) / len(tail) if tail else None,
        "heldout_first": held[0]["heldout_accuracy"] if held else None,
        "heldout_last": held[-1]["heldout_accuracy"] if held else None,
        "kl_last": metrics[-1]["kl"] if metrics else None,
        "final": result["final"],
    }


if __name__ == "__main__":
    main()
