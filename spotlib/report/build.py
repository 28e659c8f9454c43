"""The study's one document: outputs/<profile>/report.md and a self-contained report.html.

Stages in the notebooks' order, each with its reading, its tables and every figure its notebook
shows, drawn by the same `spotlib.report.plots` functions from the files the stage left (its
`manifest.json`, tables, metrics). Figures the stage saved itself are used as they are; the
others are drawn into `report_figures/`. Missing stages are listed as not run; nothing here
recomputes results. After the stages: the learning-rate sweep (its frontier, the chosen and
matched points, the mechanism table of `spotlib.analysis.mechanism`; or the command that makes it) and
the reading per claim of the paper (`spotlib.analysis.claims`), always present. report.html embeds the figures (base64) and renders the math as SVG with
matplotlib's mathtext, so it opens offline in any browser.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from spotlib.config import REPO_ROOT
from spotlib.stages import STAGES

TITLES = {stage.name: stage.title for stage in STAGES}
NOTEBOOKS = REPO_ROOT / "notebooks"
FIGURES_DIR = "report_figures"
_MAX_CSV_ROWS = 40


def _manifest(stage_dir: Path) -> dict:
    path = stage_dir / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"error": f"{path}: not valid JSON"}


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


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


def _table(frame, floatfmt=None, index=False, **tabulate_options) -> str:
    """A table of display strings (`spotlib.formatting.tidy`: counts as integers, three significant
    digits, scientific notation only below 1e-3). `floatfmt` is accepted and ignored: one rule for
    every table of the report."""
    from spotlib.formatting import tidy

    frame = tidy(frame)
    try:
        tabulate_options.pop("disable_numparse", None)
        return frame.to_markdown(index=index, disable_numparse=True, **tabulate_options)
    except ImportError:  # tabulate missing
        return "```\n" + frame.to_string(index=index) + "\n```"


def _csv_markdown(path: Path) -> str | None:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception:  # noqa: BLE001 - an unreadable table is linked, not fatal
        return None
    if len(frame) > _MAX_CSV_ROWS or len(frame.columns) > 14:
        return f"[{path.name}]({path.parent.name}/{path.name}) ({len(frame)} rows × {len(frame.columns)} columns)"
    return _table(frame)


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "–"


# ------------------------------------------------------------------ the reading and tables of each stage
def _read_01(d: Path, out: Path) -> list[str]:
    import pandas as pd

    summary = _manifest(d).get("summary") or {}
    lines = ["The student is sampled once per training problem and every answer is graded; the wrong "
             "answers go to the Oracle, the right ones are RFT's data. Accuracy by difficulty shows where "
             "the errors come from, and on the tiny world the position of the first wrong step shows how "
             "much correct prefix a minimal edit can keep.", ""]
    base = _json(out / "base_model" / "manifest.json") or {}
    scores = {k: v for k, v in (base.get("heldout_scores") or {}).items() if isinstance(v, dict)
              and all(isinstance(x, (int, float)) for x in v.values())}
    if scores and "nll_nats_per_token" in scores:
        scores.pop("nll_nats_per_token")
    if scores:
        lines += ["**The base model's held-out scores**", "", _table(pd.DataFrame(scores).rename_axis("family"),
                                                                   index=True), ""]
    if summary:
        lines += [f"**{summary.get('samples', '?')} samples: {summary.get('correct', '?')} correct, "
                  f"{summary.get('errors', '?')} wrong (accuracy {_pct(summary.get('accuracy'))}).**", ""]
        if summary.get("by_group"):
            lines += [_table(pd.DataFrame(summary["by_group"]).T.rename_axis("group"), index=True), ""]
    return lines


def _read_02(d: Path, out: Path) -> list[str]:
    s = _manifest(d).get("summary") or {}
    lines = ["The Oracle makes the smallest edit that turns each wrong answer right, in the student's own "
             "words; a reply without the markers is a recorded failure, never training data. It also writes "
             "direct solutions (no student answer shown) for the SFT baseline, kept only when they verify.", ""]
    if s:
        failures = ", ".join(f"{k} {v}" for k, v in (s.get("rectify_failures") or {}).items()) or "none"
        modes = ", ".join(f"{k} {v}" for k, v in (s.get("modes") or {}).items()) or "–"
        lines += ["| quantity | value |", "|---|---|",
                  f"| student errors sent | {s.get('errors', '–')} |",
                  f"| rectified (usable y⁺) | {s.get('rectified_ok', '–')} |",
                  f"| failures by reason | {failures} |",
                  f"| edits / rewrites | {modes} |",
                  f"| direct solutions: problems solved | {s.get('direct_solved', '–')} of {s.get('direct_problems', '–')} "
                  f"({s.get('direct_requests', '–')} requests) |",
                  f"| tokens in / out | {s.get('prompt_tokens', 0):,} / {s.get('completion_tokens', 0):,} |",
                  f"| estimated cost | {s.get('cost_usd', 0) or 0:.2f} USD |", ""]
    lines += _example_edit(d / "rectified.jsonl")
    return lines


def _example_edit(path: Path) -> list[str]:
    """One rectification side by side (a minimal edit where there is one), as the notebook shows it."""
    from spotlib.io import read_jsonl
    from spotlib.proximity import diff_html

    if not path.is_file():
        return []
    done = [r for r in read_jsonl(path) if r.get("ok") and r.get("chosen")]
    if not done:
        return []
    r = next((r for r in done if r.get("mode") == "edit"), done[0])
    # one line (a blank line would end the HTML block); `$` in student text is not math
    table = diff_html(r["rejected"], r["chosen"]).replace("$", "&#36;").replace("\n", "&#10;")
    return [f"**An edit, side by side** ({r.get('id')}, mode {r.get('mode', '?')}): struck-out words are what the "
            "Oracle removed from y⁻, green words what it wrote in y⁺.", "", table, ""]


def _read_03(d: Path, out: Path) -> list[str]:
    import pandas as pd

    report = _json(d / "proximity_report.json") or {}
    s = _manifest(d).get("summary") or {}
    lines = ["Every y⁺ is verified, then its closeness to y⁻ is measured by the change ratio "
             "$R = 1 - |\\mathrm{LCS}(y^-, y^+)| / |y^+|$ over the student's tokens; pairs with "
             f"$R \\le \\gamma$ are kept ($\\gamma = {s.get('gamma', '?')}$). A proximal y⁺ should be nearly as "
             "likely to the student as its own y⁻ and far likelier than a direct solution. Every method then "
             "gets the same number of examples.", ""]
    if report.get("change_ratio"):
        lines += ["**Closeness of the pairs**", "",
                  _table(pd.DataFrame({"R": report["change_ratio"], "R (chars)": report.get("change_ratio_chars", {}),
                                       "edit distance": report.get("edit_distance_tokens", {})}).T, index=True), ""]
    lines += oracle_rates_lines(report)
    nll = {k: v for k, v in (report.get("nll") or {}).items() if k != "per_item"}
    if nll:
        lines += ["**Student NLL per token**", "", _table(pd.DataFrame(nll).T, index=True), ""]
    if report.get("counts"):
        c = report["counts"]
        lines += [f"**{c['per_method']} examples per method** (available: "
                  + ", ".join(f"{k} {v}" for k, v in c["available"].items()) + ").", ""]
    return lines


def oracle_rates_lines(report: dict) -> list[str]:
    """Stage 03's reading of the Oracle: success, error introduction, and the change-ratio retention
    points beside the paper's (Appendix G: 1,998 and 3,646 of 6,171 rectified errors)."""
    from spotlib.oracle.retention import PAPER_RETENTION

    oracle, intro = report.get("oracle") or {}, report.get("error_introduction") or {}
    verified, kept = oracle.get("verified"), report.get("kept_by_gamma") or {}
    if not oracle.get("errors"):
        return []
    pct = lambda x: "–" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    within = {g: (kept.get(f"{float(g):.2f}") / verified if verified and f"{float(g):.2f}" in kept else None)
              for g in PAPER_RETENTION}
    return [f"**The Oracle**: success rate {pct(oracle.get('success_rate'))} (verified y⁺ of "
            f"{oracle['errors']} errors); error introduction {pct(intro.get('pairs_with_a_wrong_step'))} of the "
            "verified y⁺ still hold a wrong step (right answer, wrong working); of the verified pairs "
            + ", ".join(f"{pct(within[g])} at R ≤ {g} (paper {pct(PAPER_RETENTION[g])})" for g in PAPER_RETENTION)
            + ".", ""]


def _read_04(d: Path, out: Path) -> list[str]:
    import pandas as pd

    from spotlib.io import read_jsonl

    lines = ["One trainer trains every method with the same examples, steps and batch; only the objective "
             "and its data differ. The reward-based objectives weight each example's gradient by "
             "$\\beta\\sigma(-r^+)$ (or its pair and δ-centred forms), a weight that falls as the model moves "
             "away from the start model: the elastic tether. The curves show the rewards, δ (SPoT-BCO only), "
             "the tether weights, the held-out KL to the start model and where in y⁻ each objective pushes.", ""]
    runs_path = d / "runs.jsonl"
    if runs_path.is_file():
        runs = pd.DataFrame(read_jsonl(runs_path))
        if len(runs) and {"run", "train_seconds", "lr", "steps"} <= set(runs.columns):
            table = runs.groupby("run").agg(seconds=("train_seconds", "mean"), lr=("lr", "first"),
                                            steps=("steps", "first"), seeds=("seed", "nunique"))
            table["seconds"] = table["seconds"].map(lambda x: f"{x:.1f}")
            table["lr"] = table["lr"].map(lambda x: f"{x:.1e}")
            lines += ["**Runs** (training seconds: mean over seeds)", "",
                      _table(table, index=True), ""]
        from spotlib.report.plots import load_training_metrics

        _, probes = load_training_metrics(d)
        if len(probes):
            final = probes.sort_values("step").groupby("run").tail(1).set_index("run")
            lines += end_of_training_tables(final)
    return lines


END_OF_TRAINING = (  # one narrow table per kind of probe, not one table too wide to read
    ("held-out KL to π_ref, nats per token", ("kl/",)),
    ("rewards on the fixed pairs, β·nats per sequence", ("fixed/",)),
    ("log π_θ − log π_ref on y⁻ around the first edit, nats per token", ("edit/before", "edit/at", "edit/after")),
    ("the same on y⁺", ("edit/chosen_",)),
    ("probability of the first edited token (y⁺: correct, y⁻: wrong), now and under π_ref", ("edit/p_",)),
)


def end_of_training_frames(final) -> list[tuple[str, object]]:
    """Stage 04's last probe per run (mean over seeds), split by kind of probe: (title, DataFrame)."""
    out = []
    for title, prefixes in END_OF_TRAINING:
        cols = [c for c in final.columns if c.startswith(prefixes)]
        if cols:
            out.append((title, final[cols]))
    return out


def end_of_training_tables(final) -> list[str]:
    lines = []
    for title, frame in end_of_training_frames(final):
        lines += [f"**End of training: {title}** (mean over seeds)", "", _table(frame, index=True), ""]
    return lines


def _read_05(d: Path, out: Path) -> list[str]:
    lines = ["Every checkpoint and the base model answer every benchmark item with the same sampling "
             "settings; cells are mean ± std across seeds, with the change against the base model and *tie* "
             "when within noise. The bars put in-domain gains next to general-skill losses; the scatter sets "
             "the held-out KL of stage 04 against the knowledge lost.", ""]
    reading = d / "reading.md"
    if reading.is_file():
        text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", reading.read_text(), flags=re.M)
        lines += [text.strip(), ""]
    return lines


def _read_06(d: Path, out: Path) -> list[str]:
    import pandas as pd

    summary = _json(d / "summary.json") or {}
    lines = ["GRPO runs from the base model and from the SPoT checkpoint with equal budgets (same prompts, "
             "steps, rollouts, learning rate and KL coefficient); only the start, and with it the KL "
             "reference, differs. The claim to check: SPoT + GRPO reaches a higher held-out accuracy and "
             "keeps more on the OOD and general columns, by more than the noise.", ""]
    if summary.get("runs"):
        runs = pd.DataFrame(summary["runs"]).T.drop(columns="final", errors="ignore")
        lines += ["**The two runs**", "", _table(runs, index=True), ""]
    table4 = d / "table4.md"
    if table4.is_file():
        lines += ["**Table 4**", "", table4.read_text().strip(), ""]
    elif (d / "table4.csv").is_file():
        lines += ["**Table 4**", "", _csv_markdown(d / "table4.csv") or "", ""]
    return lines


# ------------------------------------------------------------------ the sweep, and the reading per claim
SWEEP_DIR = "sweep"


def _final_diagnostic(point: Path) -> dict | None:
    """The last edit-diagnostic record of a sweep point (metrics.jsonl, else summary.json's final probe)."""
    from spotlib.io import read_jsonl

    metrics = point / "metrics.jsonl"
    probes = [r for r in read_jsonl(metrics) if r.get("kind") == "probe"] if metrics.is_file() else []
    if probes:
        return max(probes, key=lambda r: r.get("step", 0))
    return ((_json(point / "summary.json") or {}).get("final_probe")) or None


def sweep_diagnostics(sweep: Path, points: list[dict]) -> list[dict]:
    """Each point's final edit diagnostic, keyed by run, lr and seed (points without one are left out)."""
    from spotlib.analysis.mechanism import family_of
    from spotlib.stages.sweep import point_dir
    from spotlib.train.runspec import parse_run

    out = []
    for p in (p for p in points if family_of(p["run"]) is not None):  # pair objectives only
        record = _final_diagnostic(point_dir(sweep, parse_run(p["run"]).dirname, float(p["lr"]), p["seed"]))
        if record:
            out.append(dict(record, run=p["run"], lr=float(p["lr"]), seed=p["seed"]))
    return out


def sweep_section(out: Path, profile_name: str) -> list[str]:
    """The frontier figure, every run × LR with its chosen and matched points, and the mechanism table."""
    from spotlib.analysis import frontier, mechanism

    sweep = out / SWEEP_DIR
    manifest = _manifest(sweep)
    lines = ["## Learning-rate frontier (sweep)", ""]
    if not manifest.get("main_table"):
        return lines + [f"_The sweep has not run: the frontier, the matched points and the mechanism table are "
                        f"made by `make sweep PROFILE={profile_name}` (outputs/{profile_name}/{SWEEP_DIR}/)._", ""]
    main_table = manifest["main_table"]
    chosen = {r["run"]: r["lr"] for r in main_table if r["at"] == "chosen" and r["lr"] is not None}
    seeds = sorted(int(k) for k in (manifest.get("bases") or {})) or "?"
    lines += [f"Every method trained at every LR of the grid and evaluated on the val split, seeds {seeds}; "
              "changes against the base model evaluated with the same seed, mean ± SE over seeds. "
              f"Selection rule: {manifest.get('rule', '?')}. A method is read at its chosen LR, at its "
              f"matched point (its best in-domain gain within {frontier.MATCHED_RETENTION_LOSS:g} points of "
              "retention loss) and at its best point (its best in-domain gain at any LR, whatever it forgets), "
              "so that none is judged only where it trains least.", ""]
    if (sweep / "frontier.png").is_file():
        lines += [f"![frontier]({SWEEP_DIR}/frontier.png)", "",
                  "*In-domain gain against retention loss, one line per run over its LRs.* "
                  "Drawn by `spotlib.report.frontier_figure.plot_frontier`.", ""]
    lines += [frontier.frontier_markdown(manifest.get("frontier") or [], chosen).strip(), ""]
    points = manifest.get("points") or []
    rows = mechanism.mechanism_table(points, sweep_diagnostics(sweep, points))
    lines += ["### Mechanism: the pair objectives taken apart", "",
              "Per pair-objective run and its variants (`+chosen_only`: the gradient through y⁺ only; "
              "`+rejected_only`: through y⁻ only; `+edit_only`: y⁻ scored on its edited tokens only), "
              "the in-domain gain and where probability moved by the end of training.", "",
              mechanism.mechanism_markdown(rows).strip(), ""]
    lines += ["### Collateral: the pushed tokens where they are right", "",
              "Does the push at the edit reach correct computation elsewhere? Per pair-objective run and LR, the "
              "change in log-probability of the tokens pushed down at the edit, where those tokens are right.", "",
              mechanism.collateral_markdown(rows).strip(), ""]
    return lines


def _csv_rows(path: Path) -> list[dict] | None:
    import csv

    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def stage_command(profile_name: str, stage: str) -> str:
    """The command that fills a stage's section of this report."""
    return f"make reproduce PROFILE={profile_name} STAGES={stage[:2]}"


def missing_sources(out: Path, profile_name: str) -> list[str]:
    """What the claims read that this study has not made yet, each with the command that makes it."""
    missing = []
    if not (out / "05_eval_forgetting" / "table.csv").is_file():
        missing.append(f"stage 05's table (`{stage_command(profile_name, '05_eval_forgetting')}`)")
    if not _manifest(out / SWEEP_DIR).get("main_table"):
        missing.append(f"the learning-rate sweep (`make sweep PROFILE={profile_name}`)")
    if not (out / "06_rl_init" / "summary.json").is_file():
        missing.append(f"stage 06 (`{stage_command(profile_name, '06_rl_init')}`)")
    return missing


def claims_section(out: Path, profile_name: str = "auto") -> list[str]:
    """The reading per claim of the paper from 05's table, the sweep and 06 (always present)."""
    from spotlib.analysis import claims

    sweep = _manifest(out / SWEEP_DIR)
    rl = _json(out / "06_rl_init" / "summary.json")
    if rl is not None:
        rl = dict(rl, heldout=(_manifest(out / "06_rl_init").get("counts") or {}).get("heldout"))
    found = claims.read_claims(eval_rows=_csv_rows(out / "05_eval_forgetting" / "table.csv"),
                               main_table=sweep.get("main_table"), frontier_points=sweep.get("points"), rl=rl,
                               sweep_items=(sweep.get("counts") or {}).get("items"))
    missing = missing_sources(out, profile_name)
    gaps = ([f"_Not made yet: {'; '.join(missing)}. A claim read from them says *cannot decide* until the "
             "command has run; the report is then written again._", ""] if missing else [])
    return ["## What the study says about each claim", "",
            "Each claim of the paper read from this study's numbers: stage 05 (test split, at the LRs stage 04 "
            "trained at), the sweep at each method's chosen LR, its matched point and its best point (val split), and "
            "stage 06.", ""] + gaps + [claims.claims_markdown(found).strip(), ""]


READERS = {"01_sample": _read_01, "02_rectify": _read_02, "03_filter": _read_03, "04_train_spot": _read_04,
           "05_eval_forgetting": _read_05, "06_rl_init": _read_06}


def _figure(spec, stage_dir: Path, out: Path) -> list[str]:
    """One figure: the stage's own PNG, or drawn into report_figures/."""
    from spotlib.report import plots

    if spec.file and (stage_dir / spec.file).is_file():
        rel = f"{stage_dir.name}/{spec.file}"
    else:
        try:
            fig = spec.draw(stage_dir)
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn is named, not fatal
            return [f"_figure {spec.name} not drawn: {type(exc).__name__}: {exc}_", ""]
        if fig is None:
            return []
        rel = f"{FIGURES_DIR}/{stage_dir.name}__{spec.name}.png"
        plots.save(fig, out / rel)
    return [f"![{spec.name}]({rel})", "", f"*{spec.caption}* Drawn by `spotlib.report.plots.{spec.name}`.", ""]


def _printed(stage_dir: Path) -> dict[str, str]:
    """What the stage's notebook prints in its lessons, computed again from the stage's files."""
    from spotlib.analysis import tether

    if stage_dir.name != tether.STAGE:
        return {}
    lesson = tether.lesson_from_stage(stage_dir)
    return tether.lesson_texts(lesson) if lesson else {}


def figure_lines(stage_dir: Path, out: Path) -> list[str]:
    """Every figure the stage's notebook shows, in the notebook's order, with the notebook's lesson cells
    (`spotlib.report.lessons`) where the notebook has them; figures the notebook does not call come last."""
    from spotlib.report import figures, lessons as report_lessons, plots

    specs = {spec.name: spec for spec in figures.FIGURES.get(stage_dir.name, [])}
    notebook = next((NOTEBOOKS / s.notebook for s in STAGES if s.name == stage_dir.name), None)
    items = report_lessons.read(notebook, set(specs)) if notebook and notebook.is_file() else []
    printed = _printed(stage_dir) if any(i.kind == "printed" for i in items) else {}
    lines, drawn = [], set()
    for item in items:
        if item.kind == "lesson":
            lines += [report_lessons.demote_headings(item.value), ""]
        elif item.kind == "printed" and printed.get(item.value):
            lines += ["```text", printed[item.value], "```", ""]
        elif item.kind == "figure" and item.value not in drawn:
            drawn.add(item.value)
            lines += _figure(specs[item.value], stage_dir, out)
    for name, spec in specs.items():
        if name not in drawn:
            lines += _figure(spec, stage_dir, out)
    return lines


def stage_section(stage_dir: Path, out: Path | None = None) -> list[str]:
    out = out or stage_dir.parent
    manifest = _manifest(stage_dir)
    title = TITLES.get(stage_dir.name)
    lines = [f"## {stage_dir.name}" + (f" — {title}" if title else ""), ""]
    if manifest:
        state = "complete" if manifest.get("complete") else "INCOMPLETE"
        lines.append(f"Wall time {_wall(manifest.get('wall_time_s'))} ({state}, written {manifest.get('written_at', '?')}).")
        counts = manifest.get("counts") or {}
        if counts:
            lines.append("Counts: " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in counts.items()) + ".")
        lines.append("")
    else:
        lines += ["_no manifest.json: the stage did not finish or wrote none_", ""]
    reader = READERS.get(stage_dir.name)
    if reader:
        lines += reader(stage_dir, out)
    else:  # a stage this module does not know: its markdown fragments, else its small tables
        md_files = sorted(stage_dir.glob("*.md"))
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
    lines += figure_lines(stage_dir, out)
    return lines


def build_report(profile) -> Path:
    """Write report.md (and report.html) in the profile's output folder from whatever stages have run."""
    from spotlib.config import load_profile

    if isinstance(profile, (str, Path)):
        profile = load_profile(profile)
    out = profile.out
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# spotlib report — profile `{profile.name}`", "",
             "Regenerate with `make reproduce` (or run the notebooks in order). Every figure below is drawn by "
             "the `spotlib.report.plots` function named under it, the one its notebook calls.", ""]
    present = {p.name: p for p in out.iterdir() if p.is_dir() and re.match(r"^\d\d_", p.name)}
    timing = ["| stage | wall time | work recorded | state |", "|---|---|---|---|"]
    base = _manifest(out / "base_model")
    if base.get("stats"):  # the tiny world's pre-training, cached and reused by later runs
        timing.append(f"| base model (pre-training) | {_wall(base['stats'].get('total_wall_s'))} | "
                      f"{_wall(base['stats'].get('train_wall_s'))} | cached |")
    for name in sorted({s.name for s in STAGES} | set(present)):
        manifest = _manifest(present[name]) if name in present else {}
        state = (f"not run: `{stage_command(profile.name, name)}`" if name not in present
                 else "complete" if manifest.get("complete") else "incomplete")
        work = _wall(recorded_seconds(manifest.get("timings")))
        timing.append(f"| {name} | {_wall(manifest.get('wall_time_s'))} | {work} | {state} |")
    lines += timing + [""]
    for name in sorted(present):
        lines += stage_section(present[name], out)
    lines += sweep_section(out, profile.name)
    lines += claims_section(out, profile.name)
    text = "\n".join(lines).rstrip() + "\n"
    path = out / "report.md"
    path.write_text(text)
    from spotlib.report.html import markdown_to_html

    (out / "report.html").write_text(markdown_to_html(text, base_dir=out, title=f"spotlib report — {profile.name}"))
    return path
