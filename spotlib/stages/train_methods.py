"""Stage 04: train every method (and the ablations) for every seed, on stage 03's data.

For each run spec `method[@data][:delta]` (see `spotlib.train.runspec`) and seed in
`profile.seeds`, writes outputs/<profile>/04_train_spot/<run>/seed<k>/: the final model
and tokenizer (`save_pretrained`), `metrics.jsonl` (per-step training records and the
periodic probes) and `summary.json`. The stage folder also holds `reference/` (cached
reference log-probs and probes), `runs.jsonl` (one summary per run and seed) and
`manifest.json`.

Every run sees the same number of examples (the smallest run's data, or
`train.n_examples`), the same steps and batch; only objective and data differ.
Reference log-probs are computed once (no grad) and cached by (data hash, reference
model hash), shared across processes (each scores a share, all receive all); the
reference model is then freed (`spotlib.launch.shared_cache`). With `train.accelerate_config`
(GPUs: DeepSpeed ZeRO-2) or `train.launcher: torchrun` (CPU, gloo), the stage relaunches itself
in `train.num_processes` processes (default: the visible GPUs); see
`spotlib.launch.relaunch.training_command`.

On a CPU with `train.cpu_workers` > 1, the unfinished (run, seed) units are shared out among
that many single-thread worker processes (`--units run:seed,...`), balanced by each run's
expected cost (`spotlib.launch.run_units`: a pair run costs about two SFT runs), so no core
waits while another still holds several runs; this process then collects the finished runs. A run
trains the same wherever it runs: the same run keys and the same weights as in one process.

    python -m spotlib.stages.train_methods --profile tiny [--units sft:0,spot_bco:1]
"""
from __future__ import annotations

import argparse
import gc
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spotlib.analysis import tether
from spotlib.io import DataError, Manifest, dir_sha256, file_sha256, write_jsonl
from spotlib.launch import relaunch
from spotlib.launch.run_units import RunCounter, parse_units, train_units_in_workers
from spotlib.launch.shared_cache import cached_across_processes
from spotlib.launch.workers import cpu_worker_count
from spotlib.report import model_card
from spotlib.train import data as D
from spotlib.train.logps import cache_key, cached, reference_sums
from spotlib.train.probes import build_edit_diag, build_probe_set, diag_settings, probe_items
from spotlib.train.runspec import DATA_FILES, PAIRS_FILE, pairs_file, plan_runs
from spotlib.train.tracking import training_tracking
from spotlib.train.trainer import (EXECUTION_ONLY, RunInputs, finished_summary, make_accelerator, num_steps,
                                   train_bf16, train_run)

STAGE = "04_train_spot"


def _base_model(profile) -> str:
    if profile.model.name_or_path == "world":
        from spotlib import world
        return str(world.ensure_base_model(profile))
    return profile.model.name_or_path


def _model_hash(path: str) -> str:
    return dir_sha256(path) if Path(path).is_dir() else path


@dataclass
class StagePlan:
    """What every run of the stage shares: the runs, equal data, steps and batch, input hashes."""
    runs: list
    examples: dict[str, list[dict]]   # run name -> its first n examples
    n: int
    steps: int
    effective: int
    base_path: str
    ref_hash: str
    inputs_hash: dict[str, str]
    accelerator: object


def plan_stage(profile) -> StagePlan:
    """Runs, equal-size data and steps, as stage 04 trains them (cheap: no model is loaded)."""
    cfg = profile.train
    filter_dir = profile.out / "03_filter"
    runs = plan_runs(cfg)
    base_path = _base_model(profile)
    from spotlib.models import require_saved_model
    require_saved_model(base_path)   # a missing local folder is named, not looked up on the Hub
    ref_hash = _model_hash(base_path)

    examples = {r.name: D.load_examples(filter_dir, r) for r in runs}
    empty = [name for name, rows in examples.items() if not rows]
    if empty:  # every run trains on the same count, so one empty run leaves nothing to train
        raise DataError(f"{filter_dir}: run(s) {', '.join(empty)} have no examples (rft needs correct samples "
                        f"from stage 01, pair runs wrong ones that the Oracle rectified)")
    n = cfg.n_examples or min(len(v) for v in examples.values())
    for name, rows in examples.items():
        if len(rows) < n or n == 0:
            raise DataError(f"{filter_dir}: run {name} has {len(rows)} examples, needs {max(n, 1)}")
        examples[name] = rows[:n]
    accelerator = make_accelerator(cfg, profile.device)
    effective = cfg.per_device_batch * cfg.grad_accum * accelerator.num_processes
    steps = num_steps(cfg, n, effective)

    used = sorted({pairs_file(r) if r.info.pairs else DATA_FILES[r.data] for r in runs}
                  | {DATA_FILES["direct"] for r in runs if r.info.pairs and r.data == "direct"})
    inputs_hash = {f: file_sha256(filter_dir / f) for f in used}
    inputs_hash["base_model"] = ref_hash
    return StagePlan(runs, examples, n, steps, effective, base_path, ref_hash, inputs_hash, accelerator)


def shared_inputs(profile, plan: StagePlan, runs=None) -> dict[str, RunInputs]:
    """Per run: tokenized data, reference log-prob sums, probes; cached under 04's `reference/`.

    Computed once with the reference model (no grad), which is then freed; every seed,
    and every learning rate of the sweep, reuses them.
    """
    cfg = profile.train
    stage_dir = profile.stage_dir(STAGE)
    filter_dir = profile.out / "03_filter"
    accelerator, base_path, ref_hash = plan.accelerator, plan.base_path, plan.ref_hash
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = accelerator.device
    autocast = train_bf16(device, cfg)
    ref_model = None

    def reference():
        nonlocal ref_model
        if ref_model is None:
            from spotlib.train.trainer import load_model
            ref_model = load_model(base_path, profile.model.dtype).to(device).eval()
        return ref_model

    def score(tok):
        return reference_sums(reference(), tok, pad_id, device, max_tokens=cfg.ref_batch_tokens,
                              autocast=autocast)[0]

    shared = {}
    for run_spec in runs if runs is not None else plan.runs:
        rows = plan.examples[run_spec.name]
        data = D.prepare(tokenizer, rows, cfg.max_len, cfg.max_prompt_len, with_rejected=run_spec.info.pairs,
                         completion_format=cfg.completion_format)
        key = cache_key(D.examples_hash(rows), ref_hash, cfg.max_len, cfg.max_prompt_len, run_spec.info.pairs,
                        cfg.completion_format)
        ref = cached_across_processes(accelerator, stage_dir / "reference" / f"logps-{key}.pt", lambda: {
            "chosen": score(data.chosen), "rejected": score(data.rejected) if data.rejected is not None else None})
        shared[run_spec.name] = (data, ref, key)
    # Probes and the edit diagnostic are small (tens of sequences): one process computes them.
    with accelerator.main_process_first():
        probe = _probe_set(profile, tokenizer, reference, ref_hash, stage_dir, device, autocast)
        diag = _edit_diag(profile, tokenizer, reference, ref_hash, stage_dir, filter_dir, pad_id, device, autocast)
    del ref_model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {name: RunInputs(data, ref["chosen"], ref["rejected"], base_path, probe, diag, key)
            for name, (data, ref, key) in shared.items()}


def run(profile, progress: bool = True, seeds: list[int] | None = None, processes: int | None = None,
        units: list[str] | None = None) -> dict:
    """Train every run for every seed. `seeds` or `units` ("run:seed", see `parse_units`)
    trains only those (a worker among several processes sharing the work); the stage
    manifest is then left to the full run, which skips the runs already complete.
    `processes`: how many the launcher was asked for (checked: a launcher that starts fewer
    would silently change the batch)."""
    command = relaunch.training_command(profile)
    if command is not None:
        return relaunch.relaunch_training(profile, command)
    stage_dir = profile.stage_dir(STAGE)
    plan = plan_stage(profile)
    accelerator = plan.accelerator
    if processes is not None and accelerator.num_processes != processes:
        raise RuntimeError(f"stage {STAGE}: launched for {processes} processes, running in "
                           f"{accelerator.num_processes} (check train.launcher / train.num_processes)")
    train_params = {k: v for k, v in profile.to_dict()["train"].items() if k not in EXECUTION_ONLY}
    manifest = Manifest(stage_dir, params={"train": train_params, "seeds": profile.seeds,
                                           "model": profile.to_dict()["model"]}, inputs=plan.inputs_hash)
    # A fresh manifest counts only while every model it lists is still whole (cheap size check).
    if manifest.is_fresh() and all(finished_summary(stage_dir / r.dirname / f"seed{s}", full=False)
                                   for r in plan.runs for s in profile.seeds) \
            and tether.demonstration_finished(profile):
        return manifest.load()
    unknown = sorted(set(seeds or []) - set(profile.seeds))
    if unknown:
        raise ValueError(f"--seeds {unknown}: not among the profile's seeds {profile.seeds}")
    partial = seeds is not None or units is not None
    selected = [(r, s) for s in (seeds or profile.seeds) for r in plan.runs]
    if units is not None:
        wanted = set(parse_units(units, plan.runs, profile.seeds))
        selected = [(r, s) for r, s in selected if (r.name, s) in wanted]

    t0 = time.perf_counter()
    shared = shared_inputs(profile, plan, runs=list({r.name: r for r, _ in selected}.values()))
    manifest.timings["reference_s"] = round(time.perf_counter() - t0, 2)
    show = progress and accelerator.is_main_process
    counter = RunCounter(profile, stage_dir, plan.steps, shared, selected, show and not partial)
    # Launched processes (torchrun, accelerate) already share each run's batch: no workers there.
    workers = 1 if partial or accelerator.num_processes > 1 else cpu_worker_count(profile, len(counter.pending()))
    if workers > 1:  # the loop below then finds every run complete and only collects it
        train_units_in_workers("spotlib.stages.train_methods", profile, counter, workers, progress)

    summaries = []
    for run_spec, seed in selected:
        run_dir = stage_dir / run_spec.dirname / f"seed{seed}"
        counter.now_training(run_spec, seed)
        start = time.perf_counter()
        summary = train_run(profile.train, profile.model, run_spec, seed, shared[run_spec.name], run_dir,
                            steps=plan.steps, device=profile.device, progress=progress,
                            tracking=training_tracking(profile, run_spec, seed, plan.steps, run_dir))
        if accelerator.is_main_process and summary.get("complete"):   # the model describes itself
            model_card.training_card(profile, plan, run_spec, seed, run_dir, summary)
        summary = dict(summary, wall_s=round(time.perf_counter() - start, 2), dir=str(run_dir))
        summaries.append(summary)
        counter.finished(run_spec, seed)
        if show:
            print(f"{run_spec.name:24s} seed {seed}: {summary.get('train_seconds', 0):6.1f} s training, "
                  f"{summary.get('tokens_per_s', 0):7.0f} tok/s", flush=True)
    counter.close()
    if partial:
        return {"runs": summaries}
    start = time.perf_counter()  # the tether lesson's SPoT-BCO run at train.tether_lr (spotlib.analysis.tether)
    lesson = tether.train_demonstration(profile, plan.runs, shared, plan.steps, progress=progress)
    if lesson is not None:
        manifest.timings["tether_run_s"] = round(time.perf_counter() - start, 2)
        if accelerator.is_main_process and lesson.get("complete"):
            model_card.training_card(profile, plan, next(r for r in plan.runs if r.name == tether.LESSON_RUN),
                                     profile.seeds[0], tether.demonstration_dir(profile), lesson,
                                     train_cfg=tether.demonstration_train_cfg(profile.train),
                                     run_name=f"tether/{tether.LESSON_RUN}")
    if accelerator.is_main_process:
        write_jsonl(stage_dir / "runs.jsonl", summaries)
        manifest.counts.update({"runs": len(plan.runs), "seeds": len(profile.seeds), "examples_per_run": plan.n,
                                "steps": plan.steps, "effective_batch": plan.effective})
        manifest.timings["train_s_by_run"] = _seconds_by_run(summaries)
        return manifest.write(runs=summaries)
    return {"runs": summaries}


def _seconds_by_run(summaries: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for s in summaries:
        totals[s["run"]] = round(totals.get(s["run"], 0.0) + s.get("train_seconds", 0.0), 2)
    return totals


def _probe_set(profile, tokenizer, reference, ref_hash, stage_dir, device, autocast):
    cfg = profile.train
    if not cfg.kl_probe_every or not cfg.kl_probe_prompts:
        return None
    if cfg.kl_probe_file:
        from spotlib.io import read_jsonl
        items = read_jsonl(cfg.kl_probe_file, required=("prompt",))[: cfg.kl_probe_prompts]
        for item in items:
            item.setdefault("family", "probe")
    elif profile.model.name_or_path == "world":
        items = probe_items(profile.world, cfg.kl_probe_prompts)
    else:
        return None
    key = cache_key(ref_hash, [i["prompt"] for i in items], cfg.kl_probe_max_tokens, cfg.max_len)
    return cached(stage_dir / "reference" / f"probe-{key}.pt", lambda: build_probe_set(
        reference(), tokenizer, items, max_new_tokens=cfg.kl_probe_max_tokens, max_len=cfg.max_len,
        max_prompt_len=cfg.max_prompt_len, device=device, autocast=autocast))


def _edit_diag(profile, tokenizer, reference, ref_hash, stage_dir, filter_dir, pad_id, device, autocast):
    cfg = profile.train
    pairs_path = filter_dir / PAIRS_FILE
    if not cfg.edit_diag_pairs or not pairs_path.is_file():
        return None
    from spotlib.io import read_jsonl
    pairs = [p for p in read_jsonl(pairs_path) if p.get("rejected")][: cfg.edit_diag_pairs]
    if not pairs:
        return None
    prompts = [p["prompt"] for p in pairs]
    fmt = cfg.completion_format
    chosen = D.tokenize(tokenizer, prompts, [p["chosen"] for p in pairs], cfg.max_len, cfg.max_prompt_len,
                        completion_format=fmt)
    rejected = D.tokenize(tokenizer, prompts, [p["rejected"] for p in pairs], cfg.max_len, cfg.max_prompt_len,
                          completion_format=fmt)
    key = cache_key(ref_hash, D.examples_hash([dict(p, rejected=p["rejected"]) for p in pairs]), cfg.max_len, fmt)
    diag = cached(stage_dir / "reference" / f"diag-{key}.pt", lambda: build_edit_diag(
        reference(), chosen, rejected, pad_id, device, autocast=autocast, **diag_settings(cfg)))
    diag.collateral = _collateral(profile, tokenizer, reference, ref_hash, stage_dir, chosen, rejected, pad_id,
                                  device, autocast)
    return diag


def _collateral(profile, tokenizer, reference, ref_hash, stage_dir, chosen, rejected, pad_id, device, autocast):
    """The tokens the edit diagnostic's pairs push down, on held-out arithmetic the start model solves
    (the tiny world's probe split; spotlib.train.collateral). None outside the tiny world."""
    from spotlib.train.collateral import build_collateral_set, correct_heldout, pushed_token_ids

    cfg = profile.train
    if profile.sample.dataset != "world" or not cfg.kl_probe_prompts:
        return None
    pushed = pushed_token_ids(rejected, chosen)
    items = probe_items(profile.world, cfg.kl_probe_prompts, families=("arith",))
    key = cache_key(ref_hash, "collateral", pushed, [i["prompt"] for i in items], profile.sample.max_new_tokens,
                    cfg.max_len, cfg.completion_format)

    def build():
        prompts, completions = correct_heldout(reference(), tokenizer, items,
                                               max_new_tokens=profile.sample.max_new_tokens)
        tok = D.tokenize(tokenizer, prompts, completions, cfg.max_len, cfg.max_prompt_len,
                         completion_format=cfg.completion_format)
        return build_collateral_set(reference(), tok, pushed, pad_id, device, autocast=autocast)

    return cached(stage_dir / "reference" / f"collateral-{key}.pt", build)


def main(argv=None) -> None:
    from spotlib.config import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--seeds", nargs="+", type=int, help="train only these seeds")
    parser.add_argument("--units", help="train only these runs, as run:seed,run:seed (a worker's share)")
    parser.add_argument("--processes", type=int, help="processes the launcher was asked for (checked)")
    args = parser.parse_args(argv)
    units = [u for u in args.units.split(",") if u] if args.units is not None else None
    run(load_profile(args.profile), seeds=args.seeds, processes=args.processes, units=units)


if __name__ == "__main__":
    main()
