"""The reading per claim, on hand-made rows with hand-derived verdicts and noise bands."""
import math

import pytest

from spotlib.analysis import claims
from spotlib.analysis.claims import CONTRADICTS, SUPPORTS, UNDECIDED, claims_markdown, read_claims, spearman, verdict_of


def by_key(claims):
    return {c["key"]: c for c in claims}


def row(run, at, lr, **values):
    """A sweep main-table row; each value given as (mean, se)."""
    out = {"run": run, "at": at, "lr": lr}
    for key, (mean, se) in values.items():
        out[key], out[f"{key}_se"] = mean, se
    return out


def eval_table():
    """Stage 05's table.csv as csv.DictReader gives it (strings); SEs in quadrature with the base's."""
    def r(run, in_domain, ood, general, overall, kl):
        return {"run": run, "in_domain": str(in_domain), "in_domain_se": "1.0", "d_in_domain": str(in_domain - 70),
                "ood": str(ood), "ood_se": "1.0", "d_ood": str(ood - 50), "general": str(general),
                "general_se": "1.0", "overall": str(overall), "overall_se": "1.0", "kl": str(kl)}
    return [r("base", 70, 50, 97, 80, 0.0), {**r("sft", 72, 50, 90, 78, 0.03)},
            r("spot_bco", 60, 51, 96, 75, 0.01), r("spot_bco@direct", 61, 50, 96, 70, 0.02),
            r("sft_plus", 70, 50, 96, 79, ""), r("spot_bce", 60, 50, 96, 75, 0.01)]


def test_a_reading_decides_only_beyond_two_standard_errors():
    assert verdict_of(2.1, 1.0) == SUPPORTS and verdict_of(-2.1, 1.0) == CONTRADICTS
    assert verdict_of(2.0, 1.0) == UNDECIDED and verdict_of(5.0, math.nan) == UNDECIDED
    assert verdict_of(-3.0, 1.0, bigger_is_claimed=False) == SUPPORTS


def test_claims_from_stage_05_with_hand_derived_bands():
    claims = by_key(read_claims(eval_rows=eval_table()))
    # in-domain −10 with SE √2 (run and base in quadrature): 2 SE = 2.8
    a = claims["in_domain"]
    assert a["verdict"] == CONTRADICTS
    assert a["readings"][0]["text"] == "spot_bco: -10.0 ± 2.8 points (2 SE)"
    assert claims["ood"]["verdict"] == UNDECIDED  # +1 within ±2.8
    # retention loss: sft 7, spot_bco 1 → +6 ± 4.0 (four SEs of 1 in quadrature: 2 × 2)
    c = claims["retention"]
    assert c["verdict"] == SUPPORTS and "+6.0 ± 4.0 points (2 SE)" in c["readings"][0]["text"]
    assert not any("does not forget" in n for n in c["notes"])
    # data × objective: spot_bco 75 vs @direct 70: +5 ± 2.8 supports; sft_plus 79 vs sft 78 is a tie
    d = claims["data"]
    assert [r["verdict"] for r in d["readings"]] == [SUPPORTS, UNDECIDED] and d["verdict"] == SUPPORTS
    assert "overall spot_bco 75.0 vs spot_bco@direct 70.0: +5.0 ± 2.8 points" in d["readings"][0]["text"]
    assert claims["delta"]["verdict"] == UNDECIDED  # 75 vs 75


def test_chosen_and_matched_readings_that_differ_are_said():
    table = [row("spot_bco", "chosen", 1e-5, in_domain_gain=(0.5, 1.0)),
             row("spot_bco", "matched", 3e-4, in_domain_gain=(-6.0, 1.0))]
    a = by_key(read_claims(main_table=table))["in_domain"]
    assert [r["verdict"] for r in a["readings"]] == [UNDECIDED, CONTRADICTS]
    assert a["verdict"] == CONTRADICTS  # the tie where it trains least decides nothing
    assert a["readings"][1]["text"] == "spot_bco at lr 0.0003: -6.0 ± 2.0 points (2 SE)"
    assert any(n.startswith("spot_bco: the sweep's readings at its chosen, matched and best points differ "
                            "(chosen LR (val): cannot decide, matched point (val): contradicts)") for n in a["notes"])
    # a reading for and one against: no verdict
    table[0]["in_domain_gain"] = 4.0
    a = by_key(read_claims(main_table=table))["in_domain"]
    assert a["verdict"] == UNDECIDED and any("some readings support and others contradict" in n for n in a["notes"])


def test_retention_without_an_in_domain_gain_is_said_to_be_moving_less():
    # at each method's best in-domain point: SFT gains and forgets; SPoT-BCO neither
    table = [row("sft", "best", 1e-4, retention_loss=(14.0, 1.0), in_domain_gain=(5.0, 1.0)),
             row("spot_bco", "best", 1e-5, retention_loss=(0.0, 0.5), in_domain_gain=(-1.3, 0.6))]
    c = by_key(read_claims(main_table=table))["retention"]
    assert c["verdict"] == SUPPORTS and c["readings"][0]["source"] == "sweep, best in-domain LR (val)"
    assert any("spot_bco forgets less there without gaining in-domain (-1.3 ± 1.2 (2 SE))" in n for n in c["notes"])
    assert "| **supports** (only where SPoT-BCO gains nothing in-domain) |" in claims_markdown([c])
    table[1]["in_domain_gain"] = 4.0  # now it gains beyond noise: learning without forgetting, no such note
    c = by_key(read_claims(main_table=table))["retention"]
    assert c["verdict"] == SUPPORTS and not any("without gaining" in n for n in c["notes"])
    assert "qualifier" not in c and "| **supports** |" in claims_markdown([c])


def test_retention_says_when_sft_does_not_forget():
    table = [row("sft", "chosen", 1e-4, retention_loss=(0.5, 1.0)),
             row("spot_bco", "chosen", 1e-4, retention_loss=(0.0, 1.0))]
    c = by_key(read_claims(main_table=table))["retention"]
    assert c["verdict"] == UNDECIDED
    assert any("SFT itself does not forget beyond noise (+0.5 ± 2.0 (2 SE))" in n for n in c["notes"])


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = 1, 2.5, 2.5, 4: Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_kl_against_forgetting_from_sweep_points_needs_forgetting_and_enough_runs():
    def pts(run_losses):  # run i at kl 0.01·i, two seeds around its retention loss
        return [{"run": f"r{i}", "lr": 1e-4, "seed": s, "kl": 0.01 * i, "retention_loss": loss + d}
                for i, loss in enumerate(run_losses) for s, d in ((0, -0.5), (1, 0.5))]
    f = by_key(read_claims(frontier_points=pts([0, 1, 2, 3, 4, 8])))["kl"]
    # ρ = 1 over n = 6: band 2/√5 = 0.89; r5 forgets 8 ± 0.5
    assert f["verdict"] == SUPPORTS
    assert "ρ(KL, retention loss) = +1.00 over n = 6 runs (noise band ±0.89)" in f["readings"][0]["text"]
    calm = by_key(read_claims(frontier_points=pts([0, 0.1, 0.2, 0.3, 0.4, 0.5])))["kl"]
    assert calm["verdict"] == UNDECIDED and "no run forgets beyond 2 SE" in calm["readings"][0]["text"]
    few = by_key(read_claims(frontier_points=pts([0, 1, 8])))["kl"]
    assert few["readings"] == [] and "make sweep" in few["notes"][0]


def test_rl_start_with_binomial_noise():
    rl = {"heldout": 100, "runs": {"base": {"heldout_last": 0.5}, "spot_bco": {"heldout_last": 0.75}}}
    g = by_key(read_claims(rl=rl))["rl"]
    se = 100 * math.hypot(math.sqrt(0.25 / 100), math.sqrt(0.1875 / 100))  # 6.6
    assert g["verdict"] == SUPPORTS
    assert g["readings"][0]["text"].startswith(f"GRPO from spot_bco 75.0% vs from base 50.0%: +25.0 ± {2 * se:.1f}")


def test_every_claim_is_present_and_missing_inputs_name_their_command():
    claims = read_claims()
    assert [c["key"] for c in claims] == ["in_domain", "ood", "retention", "data", "delta", "kl", "rl"]
    assert all(c["verdict"] == UNDECIDED and c["readings"] == [] for c in claims)
    assert "`make sweep`" in claims[0]["notes"][0] and "stage 06" in claims[-1]["notes"][0]
    text = claims_markdown(claims)
    assert text.count("**cannot decide**") == 7 and "- note: no input: run" in text


def test_two_comparisons_of_one_claim_are_read_apart():
    """Data × objective at the chosen LR and the matched point: each comparison is checked on its own."""
    overall = {("spot_bco", "chosen"): 80.0, ("spot_bco@direct", "chosen"): 80.0,
               ("spot_bco", "matched"): 80.0, ("spot_bco@direct", "matched"): 70.0,
               ("sft_plus", "chosen"): 80.0, ("sft", "chosen"): 80.0,
               ("sft_plus", "matched"): 80.0, ("sft", "matched"): 80.0}
    table = [row(run, at, 1e-5 if at == "chosen" else 1e-4, overall=(value, 1.0))
             for (run, at), value in overall.items()]
    d = by_key(read_claims(main_table=table))["data"]
    assert [r["verdict"] for r in d["readings"]] == [UNDECIDED, SUPPORTS, UNDECIDED, UNDECIDED]
    assert d["verdict"] == SUPPORTS
    differ = [n for n in d["notes"] if "differ" in n]
    assert len(differ) == 1 and differ[0].startswith("spot_bco vs spot_bco@direct:")


def test_a_constant_side_leaves_the_rank_correlation_undefined():
    points = [{"run": f"r{i}", "lr": 1e-4, "seed": s, "kl": 0.01, "retention_loss": float(i) * 3 + s}
              for i in range(5) for s in (0, 1)]
    f = by_key(read_claims(frontier_points=points))["kl"]
    assert f["verdict"] == UNDECIDED
    assert "ρ(KL, retention loss) = undefined (one side is constant)" in f["readings"][0]["text"]


def test_seeds_that_agree_do_not_make_a_small_retention_loss_beyond_noise():
    # Three seeds, each 0.5 points below its base: SE over seeds is 0, but 100 facts and 100 format
    # items cannot resolve half a point.
    points = [{"run": "sft", "lr": 3e-4, "seed": s, "kl": 0.01, "retention_loss": 0.5, "facts": 99.0,
               "format": 98.0} for s in range(3)]
    (row,) = claims.kl_rows_from_points(points, {"facts": 100, "format": 100})
    assert row["retention_loss"] == 0.5 and row["retention_loss_se"] > 0.5
    (bare,) = claims.kl_rows_from_points(points)
    assert bare["retention_loss_se"] == 0.0
