"""Does packing change the study? The same run with the other layout of stage 04's micro-batches.

    PYTHONPATH=. python benchmarks/packing_study.py --profile tiny            # trains and compares
    PYTHONPATH=. python benchmarks/packing_study.py --profile tiny --compare-only

Takes the profile's finished run (outputs/<profile>/: stages 01-05 done) and trains stage 04 again
with `train.packing` flipped, evaluating with stage 05, in outputs/<profile>-packing-<on|off>/: the
base model and stages 01-03 are copied, so both runs train on the same pairs from the same weights.
Then prints, side by side:

- stage 04's token counts (tokens_real / tokens_computed over every run) and its training seconds
  (both runs on this machine, one after the other: a ratio, not a figure to quote alone);
- the main table (stage 05's `table.csv`): every run × score, padded against packed, the difference
  and whether it lies within `eval.tie_sigmas` combined standard errors of the two means.

Packing changes no equation, only float summation order (a sequence's positions sum in another
order), so the two runs' weights differ at rounding and sampling at T 0.7 can tell them apart: the
question is whether any difference exceeds the seeds' noise.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCORES = ("arith", "arith_ood", "facts", "format", "overall")
COPIED = ("base_model", "01_sample", "02_rectify", "03_filter")


def twin_profile(profile_path: Path, source: Path, out: Path) -> tuple[Path, bool]:
    """Write outputs/<profile>-packing-<other>/profile.yaml (train.packing flipped, writing into `out`)
    and copy the finished stages 01-03 and base model there; returns (its path, packing of the twin)."""
    raw = yaml.safe_load(profile_path.read_text()) or {}
    packing = not bool(raw.get("train", {}).get("packing", False))
    raw.setdefault("train", {})["packing"] = packing
    raw.update(output_dir=str(out), name=raw.get("name", profile_path.stem))
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if not (source / name).exists():
            raise FileNotFoundError(f"{source / name}: run the profile first (make reproduce PROFILE=...)")
        if not (out / name).exists():
            shutil.copytree(source / name, out / name)
    path = out / "profile.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, packing


def stage04_counts(out: Path) -> dict:
    """Summed over stage 04's runs (runs.jsonl): tokens_real, tokens_computed, train_seconds, runs."""
    total = {"tokens_real": 0, "tokens_computed": 0, "train_seconds": 0.0, "runs": 0}
    path = out / "04_train_spot" / "runs.jsonl"
    for line in path.read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            total["tokens_real"] += int(run.get("tokens_real", run.get("tokens", 0)))
            total["tokens_computed"] += int(run.get("tokens_computed", run.get("tokens", 0)))
            total["train_seconds"] += float(run.get("train_seconds", 0.0))
            total["runs"] += 1
    return total


def main_table(out: Path) -> dict[str, dict[str, float]]:
    with open(out / "05_eval_forgetting" / "table.csv", newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def compare_tables(padded: dict, packed: dict, sigmas: float) -> tuple[list[str], int, int]:
    """Markdown rows: run, score, padded, packed, difference, 2 combined SE; (rows, cells, beyond noise)."""
    rows, cells, beyond = [], 0, 0
    for run in padded:
        if run not in packed:
            continue
        for score in SCORES:
            a, b = padded[run], packed[run]
            mean_a, mean_b = float(a[score]), float(b[score])
            se = math.hypot(float(a[f"{score}_se"]), float(b[f"{score}_se"]))
            diff = mean_b - mean_a
            far = abs(diff) > sigmas * se + 1e-9
            cells += 1
            beyond += far
            rows.append(f"| {run} | {score} | {mean_a:.1f} | {mean_b:.1f} | {diff:+.1f} | {sigmas * se:.1f} | "
                        f"{'**beyond**' if far else 'within'} |")
    return rows, cells, beyond


def report(first: Path, twin: Path, twin_packing: bool, sigmas: float) -> str:
    padded_out, packed_out = (first, twin) if twin_packing else (twin, first)
    c_pad, c_pack = stage04_counts(padded_out), stage04_counts(packed_out)
    lines = ["| stage 04 | runs | tokens_real | tokens_computed | real / computed | train seconds |",
             "|---|---|---|---|---|---|"]
    for name, c in (("padded", c_pad), ("packed", c_pack)):
        lines.append(f"| {name} | {c['runs']} | {c['tokens_real']:,} | {c['tokens_computed']:,} | "
                     f"{c['tokens_real'] / max(1, c['tokens_computed']):.3f} | {c['train_seconds']:.1f} |")
    if c_pad["train_seconds"] > 0:
        lines.append(f"\npacked / padded training seconds: {c_pack['train_seconds'] / c_pad['train_seconds']:.2f}")
    rows, cells, beyond = compare_tables(main_table(padded_out), main_table(packed_out), sigmas)
    lines += ["", f"| run | score | padded | packed | packed − padded | {sigmas:g} SE | |", "|---|---|---|---|---|---|---|",
              *rows, "", f"{beyond} of {cells} cells differ by more than {sigmas:g} combined standard errors "
              f"(padded: {padded_out}, packed: {packed_out})"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from spotlib import reproduce
    from spotlib.config import REPO_ROOT, load_profile, resolve_profile_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--compare-only", action="store_true", help="both runs exist: compare them")
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    first = profile.out
    twin = REPO_ROOT / "outputs" / f"{profile.name}-packing-{'off' if profile.train.packing else 'on'}"
    if not args.compare_only:
        path, _ = twin_profile(resolve_profile_path(args.profile), first, twin)
        code = reproduce.main(["--profile", str(path), "--stages", "04", "05"])
        if code != 0:
            print(f"error: the twin run stopped (exit code {code})", file=sys.stderr)
            return code
    text = report(first, twin, not profile.train.packing, profile.eval.tie_sigmas)
    print(text)
    (twin / "packing_study.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
