"""The mechanism table and its reading, on hand-made sweep points with hand-derived expectations."""
import math

import pytest

from spotlib.analysis.mechanism import family_of, mechanism_markdown, mechanism_reading, mechanism_table

SEEDS = (0, 1, 2)


def points(run, lr, gains):
    return [{"run": run, "lr": lr, "seed": s, "in_domain_gain": g} for s, g in zip(SEEDS, gains)]


def study(chosen_only=(0.0, 1.0, -1.0), with_variants=True):
    """spot_bco loses ~11 points at lr 1e-3 and nothing at 1e-4; sft is no pair objective."""
    rows = points("spot_bco", 1e-4, [0.0, 1.0, -1.0]) + points("spot_bco", 1e-3, [-10.0, -12.0, -11.0])
    rows += points("sft", 1e-3, [5.0, 5.0, 5.0])
    if with_variants:
        rows += (points("spot_bco+chosen_only", 1e-3, chosen_only)
                 + points("spot_bco+rejected_only", 1e-3, [-9.0, -11.0, -10.0])
                 + points("spot_bco+edit_only", 1e-3, [-1.0, 0.0, 1.0]))
    diags = [{"run": "spot_bco", "lr": 1e-3, "seed": s, "edit/before": b, "edit/at": a, "edit/after": -0.1,
              "edit/chosen_at": 0.05, "edit/p_correct": p, "edit/p_correct_ref": 0.31}
             for s, b, a, p in zip(SEEDS, (-0.01, -0.02, -0.03), (-0.5, -0.6, -0.7), (0.2, 0.3, 0.4))]
    return rows, diags


def test_family_groups_a_pair_objective_with_its_variants():
    assert family_of("spot_bco+edit_only") == ("spot_bco", "+edit_only")
    assert family_of("dpo+edit_only+rejected_only") == ("dpo", "+edit_only+rejected_only")
    assert family_of("spot_bco:ema") == ("spot_bco:ema", "")
    assert family_of("sft") is None and family_of("not a run!") is None


def test_table_rows_are_means_and_ses_over_seeds():
    rows = mechanism_table(*study())
    assert [(r["run"], r["lr"]) for r in rows] == [
        ("spot_bco", 1e-4), ("spot_bco", 1e-3), ("spot_bco+chosen_only", 1e-3),
        ("spot_bco+rejected_only", 1e-3), ("spot_bco+edit_only", 1e-3)]  # full first, sft left out
    full = rows[1]
    assert full["variant"] == "full" and full["n_seeds"] == 3
    assert full["in_domain_gain"] == pytest.approx(-11.0)
    assert full["in_domain_gain_se"] == pytest.approx(1 / math.sqrt(3))  # sample std 1 over 3 seeds
    assert full["neg_before"] == pytest.approx(-0.02) and full["neg_at"] == pytest.approx(-0.6)
    assert full["pos_at"] == pytest.approx(0.05)
    assert full["p_correct"] == pytest.approx(0.3) and full["p_correct_se"] == pytest.approx(0.1 / math.sqrt(3))
    assert math.isnan(rows[0]["neg_at"])  # no diagnostic recorded for that point


def test_reading_names_the_rejected_term_and_the_restriction_removing_it():
    lines = mechanism_reading(mechanism_table(*study()))
    at = next(line for line in lines if "at lr 0.001" in line)
    assert "in-domain -11.0 ± 0.6 (full), +0.0 ± 0.6 (+chosen_only), -10.0 ± 0.6 (+rejected_only)" in at
    assert "the rejected term causes it; restricting y⁻ to the edit removes it" in at
    assert "before/at/after the edit -0.020/-0.600/-0.100" in at and "p(correct token) 0.300 (start 0.310)" in at
    assert not any("at lr 0.0001" in line for line in lines)  # no loss there: nothing to take apart
    assert lines[-1].endswith("loses beyond 2 SE at lr 0.001 — the rejected term causes it; "
                              "restricting y⁻ to the edit removes it.")


def test_overlapping_variants_and_missing_ones_cannot_decide():
    # chosen-only −6 ± 3.5: not a loss beyond 2 SE, yet within 2 SE of the full objective's −11
    overlap = mechanism_reading(mechanism_table(*study(chosen_only=(-6.0, -12.0, 0.0))))
    assert "cannot decide which term (the SEs overlap)" in overlap[0]
    missing = mechanism_reading(mechanism_table(*study(with_variants=False)))
    assert "cannot decide which term (a one-sided variant was not swept); +edit_only not swept" in missing[0]
    assert "not swept (+chosen_only)" in missing[0]


def test_no_loss_and_one_seed_are_said_as_such():
    calm = mechanism_reading(mechanism_table(points("dpo", 1e-4, [0.0, 1.0, -1.0]), []))
    assert calm == ["- **dpo**: no in-domain loss beyond 2 SE at any LR swept: nothing to take apart "
                    "(gains 0.0001: +0.0 ± 0.6)."]
    single = mechanism_reading(mechanism_table([{"run": "dpo", "lr": 1e-3, "seed": 0, "in_domain_gain": -20.0}], []))
    assert "one seed gives no standard error; cannot decide" in single[0]


def test_markdown_has_the_table_and_says_when_no_pair_run_was_swept():
    text = mechanism_markdown(mechanism_table(*study()))
    assert "| spot_bco+edit_only | 0.001 | 3 | +0.0 ± 0.6 |" in text
    assert "| spot_bco | 0.001 | 3 | -11.0 ± 0.6 | -0.020 ± 0.006 | -0.600 ± 0.058 |" in text
    assert "(the start model's: 0.310)" in text and "**Reading**" in text
    assert "No pair-objective run in the sweep" in mechanism_markdown([])


def test_a_restriction_that_only_shrinks_the_loss_is_said_so():
    rows, diags = study()
    rows = [r for r in rows if r["run"] != "spot_bco+edit_only"]
    rows += points("spot_bco+edit_only", 1e-3, [-4.0, -5.0, -6.0])
    line = mechanism_reading(mechanism_table(rows, diags))[0]
    # −5 ± 0.6: a loss beyond 2 SE, yet 6 points above the full objective's −11 (2 SE of the difference: 1.6)
    assert "the rejected term causes it; restricting y⁻ to the edit makes it smaller but does not remove it" in line


def test_collateral_table_sets_the_pushed_tokens_change_beside_the_in_domain_loss():
    from spotlib.analysis.mechanism import collateral_markdown

    rows, diags = study(with_variants=False)
    for d, pushed in zip(diags, (-0.30, -0.40, -0.50)):        # lr 1e-3: pushed −0.4 ± 0.058, others −0.01
        d.update({"collateral/pushed": pushed, "collateral/other": -0.01, "collateral/p_pushed": 0.5,
                  "collateral/p_pushed_ref": 0.7})
    diags += [{"run": "spot_bco", "lr": 1e-4, "seed": s, "collateral/pushed": -0.02 + 0.01 * s,
               "collateral/other": -0.01} for s in SEEDS]
    table = mechanism_table(rows, diags)
    at = {r["lr"]: r for r in table}
    assert at[1e-3]["collateral"] == pytest.approx(-0.4) and at[1e-3]["collateral_se"] == pytest.approx(0.1 / math.sqrt(3))
    text = collateral_markdown(table)
    assert "| spot_bco | 0.001 | 3 | -11.0 ± 0.6 | -0.400 ± 0.058 | -0.010 ± 0.000 | 0.500 / 0.700 |" in text
    assert "0.001: in-domain -11.0 ± 0.6, pushed -0.400 vs other -0.010 nats/token (beyond 2 SE)" in text
    assert "0.0001: in-domain +0.0 ± 0.6, pushed -0.010 vs other -0.010 nats/token (within 2 SE)" in text
    assert "not recorded" in collateral_markdown(mechanism_table(*study(with_variants=False)))
