"""Stage 05's table maths (`spotlib.analysis.tables`) on hand-made records, with hand-derived numbers.

The tiny world's benchmarks: arith (in-domain), arith_ood (OOD), facts and format (general).
"""
import math

import pytest

from spotlib.analysis import tables

BENCHMARKS = ["arith", "arith_ood", "facts", "format"]


def entry(run: str, seed: int = 0, **extra) -> dict:
    return {"model": f"{run}/seed{seed}", "run": run, "seed": seed, "method": extra.get("method", run),
            "data": extra.get("data"), "delta_mode": extra.get("delta_mode"), "kl": extra.get("kl")}


def record(model: str, benchmark: str, item: str, scores: list[float]) -> dict:
    return {"model": model, "benchmark": benchmark, "id": item, "metrics": [{"score": s} for s in scores]}


def row(run, seed, score, n_items, general=None, **extra):
    """A model row with every column at `score` (general may differ)."""
    values = {c: score for c in ("arith", *tables.COLUMNS)}
    values["general"] = score if general is None else general
    return {**entry(run, seed, **extra), **values, "n_items": n_items}


def test_model_rows_average_over_k_then_group():
    m = "m/seed0"
    records = [
        # arith, k=2: sample 0 gets both items right (100), sample 1 one of two (50)
        record(m, "arith", "a1", [1, 0]), record(m, "arith", "a2", [1, 1]),
        record(m, "arith_ood", "o1", [1, 1]),
        record(m, "facts", "f1", [1]), record(m, "facts", "f2", [0]),
        record(m, "format", "t1", [0]),
        record("other/seed0", "arith", "a1", [0, 0]),   # another model's: not counted
    ]
    (r,) = tables.model_rows(records, BENCHMARKS, [entry("m", kl=0.25)])
    assert r["arith"] == 75.0 and r["arith_std_k"] == pytest.approx(math.sqrt(2 * 25 ** 2))
    assert r["arith_ood"] == 100.0 and r["arith_ood_std_k"] == 0.0
    assert (r["facts"], r["format"]) == (50.0, 0.0)
    assert (r["in_domain"], r["ood"], r["general"]) == (75.0, 100.0, 25.0)
    assert r["overall"] == pytest.approx((75 + 100 + 50 + 0) / 4)
    assert r["n_items"] == 6 and r["kl"] == 0.25


def test_ties_and_deltas_follow_the_noise():
    def seed_row(run, seed, score):
        return row(run, seed, score, n_items=200)

    rows = [seed_row("base", 0, 50), seed_row("base", 1, 52), seed_row("a", 0, 51), seed_row("a", 1, 53),
            seed_row("b", 0, 70), seed_row("b", 1, 71)]
    table = {t["run"]: t for t in tables.run_table(rows, ["arith"], tie_sigmas=2.0)}
    assert table["a"]["d_overall"] == pytest.approx(1.0) and table["a"]["tie_overall"]
    assert table["b"]["d_overall"] == pytest.approx(19.5) and not table["b"]["tie_overall"]


def test_one_seed_is_never_more_certain_than_its_items():
    """One seed: the standard error is the items' binomial one, 100·sqrt(p(1−p)/n)."""
    def table_for(n_items):
        rows = [row("base", 0, 50, n_items, general=60), row("m", 0, 58, n_items, general=55)]
        return {t["run"]: t for t in tables.run_table(rows, ["arith"], tie_sigmas=2.0)}

    few = table_for(100)   # se 5.0 and 4.94: noise 2·sqrt(25 + 24.36) = 14.05 > 8
    assert few["base"]["overall_se"] == pytest.approx(5.0)
    assert few["m"]["overall_se"] == pytest.approx(100 * math.sqrt(0.58 * 0.42 / 100))
    assert few["m"]["d_overall"] == pytest.approx(8.0) and few["m"]["tie_overall"]
    many = table_for(10_000)  # se 0.5 and 0.49: noise 1.41 < 8
    assert not many["m"]["tie_overall"]
    assert many["m"]["retention_loss"] == pytest.approx(5.0) and many["base"]["retention_loss"] == 0.0
    assert not many["base"]["tie_overall"]


def test_cells_and_markdown():
    rows = [row("base", 0, 50, 10_000), row("base", 1, 52, 10_000), row("m", 0, 60, 10_000), row("m", 1, 62, 10_000)]
    table = tables.run_table(rows, ["arith"], tie_sigmas=2.0)
    base, m = table
    assert tables.fmt(base, "overall") == "51.0 ± 1.4"
    assert tables.fmt(m, "overall") == "61.0 ± 1.4 [+10.0]"
    assert tables.fmt({"run": "x", "overall": float("nan")}, "overall") == "–"
    assert tables.markdown_table(table, ["overall"]).splitlines() == [
        "| run | overall |", "|---|---|", "| base | 51.0 ± 1.4 |", "| m | 61.0 ± 1.4 [+10.0] |"]


def test_data_by_objective_and_delta_modes():
    rows = [row("base", 0, 50, 10_000),
            row("spot_bco", 0, 60, 10_000, general=48, method="spot_bco", data="rectified", delta_mode="running_mean"),
            row("spot_bco:ema", 0, 56, 10_000, method="spot_bco", data="rectified", delta_mode="ema"),
            row("sft", 0, 40, 10_000, method="sft", data="direct")]
    table = tables.run_table(rows, ["arith"], tie_sigmas=2.0)
    # ":" runs are ablations, not cells of the cross; base has no data
    assert tables.cross_table(table).splitlines() == [
        "| objective \\ data | rectified | direct |", "|---|---|---|",
        "| spot_bco | 60.0 ± 0.0 (retention loss +2.0) | – |",
        "| sft | – | 40.0 ± 0.0 (retention loss +10.0) |"]
    delta = tables.delta_table(table).splitlines()
    assert [line.split(" | ")[0] for line in delta[2:]] == ["| running_mean", "| ema"]
    assert tables.delta_table(table[:2]) == "_only one δ mode in this run_"
    assert tables.cross_table(table[:1]) == "_no data × objective cross in this run_"


def test_reading_counts_sign_agreement_with_the_paper():
    """The paper's deltas from base are all positive for spot_bco and all negative for sft."""
    rows = [row("base", 0, 50, 10_000), row("spot_bco", 0, 60, 10_000), row("sft", 0, 55, 10_000)]
    text = tables.reading(tables.run_table(rows, ["arith"], tie_sigmas=2.0))
    assert "agree in 4, disagree in 4 and are within noise in 0" in text
    assert "SPoT-BCO beats SFT overall (paper 53.3 vs 41.8): here 60.0 vs 55.0 (+5.0" in text
    assert "— agrees." in text
    assert tables.reading(tables.run_table(rows[1:], ["arith"], 2.0)).startswith("No base model")


def test_run_tables_writes_every_section():
    records = [record(f"{run}/seed0", name, "i1", [score]) for run, score in (("base", 1), ("m", 0))
               for name in BENCHMARKS]
    rows, table, sections = tables.run_tables(records, BENCHMARKS, [entry("base"), entry("m")])
    assert [r["overall"] for r in rows] == [100.0, 0.0]
    assert table[1]["d_overall"] == -100.0 and table[1]["retention_loss"] == 100.0
    assert list(sections) == ["table", "cross", "delta_modes", "reading"]
    assert sections["table"].splitlines()[0] == "| run | " + " | ".join(BENCHMARKS + list(tables.COLUMNS)) + " |"
    assert tables.reading_md(sections).startswith("## Main table\n\n| run |")
    assert tables.table_md(sections).endswith(sections["table"] + "\n")


def test_table4_rows_and_markdown():
    rows = tables.table4({"base": {"arith": 0.5, "facts": 0.9, "format": 0.1}})
    assert rows == [{"model": "base", "arith": 50.0, "facts": 90.0, "format": 10.0,
                     "in_domain": 50.0, "ood": None, "general": 50.0, "avg": 50.0}]
    assert tables.table4_markdown(rows).splitlines() == [
        "| model | arith | facts | format | in_domain | ood | general | avg |", "|---|---|---|---|---|---|---|---|",
        "| base | 50.0 | 90.0 | 10.0 | 50.0 |  | 50.0 | 50.0 |"]
