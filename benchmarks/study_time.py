"""Where a study's time goes: run it (or named stages) cold and print a table per stage.

    PYTHONPATH=. python benchmarks/study_time.py --profile test            # a minute or two
    PYTHONPATH=. python benchmarks/study_time.py --profile tiny            # the real thing
    PYTHONPATH=. python benchmarks/study_time.py --profile tiny --stages 01 --keep
    PYTHONPATH=. python benchmarks/study_time.py --profile tiny --kernels avx2   # AVX2 code paths
    PYTHONPATH=. python benchmarks/study_time.py --profile tiny --seeds 0        # one seed

Runs `spotlib.reproduce` for the profile into a fresh folder (outputs/study_time/<profile>/,
emptied first unless --keep), then reads each stage's manifest: wall time, work done, its
throughput and the share of the total, plus the machine (CPU model, cores, native bf16) and
the precision and threads the profile set. Pre-training runs inside stage 01; it gets its own
row (from the base model's manifest) and 01's row is the rest (sampling and grading).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from spotlib import precision, reproduce
from spotlib.config import REPO_ROOT, load_profile, resolve_profile_path
from spotlib.world import shipped

# stage -> (count in its manifest, unit of work)
WORK = {"01_sample": ("samples", "samples"), "02_rectify": ("errors", "errors rectified"),
        "03_filter": ("verified", "pairs verified"), "04_train_spot": ("runs", "runs (method x seed)"),
        "05_eval_forgetting": ("records", "answers graded"), "06_rl_init": ("train_prompts", "prompts")}


def fresh_profile(name: str, out: Path, seeds: list[int] | None = None, kernels: str | None = None) -> Path:
    """A copy of the profile writing into `out` (so a cold run never touches outputs/<profile>),
    with its training seeds replaced by `seeds` and its CPU kernels by `kernels` when given."""
    raw = yaml.safe_load(resolve_profile_path(name).read_text()) or {}
    raw.update(output_dir=str(out), name=raw.get("name", Path(name).stem))
    if seeds:
        raw["seeds"] = list(seeds)
    if kernels:
        raw.setdefault("world", {})["cpu_kernels"] = kernels
    out.mkdir(parents=True, exist_ok=True)
    path = out / "profile.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def installed_from_shipped(out: Path, world_cfg) -> bool:
    """Whether the run's base model is the repository's shipped copy (its manifest, byte for byte):
    then the manifest's wall time is the pre-training that made the copy, not part of this run."""
    source, _ = shipped.shipped_for(world_cfg)
    model = out / "base_model" / "manifest.json"
    return source is not None and model.is_file() and model.read_bytes() == (source / "manifest.json").read_bytes()


def rows_for(out: Path, timings: dict[str, float], shipped_base: bool = False) -> list[tuple[str, float, float | None, str]]:
    """(row, seconds, work, unit) per stage, pre-training split out of 01 (none when the base model
    was the shipped copy: its row then says so, at 0 s, and 01 keeps the few seconds of the copy)."""
    rows = []
    base = read_json(out / "base_model" / "manifest.json").get("stats", {})
    for stage, seconds in timings.items():
        counts = read_json(out / stage / "manifest.json").get("counts", {})
        if stage == "01_sample" and shipped_base:
            rows.append(("base model: shipped copy", 0.0, None, "-"))
        elif stage == "01_sample" and base:
            pre = base.get("total_wall_s", 0.0) + base.get("eval_wall_s", 0.0)
            rows.append(("pre-training (in 01)", pre, base.get("tokens"), "tokens"))
            seconds = max(0.0, seconds - pre)
        key, unit = WORK.get(stage, (None, "?"))
        work = counts.get(key) if key else None
        if stage == "04_train_spot" and isinstance(work, int):
            work *= counts.get("seeds", 1)   # the manifest counts methods; each trains once per seed
        rows.append((stage, seconds, work if isinstance(work, (int, float)) else None, unit))
    return rows


def table(rows, profile, kernels: str | None = None) -> str:
    total = sum(r[1] for r in rows) or 1e-9
    m = precision.machine()
    rec = precision.record(profile)
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, native bf16 {'yes' if m['native_bf16'] else 'no'}, "
             f"kernels {kernels or m['kernels']}, {m['cuda_devices']} CUDA device(s)",
             f"profile {profile.name}: pre-training {rec['world_pretrain']['precision']} with "
             f"threads={rec['world_pretrain']['threads'] or 'default'}; training {rec['train']['precision']} "
             f"({rec['train']['workers']} CPU worker(s)); RL {rec['rl']['precision']}; weights {rec['weights_dtype']}; "
             f"world.cpu_kernels {rec['cpu_kernels']}",
             "",
             f"| {'stage':<22} | {'wall':>8} | {'work':>22} | {'throughput':>18} | {'share':>6} |",
             f"|{'-' * 24}|{'-' * 10}|{'-' * 24}|{'-' * 20}|{'-' * 8}|"]
    for name, seconds, work, unit in rows:
        work_s = f"{work:,.0f} {unit}" if work is not None else "-"
        rate = "-"
        if work is not None and seconds > 0:
            per_s = work / seconds
            rate = f"{per_s:,.1f}/s" if per_s >= 1 else f"{60 * per_s:,.2f}/min"
        lines.append(f"| {name:<22} | {seconds:>7.1f}s | {work_s:>22} | {rate:>18} | {100 * seconds / total:>5.1f}% |")
    lines.append(f"| {'total':<22} | {total:>7.1f}s | {'':>22} | {'':>18} | {100.0:>5.1f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", help="a name under params/ or a YAML path")
    parser.add_argument("--stages", nargs="*", help="subset, e.g. 01 02 (default: all)")
    parser.add_argument("--out", help="output folder (default outputs/study_time/<profile>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="train these seeds only (e.g. --seeds 0: one seed)")
    parser.add_argument("--keep", action="store_true", help="reuse what is there (not a cold run)")
    parser.add_argument("--kernels", choices=["native", "avx2", "avx512"],
                        help="set world.cpu_kernels: the whole study on these CPU kernels (e.g. avx2 on an "
                             "AVX-512 machine); a different world hash, so pre-training runs anew")
    args = parser.parse_args(argv)
    name = (Path(args.profile).stem + (f"-{args.kernels}" if args.kernels else "")
            + (f"-seeds{len(args.seeds)}" if args.seeds else ""))
    out = Path(args.out or REPO_ROOT / "outputs" / "study_time" / name).resolve()
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    profile_path = fresh_profile(args.profile, out, args.seeds, args.kernels)
    code = reproduce.main(["--profile", str(profile_path)] + (["--stages", *args.stages] if args.stages else []))
    if code != 0:
        print(f"error: the study stopped (exit code {code}); no table", file=sys.stderr)
        return code
    timings = read_json(out / "reproduce_timings.json")
    # The ISA the pre-training process really used (this process started on the CPU's own).
    kernels = read_json(out / "base_model" / "manifest.json").get("machine", {}).get("kernels")
    profile = load_profile(str(profile_path))
    print("\n" + table(rows_for(out, timings, installed_from_shipped(out, profile.world)), profile, kernels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
