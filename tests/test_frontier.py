"""The LR frontier's pure functions on synthetic sweep results."""
import math

import pytest

from spotlib.analysis import frontier

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
    # points on an edge of the grid carry ⇤ (lowest LR) or ⇥ (highest LR)
    assert "**1e-05 ★⇤**" in text and "| 3e-05 ◆ |" in text and "| spot | 0.0001 ★◆⇥ |" in text.replace("**", "")
    assert "| sft | 0.0001 ▲⇥ |" in text and "| sft | best | 0.0001⇥ | +9.0" in text


def test_frontier_lines_are_the_figure_data():
    rows = frontier.aggregate(frontier.with_changes(_sweep(), BASES))
    lines = frontier.frontier_lines(rows)
    assert list(lines) == ["sft", "spot"]
    assert lines["sft"]["lr"] == [1e-5, 3e-5, 1e-4]
    assert lines["sft"]["x"] == pytest.approx([0.0, 1.5, 6.0]) and lines["sft"]["y"] == pytest.approx([1.0, 4.0, 9.0])
    assert lines["spot"]["y_se"] == pytest.approx([2 / math.sqrt(3)] * 3)


def _rows(run, lrs_gains_losses, se=0.2):
    """Aggregated rows of one run: (lr, in-domain gain, retention loss), one SE for every mean."""
    return [{"run": run, "method": run, "lr": lr, "n_seeds": 3, "in_domain_gain": g, "in_domain_gain_se": se,
             "retention_loss": loss, "retention_loss_se": se, "ood_gain": 0.0, "ood_gain_se": se,
             "overall": 60.0 + g - loss, "overall_se": se} for lr, g, loss in lrs_gains_losses]


def test_half_decades_step_a_one_three_grid():
    assert [frontier.half_decade(1e-5, -1), frontier.half_decade(3.2e-6, -1)] == [3.2e-6, 1e-6]
    assert [frontier.half_decade(3e-4, 1), frontier.half_decade(9.5e-4, 1)] == [9.5e-4, 3e-3]


def test_ties_base_within_the_noise_or_the_floor():
    (row,) = _rows("a", [(1e-5, -1.3, 0.3)], se=0.6)
    assert not frontier.ties_base(row)                       # |−1.3| > 2 × 0.6
    assert frontier.ties_base(row, sigmas=2.5)               # |−1.3| ≤ 2.5 × 0.6
    (quiet,) = _rows("a", [(1e-6, 0.4, -0.2)], se=float("nan"))
    assert frontier.ties_base(quiet) and not frontier.ties_base(quiet, tie_points=0.3)


def test_a_point_on_the_low_edge_extends_that_methods_grid_below_until_it_ties_the_base():
    grid = [1e-5, 3e-5, 1e-4]
    # pair: loses more the higher the LR; its chosen, matched and best point is the floor, −1.3 ± 0.2
    pair = _rows("pair", [(1e-5, -1.3, 0.1), (3e-5, -8.0, 1.0), (1e-4, -30.0, 5.0)])
    sft = _rows("sft", [(1e-5, 1.0, 0.5), (3e-5, 4.0, 1.5), (1e-4, 2.0, 8.0)])   # interior: nothing to do
    rows = pair + sft
    chosen = {"pair": 1e-5, "sft": 3e-5}
    assert frontier.bracket_extensions(rows, chosen, grid, max_steps=3) == {"pair": [3.2e-6]}
    # one half-decade lower it still loses: one more
    rows2 = _rows("pair", [(3.2e-6, -0.9, 0.0)]) + rows
    assert frontier.bracket_extensions(rows2, {"pair": 3.2e-6, "sft": 3e-5}, grid, max_steps=3) == {"pair": [1e-6]}
    # ... but not past max_steps half-decades below the grid
    assert frontier.bracket_extensions(rows2, {"pair": 3.2e-6, "sft": 3e-5}, grid, max_steps=1) == {}
    # at 1e-6 it ties with the base (|gain| and |loss| within 2 SE): bracketed in effect, stop
    rows3 = _rows("pair", [(1e-6, -0.3, 0.1)]) + rows2
    assert frontier.bracket_extensions(rows3, {"pair": 1e-6, "sft": 3e-5}, grid, max_steps=3) == {}
    # the optimum found interior: 3.2e-6 beats both neighbours, nothing left on an edge for pair
    rows4 = _rows("pair", [(1e-6, -0.9, 0.1)]) + [dict(r, in_domain_gain=0.8) if r["lr"] == 3.2e-6 else r
                                                     for r in rows2]
    assert frontier.bracket_extensions(rows4, {"pair": 3.2e-6, "sft": 3e-5}, grid, max_steps=3) == {}
    assert [e for e in frontier.edge_points(rows4, {"pair": 3.2e-6, "sft": 3e-5}) if e["run"] == "pair"] == []


def test_the_same_rule_extends_above_for_a_matched_or_best_point_on_the_top_edge():
    grid = [1e-5, 3e-5, 1e-4]
    # chosen interior, but the best in-domain point is the top of the grid: extend above, not below
    sft = _rows("sft", [(1e-5, 1.0, 0.5), (3e-5, 3.0, 1.0), (1e-4, 6.0, 9.0)])
    assert frontier.bracket_extensions(sft, {"sft": 3e-5}, grid, max_steps=2) == {"sft": [3.2e-4]}
    edges = frontier.edge_points(sft, {"sft": 3e-5})
    assert edges == [{"run": "sft", "lr": 1e-4, "edge": "high", "at": ["best"], "ties_base": False}]


def test_the_report_names_every_point_still_on_an_edge():
    rows = _rows("pair", [(1e-5, -1.3, 0.1), (3e-5, -8.0, 1.0)]) + \
        _rows("flat", [(1e-5, 0.1, 0.0), (3e-5, -2.0, 3.0)]) + _rows("mid", [(1e-5, 0.0, 0.0), (3e-5, 2.0, 0.5),
                                                                            (1e-4, 1.0, 1.0)])
    text = frontier.frontier_markdown(rows, {"pair": 1e-5, "flat": 1e-5, "mid": 3e-5})
    assert "| pair | 1e-05 ★◆⇤ |" in text.replace("**", "") and "| pair | chosen | 1e-05⇤ |" in text
    assert "pair chosen/matched/best at 1e-05 (low edge, NOT bracketed" in text
    assert "flat chosen/matched/best at 1e-05 (low edge, ties with the base there)" in text
    assert "mid " not in text.split("Still on an edge")[1].split("\n")[0]
    interior = frontier.frontier_markdown(_rows("mid", [(1e-5, 0.0, 0.0), (3e-5, 2.0, 0.5), (1e-4, 1.0, 1.0)]),
                                          {"mid": 3e-5})
    assert "Every chosen, matched and best point is interior" in interior and "★⇤" not in interior


def test_main_table_rows_say_when_their_point_is_on_an_edge_and_claims_repeat_it():
    from spotlib.analysis.claims import _lr

    rows = _rows("pair", [(1e-5, -1.3, 0.1), (3e-5, -8.0, 1.0)]) + _rows("mid", [(1e-5, 0.0, 0.0), (3e-5, 2.0, 0.5),
                                                                                (1e-4, 1.0, 1.0)])
    table = {(t["run"], t["at"]): t for t in frontier.main_table(rows, {"pair": 1e-5, "mid": 3e-5})}
    assert table["pair", "chosen"]["edge"] == "low" and not table["pair", "chosen"]["edge_ties_base"]
    assert table["mid", "chosen"]["edge"] is None
    assert _lr(table["pair", "chosen"]) == " at lr 1e-05 (low edge of its grid, not bracketed)"
    assert _lr(table["mid", "chosen"]) == " at lr 3e-05"
