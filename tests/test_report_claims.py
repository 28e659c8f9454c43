"""The report's sweep section (frontier, chosen vs matched, mechanism) and its reading per claim."""
import json

import pytest

from spotlib.analysis import frontier
from spotlib.config import load_profile
from spotlib.io import write_jsonl
from spotlib.report.build import build_report

GAINS = {  # run -> lr -> in-domain gain per seed (0, 1)
    "sft": {1e-4: (1.0, 2.0), 1e-3: (4.0, 5.0)},
    "spot_bco": {1e-4: (0.0, 0.5), 1e-3: (-10.0, -11.0)},
    "spot_bco+chosen_only": {1e-3: (0.0, 0.5)},
    "spot_bco+rejected_only": {1e-3: (-9.0, -10.0)},
    "spot_bco+edit_only": {1e-3: (0.5, 0.0)},
}


def fake_sweep(out):
    """outputs/<p>/sweep/ as the sweep leaves it, from hand-made per-seed scores."""
    from spotlib.report.frontier_figure import plot_frontier
    from spotlib.stages.sweep import choose

    sweep = out / "sweep"
    bases = {s: {"in_domain": 70.0, "ood": 50.0, "general": 97.0, "overall": 80.0, "n_items": 40} for s in (0, 1)}
    points = []
    for run, by_lr in GAINS.items():
        dirname = run
        for lr, gains in by_lr.items():
            for seed, gain in enumerate(gains):
                points.append({"run": run, "method": run.split("+")[0], "lr": lr, "seed": seed,
                               "in_domain": 70.0 + gain, "ood": 50.0, "general": 97.0 - (seed + 1) * lr * 1e3,
                               "overall": 80.0 + gain / 4, "kl": lr * 10})
                probe = {"kind": "probe", "step": 4, "edit/before": -0.01, "edit/at": -0.4, "edit/after": -0.05,
                         "edit/chosen_at": 0.02, "edit/p_correct": 0.25, "edit/p_correct_ref": 0.3}
                write_jsonl(sweep / dirname / f"lr{lr:g}" / f"seed{seed}" / "metrics.jsonl",
                            [dict(probe, step=0, **{"edit/at": 0.0}), {"kind": "train", "step": 4}, probe])
    rows = frontier.with_changes(points, bases)
    table = frontier.aggregate(rows)
    chosen = choose(table)
    plot_frontier(table, chosen, sweep / "frontier.png")
    (sweep / "manifest.json").write_text(json.dumps({
        "complete": True, "rule": "maximise the validation overall score", "chosen": chosen,
        "bases": {str(k): v for k, v in bases.items()}, "points": rows, "frontier": table,
        "main_table": frontier.main_table(table, chosen)}))


def fake_rl(out):
    rl = out / "06_rl_init"
    rl.mkdir(parents=True)
    (rl / "manifest.json").write_text(json.dumps({"complete": True, "counts": {"heldout": 64}}))
    (rl / "summary.json").write_text(json.dumps({"runs": {"base": {"heldout_last": 0.5},
                                                          "spot_bco": {"heldout_last": 0.55}}}))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    with_sweep, without = tmp_path_factory.mktemp("swept"), tmp_path_factory.mktemp("bare")
    fake_sweep(with_sweep)
    fake_rl(with_sweep)
    return [build_report(load_profile("test", overrides={"output_dir": str(out)})) for out in (with_sweep, without)]


def test_report_holds_the_frontier_the_matched_points_and_the_mechanism(reports):
    text = reports[0].read_text()
    section = text[text.index("## Learning-rate frontier (sweep)"):text.index("## What the study says")]
    assert "![frontier](sweep/frontier.png)" in section
    assert "| spot_bco | chosen | 0.0001⇤ |" in section and "| spot_bco | matched | 0.0001⇤ |" in section
    assert "**Still on an edge of its grid:** " in section     # the low edge is named under the table
    assert "| sft | matched | 0.001⇥ | +4.5 ± 0.5 |" in section  # within the 2-point budget, the best gain
    assert ("| spot_bco | 0.001 | 2 | -10.5 ± 0.5 | -0.010 ± 0.000 | -0.400 ± 0.000 | -0.050 ± 0.000 | "
            "+0.020 ± 0.000 | 0.250 ± 0.000 |") in section  # the last probe record, not the first
    assert ("the rejected term causes it; restricting y⁻ to the edit removes it; Δlog π(y⁻) per token "
            "before/at/after the edit -0.010/-0.400/-0.050") in section


def test_report_ends_with_a_reading_per_claim(reports):
    text = reports[0].read_text()
    claims = text[text.index("## What the study says about each claim"):]
    for claim in ("(a) In-domain", "(b) OOD", "(c) Retention", "(d) Data × objective", "(e) δ", "(f) KL",
                  "(g) RL start"):
        assert claims.count(claim) == 2  # in the summary table and as its own paragraph
    assert ("spot_bco at lr 0.0001 (low edge of its grid, tied with the base there): +0.2 ± 0.5 points (2 SE) "
            "→ cannot decide") in claims
    assert "GRPO from spot_bco 55.0% vs from base 50.0%" in claims
    assert "no input: run `make reproduce` (stage 05)" in claims  # data × objective: no spot_bco@direct anywhere
    page = (reports[0].parent / "report.html").read_text()
    frontier_part = page[page.index("Learning-rate frontier (sweep)"):page.index("Mechanism: the pair objectives")]
    assert '<img src="data:image/png;base64,' in frontier_part  # the figure embedded
    assert "What the study says about each claim" in page


def test_without_a_sweep_the_report_names_the_command(reports):
    text = reports[1].read_text()
    assert "made by `make sweep PROFILE=test`" in text
    claims = text[text.index("## What the study says about each claim"):]
    assert claims.count("**cannot decide**") == 7 and "`make sweep`" in claims
