"""Is the tiny world one where the paper's premise can occur? Three measured targets.

A study of "learning without forgetting" means something only if the base model has room to
learn, if the Oracle's own solutions are off-policy for the student (so that SFT on them is
the distribution shift the paper is about), and if forgetting exists (so that SPoT has
something to avoid). The world is calibrated against these on the base model and on SFT only,
never on a SPoT result:

1. headroom      base `arith` accuracy at the sampling temperature in [40 %, 70 %]
                 (from the pre-training manifest's held-out scores);
2. off-policy    the student's NLL per token on the Oracle's direct solutions at least
                 2x its NLL on the rectified y+ (stage 03's `proximity_report.json`);
3. forgetting    SFT on the direct solutions (method `sft`), at the learning rate of the
                 grid where it gains most in-domain, loses at least 5 points on some
                 retention family, beyond 2 standard errors, over >= 3 seeds (the sweep's
                 `points.jsonl`, on the val split).

    python -m spotlib.analysis.calibrate --profile tiny        (make calibrate)

runs what is missing (pre-training, stages 01-03, the sweep for `sft`; each reuses its
cache) and writes outputs/<profile>/calibration/{calibration.json, calibration.md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from spotlib.analysis.frontier import mean_se
from spotlib.io import write_json_atomic

HEADROOM = (40.0, 70.0)
OFF_POLICY_RATIO = 2.0
FORGETTING_POINTS = 5.0
FORGETTING_SIGMAS = 2.0
MIN_SEEDS = 3
RETENTION_FAMILIES = ("facts", "format")


def headroom(base_scores: dict, family: str = "arith") -> dict:
    """Target 1 from the base model's held-out scores (fractions, as the manifest stores them)."""
    score = 100 * float(base_scores[family])
    return {"family": family, "score": score, "low": HEADROOM[0], "high": HEADROOM[1],
            "met": HEADROOM[0] <= score <= HEADROOM[1]}


def off_policy(nll: dict) -> dict:
    """Target 2 from stage 03's NLL report (nats per token on y-, y+ and the direct solutions)."""
    direct, y_plus = nll["direct"]["nll_per_token"], nll["y_plus"]["nll_per_token"]
    ratio = direct / y_plus if y_plus else float("inf")
    return {"nll_direct": direct, "nll_y_plus": y_plus, "nll_y_minus": nll["y_minus"]["nll_per_token"],
            "ratio": ratio, "target": OFF_POLICY_RATIO, "met": ratio >= OFF_POLICY_RATIO}


def forgetting(points: list[dict], bases: dict[int, dict], run: str = "sft",
               families=RETENTION_FAMILIES) -> dict:
    """Target 3 from the sweep's points (per seed, scores in %) and the base scores per seed.

    Per LR: in-domain gain and each retention family's loss (base − model), mean ± SE over
    seeds. The LR judged is the one with the largest mean in-domain gain."""
    by_lr: dict[float, list[dict]] = {}
    for p in points:
        if p["run"] == run:
            by_lr.setdefault(float(p["lr"]), []).append(p)
    if not by_lr:
        raise ValueError(f"no sweep points for run {run!r}")
    rows = []
    for lr, group in sorted(by_lr.items()):
        row = {"lr": lr, "seeds": sorted(p["seed"] for p in group)}
        row["in_domain_gain"], row["in_domain_gain_se"] = mean_se(
            [p["arith"] - bases[p["seed"]]["arith"] for p in group])
        for fam in families:
            row[f"{fam}_loss"], row[f"{fam}_loss_se"] = mean_se(
                [bases[p["seed"]][fam] - p[fam] for p in group])
        rows.append(row)
    best = max(rows, key=lambda r: (r["in_domain_gain"], -r["lr"]))
    losses = {fam: (best[f"{fam}_loss"], best[f"{fam}_loss_se"]) for fam in families}
    worst = max(losses, key=lambda fam: losses[fam][0])
    loss, se = losses[worst]
    met = (len(best["seeds"]) >= MIN_SEEDS and loss >= FORGETTING_POINTS
           and se == se and loss > FORGETTING_SIGMAS * se)
    return {"run": run, "rows": rows, "lr": best["lr"], "family": worst, "loss": loss, "loss_se": se,
            "in_domain_gain": best["in_domain_gain"], "n_seeds": len(best["seeds"]),
            "target": FORGETTING_POINTS, "met": met}


def markdown(result: dict) -> str:
    h, o, f = result["headroom"], result["off_policy"], result["forgetting"]
    mark = {True: "met", False: "**not met**"}
    lines = ["| target | measured | goal | |", "|---|---|---|---|",
             f"| headroom: base arith at T {result['temperature']:g} | {h['score']:.1f} % | "
             f"{h['low']:.0f}–{h['high']:.0f} % | {mark[h['met']]} |"]
    if o is None or f is None:   # stopped at the base gate: stages 01-03 and SFT never ran
        lines += [f"| off-policy: NLL direct / NLL y⁺ | not measured | ≥ {OFF_POLICY_RATIO:g}× | |",
                  f"| forgetting: SFT at its best in-domain LR | not measured | ≥ {FORGETTING_POINTS:g} and > 2 SE | |",
                  "", f"Stopped at stage 01's base gate: {result['stopped']}"]
        return "\n".join(lines) + "\n"
    lines += [
             f"| off-policy: NLL direct / NLL y⁺ | {o['nll_direct']:.3f} / {o['nll_y_plus']:.3f} = "
             f"{o['ratio']:.2f}× | ≥ {o['target']:g}× | {mark[o['met']]} |",
             f"| forgetting: SFT at lr {f['lr']:g} (its best in-domain gain, {f['in_domain_gain']:+.1f}), "
             f"worst retention family | {f['family']} loss {f['loss']:+.1f} ± {f['loss_se']:.1f} ({f['n_seeds']} seeds) | "
             f"≥ {f['target']:g} and > 2 SE | {mark[f['met']]} |", "",
             "SFT on the direct solutions per learning rate (val split, mean ± SE over seeds, points):", "",
             "| lr | in-domain gain | " + " | ".join(f"{fam} loss" for fam in RETENTION_FAMILIES) + " |",
             "|---|---|" + "---|" * len(RETENTION_FAMILIES)]
    for row in f["rows"]:
        lines.append(f"| {row['lr']:g} | {row['in_domain_gain']:+.1f} ± {row['in_domain_gain_se']:.1f} | "
                     + " | ".join(f"{row[f'{fam}_loss']:+.1f} ± {row[f'{fam}_loss_se']:.1f}"
                                  for fam in RETENTION_FAMILIES) + " |")
    return "\n".join(lines) + "\n"


def _run(args: list[str]) -> None:
    print("+ python " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True)


def calibrate(profile_arg: str, seeds: list[int] | None = None) -> dict:
    from spotlib.config import load_profile
    from spotlib.stages.sweep import point_dir
    from spotlib.launch.workers import run_in_workers
    from spotlib.world.pretrain import ensure_base_model

    profile = load_profile(profile_arg)
    base_path = Path(ensure_base_model(profile))
    temperature = profile.base_gate.temperature
    manifest = json.loads((base_path / "manifest.json").read_text())
    scores = manifest["heldout_scores"][f"T={float(temperature)}"]
    out = profile.out / "calibration"
    out.mkdir(parents=True, exist_ok=True)
    stopped = _gate_stop(profile, out)
    if stopped:   # no study is built on this model, so there is nothing more to measure
        result = {"profile": profile.name, "world_hash": manifest.get("world_hash"), "temperature": temperature,
                  "base_scores": scores, "headroom": headroom(scores), "off_policy": None, "forgetting": None,
                  "stopped": stopped, "met": False}
        write_json_atomic(out / "calibration.json", result)
        (out / "calibration.md").write_text(markdown(result))
        return result
    _run(["-m", "spotlib.reproduce", "--profile", profile_arg, "--stages", "01", "02", "03"])
    nll = json.loads((profile.out / "03_filter" / "proximity_report.json").read_text())["nll"]
    seeds = seeds or list(profile.train.sweep_seeds) or list(profile.seeds)
    sweep = profile.out / "sweep"
    # One seed per single-thread worker (the sweep shares work out by method, and here is one);
    # points only, so that a finished sweep's summary (all methods) stays as it is.
    sweep.mkdir(parents=True, exist_ok=True)
    run_in_workers([(f"calibrate-sft-seed{s}", ["spotlib.stages.sweep", "--profile", profile_arg, "--methods", "sft",
                                               "--seeds", str(s), "--points-only"]) for s in seeds],
                   sweep, max(1, min(len(seeds), profile.train.cpu_workers)))
    points = [json.loads((point_dir(sweep, "sft", lr, s) / "point.json").read_text())
              for lr in sorted(set(profile.train.lr_grid)) for s in seeds]
    bases = {s: _base_scores(sweep / "base" / f"seed{s}" / "results.jsonl", s, list(profile.eval.benchmarks))
             for s in seeds}
    result = {"profile": profile.name, "world_hash": manifest.get("world_hash"), "temperature": temperature,
              "base_scores": scores, "headroom": headroom(scores), "off_policy": off_policy(nll),
              "forgetting": forgetting(points, bases)}
    result["met"] = all(result[k]["met"] for k in ("headroom", "off_policy", "forgetting"))
    write_json_atomic(out / "calibration.json", result)
    (out / "calibration.md").write_text(markdown(result))
    return result


def _gate_stop(profile, scratch: Path) -> str | None:
    """Stage 01's base gate on this model: its message when it would stop the study, else None."""
    from spotlib.world.gate import BaseModelOutsideTargets, check_base_model
    if profile.base_gate.mode != "enforce":
        return None
    try:
        check_base_model(profile, scratch)
    except BaseModelOutsideTargets as stop:
        return str(stop)
    return None


def _base_scores(results_path: Path, seed: int, benchmarks: list[str]) -> dict:
    """The base model's row (per-family accuracy in %) under one seed's evaluation draws, scored
    by the same table code as the sweep's points (`tables.model_rows`)."""
    from spotlib.analysis import tables
    from spotlib.io import read_jsonl

    entry = {"model": f"base/seed{seed}", "run": "base", "seed": seed, "method": "base", "data": None,
             "delta_mode": None, "kl": 0.0}
    (row,) = tables.model_rows(list(read_jsonl(results_path)), benchmarks, [entry])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--seeds", nargs="+", type=int, help="overrides train.sweep_seeds")
    args = parser.parse_args(argv)
    if argv is None:   # the command line: its stages and sweep points compute on the profile's CPU kernels
        from spotlib import precision
        from spotlib.config import load_profile
        precision.run_on_kernels(load_profile(args.profile).world.cpu_kernels, "spotlib.analysis.calibrate", sys.argv[1:])
    result = calibrate(args.profile, args.seeds)
    print(markdown(result))
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
