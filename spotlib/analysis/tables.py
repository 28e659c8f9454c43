"""Stage 05's tables, as pure functions of the per-item records: no model, no file, no stage.

For each model and benchmark, each item gets k samples (avg@k): the score of sample index j
is the benchmark's number over all items, and a benchmark reports mean ± std over the k
indices. Groups follow docs/method.md §5: in-domain = mean of the in-domain benchmarks, OOD =
mean of the OOD ones, general = mean of the rest, overall = unweighted mean of all
benchmarks. A method trained with several seeds reports mean ± std across seeds, and a
difference is called a tie when

    |Δ| < tie_sigmas · sqrt(s_a²/n_a + s_b²/n_b)

(standard errors across seeds; with one seed, the binomial standard error of the items).
Retention loss = general(base) − general(model): positive means forgetting.

Stage 05 (`spotlib.stages.evaluate`) writes these tables; the learning-rate sweep scores
its points with `model_rows`, and stage 06 shapes its Table 4 with `table4`.
"""
from __future__ import annotations

import math

from spotlib import evals

COLUMNS = ("in_domain", "ood", "general", "overall")
# docs/method.md §5 (Qwen3-8B): ID avg, OOD avg, IFEval (general), overall.
PAPER_TABLE = {
    "base": (46.8, 29.9, 83.0, 47.1), "sft": (41.0, 25.5, 79.6, 41.8), "rft": (47.3, 26.1, 81.5, 46.4),
    "sft_plus": (50.5, 30.7, 80.0, 49.4), "spot_bco": (52.1, 41.4, 84.8, 53.3),
    "spot_bce": (51.5, 40.3, 85.8, 52.8), "dpo": (46.9, 40.4, 84.7, 49.6), "reward_sft": (45.3, 42.2, 83.7, 48.9),
}


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


def run_tables(records: list[dict], benchmarks: list[str], entries: list[dict],
               tie_sigmas: float = 2.0) -> tuple[list[dict], list[dict], dict[str, str]]:
    """(model rows, run table, markdown sections): the main table, data × objective, δ modes, reading."""
    rows = model_rows(records, benchmarks, entries)
    table = run_table(rows, benchmarks, tie_sigmas)
    columns = [b for b in benchmarks if any(b in r for r in rows)] + list(COLUMNS)
    sections = {"table": markdown_table(table, columns), "cross": cross_table(table),
                "delta_modes": delta_table(table), "reading": reading(table)}
    return rows, table, sections


def table_md(sections: dict[str, str]) -> str:
    """table.md: the main table with how to read its cells."""
    return "Cells: mean ± std across seeds [Δ against base; *tie* when within noise].\n\n" + sections["table"] + "\n"


def reading_md(sections: dict[str, str]) -> str:
    """reading.md: every table and the reading, under their headings."""
    return ("## Main table\n\n" + sections["table"] + "\n\n## Data × objective\n\n" + sections["cross"]
            + "\n\n## δ modes\n\n" + sections["delta_modes"] + "\n\n## Reading\n\n" + sections["reading"] + "\n")


# ---------------------------------------------------------------- stage 06
def table4(scores: dict[str, dict[str, float]]) -> list[dict]:
    """Rows shaped like the paper's Table 4: per-benchmark scores (%), group means and the average."""
    rows = []
    for label, per_bench in scores.items():
        row = {"model": label, **{b: round(100 * v, 1) for b, v in per_bench.items()}}
        for group in evals.GROUPS:
            vals = [v for b, v in per_bench.items() if evals.get(b).group == group]
            row[group] = round(100 * sum(vals) / len(vals), 1) if vals else None
        row["avg"] = round(100 * sum(per_bench.values()) / max(len(per_bench), 1), 1)
        rows.append(row)
    return rows


def table4_markdown(rows: list[dict]) -> str:
    """Table 4 as markdown, values as they are (empty where a group has no benchmark)."""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
