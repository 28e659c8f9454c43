"""The LR frontier's pure functions on synthetic sweep results."""
import math

import pytest

from spotlib import frontier

BASES = {0: {"in_domain": 50.0, "ood": 20.0, "general": 90.0},
         1: {"in_domain": 52.0, "ood": 22.0, "general": 88.0},
         2: {"in_domain": 51.0, "ood": 21.0, "general": 89.0}}


def _point(run, lr, seed, gain, ood_gain, loss):
    b = BASES[seed]
    return {"run": run, "method": run, "lr": lr, "seed": seed, "in_domain": b["in_domain"] + gain,
            "ood": b["ood"] + ood_gain, "general": b["general"] - loss, "overall": 60.0 + gain - loss}


def _sweep():
    """sft: gains grow with LR but so does forgetting; spot: smaller gains, little forgetting."""
    points = []
    for seed, noise in zip((0, 1, 2), (-1.0, 0.0, 1.0)):
        for lr, gain, loss in ((1e-5, 1.0, 0.0), (3e-5, 4.0, 1.5), (1e-4, 9.0, 6.0)):
            points.append(_point("sft", lr, seed, gain + noise, 0.0, loss + noise))
        for lr, gain, loss in ((1e-5, 0.5, 0.0), (3e-5, 2.0, 0.5), (1e-4, 3.0, 1.0)):
            points.append(_point("spot", lr, seed, gain + 2 * noise, 1.0, loss))
    return points


def test_changes_are_against_the_base_of_the_same_seed():
    rows = frontier.with_changes(_sweep(), BASES)
    first = next(r for r in rows if r["run"] == "sft" and r["lr"] == 1e-4 and r["seed"] == 1)
    assert (first["in_domain_gain"], first["ood_gain"], first["retention_loss"]) == pytest.approx((9.0, 0.0, 6.0))
    with pytest.raises(ValueError, match="seed 7: no base scores"):
        frontier.with_changes([dict(first, seed=7)], BASES)


def test_mean_and_standard_error_over_seeds():
    assert frontier.mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / math.sqrt(3)))
    mean, se = frontier.mean_se([4.0])
    assert mean == 4.0 and math.isnan(se)
    rows = frontier.aggregate(frontier.with_changes(_sweep(), BASES))
    assert [(r["run"], r["lr"], r["n_seeds"]) for r in rows] == [
        ("sft", 1e-5, 3), ("sft", 3e-5, 3), ("sft", 1e-4, 3), ("spot", 1e-5, 3), ("spot", 3e-5, 3), ("spot", 1e-4, 3)]
    sft_top = rows[2]
    assert sft_top["in_domain_gain"] == pytest.approx(9.0) and sft_top["retention_loss"] == pytest.approx(6.0)
    assert sft_top["in_domain_gain_se"] == pytest.approx(1 / math.sqrt(3))   # noise −1, 0, +1
    assert rows[5]["in_domain_gain_se"] == pytest.approx(2 / math.sqrt(3))
    assert rows[5]["retention_loss_se"] == pytest.approx(0.0) and rows[5]["ood_gain"] == pytest.approx(1.0)


def test_matched_point_is_the_best_gain_within_the_retention_budget():
    rows = frontier.aggregate(frontier.with_changes(_sweep(), BASES))
    assert frontier.matched_lrs(rows) == {"sft": 3e-5, "spot": 1e-4}
    assert frontier.matched_lrs(rows, budget=10.0) == {"sft": 1e-4, "spot": 1e-4}
    assert frontier.matched_lrs(rows, budget=-1.0) == {"sft": None, "spot": None}
    tie = [{"run": "a", "lr": lr, "in_domain_gain": 3.0, "retention_loss": loss}
           for lr, loss in ((1e-4, 1.0), (3e-5, 0.5), (1e-5, 0.5))]
    assert frontier.matched_point(tie)["lr"] == 1e-5  # equal gain: less forgetting, then the smaller LR


def test_main_table_has_the_chosen_matched_and_best_point_of_each_method():
    rows = frontier.aggregate(frontier.with_changes(_sweep(), BASES))
    table = frontier.main_table(rows, {"sft": 1e-5, "spot": 1e-4}, budget=2.0)
    by = {(t["run"], t["at"]): t for t in table}
    assert [(t["run"], t["at"]) for t in table] == [("sft", "chosen"), ("sft", "matched"), ("sft", "best"),
                                                    ("spot", "chosen"), ("spot", "matched"), ("spot", "best")]
    assert by["sft", "chosen"]["in_domain_gain"] == pytest.approx(1.0)
    assert by["sft", "matched"]["lr"] == 3e-5 and by["sft", "matched"]["in_domain_gain"] == pytest.approx(4.0)
    assert by["spot", "chosen"]["lr"] == by["spot", "matched"]["lr"] == 1e-4
    # the best point ignores forgetting: sft's is 1e-4 (+9, forgetting 6), outside the matched budget
    assert by["sft", "best"]["lr"] == 1e-4 and by["sft", "best"]["retention_loss"] == pytest.approx(6.0)
    none = frontier.main_table(rows, {"sft": 1e-5}, budget=-1.0)
    assert none[1]["lr"] is None and math.isnan(none[1]["in_domain_gain"])
    assert none[2]["at"] == "best" and none[2]["lr"] is not None     # the best point has no budget
    assert none[3]["at"] == "chosen" and none[3]["lr"] is None  # no chosen LR given for spot
    text = frontier.frontier_markdown(rows, {"sft": 1e-5, "spot": 1e-4})
    assert "| sft | matched | 3e-05 | +4.0 ± 0.6 |" in text
    assert "**1e-05 ★**" in text and "| 3e-05 ◆ |" in text and "| spot | 0.0001 ★◆ |" in text.replace("**", "")
    assert "| sft | 0.0001 ▲ |" in text and "| sft | best | 0.0001 | +9.0" in text


def test_frontier_lines_are_the_figure_data():
    rows = frontier.aggregate(frontier.with_changes(_sweep(), BASES))
    lines = frontier.frontier_lines(rows)
    assert list(lines) == ["sft", "spot"]
    assert lines["sft"]["lr"] == [1e-5, 3e-5, 1e-4]
    assert lines["sft"]["x"] == pytest.approx([0.0, 1.5, 6.0]) and lines["sft"]["y"] == pytest.approx([1.0, 4.0, 9.0])
    assert lines["spot"]["y_se"] == pytest.approx([2 / math.sqrt(3)] * 3)
