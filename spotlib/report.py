"""outputs/<profile>/report.md: the tables and figures of every stage that has run.

Each stage folder `NN_name/` is read through its `manifest.json` (wall time, counts) and
the files it is known to leave: markdown fragments (`*.md`), small CSV tables and figures
(`*.png`). Missing stages are listed as not run; nothing here recomputes results.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

STAGES = ("01_sample", "02_rectify", "03_filter", "04_train_spot", "05_eval_forgetting", "06_rl_init")
_MAX_CSV_ROWS = 40


def _manifest(stage_dir: Path) -> dict:
    path = stage_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"error": f"{path}: not valid JSON"}


def _wall(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def recorded_seconds(timings) -> float | None:
    """Sum of the numeric leaves of a manifest's `timings` (nested per-run dicts included).

    A stage that found its work done by earlier workers (stage 04 run per seed in parallel)
    has a short wall time; the recorded work is what it cost in total."""
    if isinstance(timings, (int, float)) and not isinstance(timings, bool):
        return float(timings)
    if isinstance(timings, dict):
        parts = [recorded_seconds(v) for v in timings.values()]
        parts = [v for v in parts if v is not None]
        return sum(parts) if parts else None
    return None


def _csv_markdown(path: Path) -> str | None:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception:
        return None
    if len(frame) > _MAX_CSV_ROWS or len(frame.columns) > 14:
        return f"[{path.name}]({path.parent.name}/{path.name}) ({len(frame)} rows × {len(frame.columns)} columns)"
    return frame.to_markdown(index=False, floatfmt=".3g") if _has_tabulate() else frame.to_string(index=False)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


def stage_section(stage_dir: Path) -> list[str]:
    manifest = _manifest(stage_dir)
    lines = [f"## {stage_dir.name}", ""]
    if manifest:
        state = "complete" if manifest.get("complete") else "INCOMPLETE"
        lines.append(f"Wall time {_wall(manifest.get('wall_time_s'))} ({state}, written {manifest.get('written_at', '?')}).")
        counts = manifest.get("counts") or {}
        if counts:
            lines.append("Counts: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in counts.items()) + ".")
        lines.append("")
    else:
        lines += ["_no manifest.json: the stage did not finish or wrote none_", ""]
    md_files = sorted(p for p in stage_dir.glob("*.md"))
    if stage_dir.name == "05_eval_forgetting" and (stage_dir / "reading.md").is_file():
        md_files = [stage_dir / "reading.md"]  # it already holds table.md
    for md in md_files:
        text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", md.read_text(), flags=re.M)
        lines += [f"### {md.stem}", "", text.strip(), ""]
    if not md_files:
        for csv in sorted(stage_dir.glob("*.csv")):
            table = _csv_markdown(csv)
            if table:
                lines += [f"### {csv.stem}", "", table, ""]
    for png in sorted(stage_dir.glob("*.png")):
        lines += [f"![{png.stem}]({stage_dir.name}/{png.name})", ""]
    return lines


def build_report(profile) -> Path:
    """Write outputs/<profile>/report.md from whatever stages have run; returns its path."""
    from spotlib.config import load_profile

    if isinstance(profile, (str, Path)):
        profile = load_profile(profile)
    out = profile.out
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# spotlib report — profile `{profile.name}`", "",
             "Regenerate with `make reproduce` (or run the notebooks in order).", ""]
    present = {p.name: p for p in out.iterdir() if p.is_dir() and re.match(r"^\d\d_", p.name)}
    timing = ["| stage | wall time | work recorded | state |", "|---|---|---|---|"]
    base = _manifest(out / "base_model")
    if base.get("stats"):  # the tiny world's pre-training, cached and reused by later runs
        timing.append(f"| base model (pre-training) | {_wall(base['stats'].get('total_wall_s'))} | "
                      f"{_wall(base['stats'].get('train_wall_s'))} | cached |")
    for name in sorted(set(STAGES) | set(present)):
        manifest = _manifest(present[name]) if name in present else {}
        state = "not run" if name not in present else ("complete" if manifest.get("complete") else "incomplete")
        work = _wall(recorded_seconds(manifest.get("timings")))
        timing.append(f"| {name} | {_wall(manifest.get('wall_time_s'))} | {work} | {state} |")
    lines += timing + [""]
    for name in sorted(present):
        lines += stage_section(present[name])
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
