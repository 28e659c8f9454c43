import html
import json
import random
import re

import pytest

from spotlib.report import figures, plots
from spotlib.io import write_jsonl
from spotlib.report.build import build_report
from spotlib.report.html import markdown_to_html
from spotlib.stages import STAGES
from spotlib.world import make_items, student_solution

RUNS = ["sft_plus", "spot_bco", "spot_bco@direct"]


def manifest(stage, **summary):
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "manifest.json").write_text(json.dumps({"complete": True, "wall_time_s": 3.0, "summary": summary}))


def fake_study(out):
    """Every stage's files as the stages leave them, with small made-up numbers."""
    manifest(out / "01_sample", samples=4, correct=1, errors=3, accuracy=0.25,
             by_group={"2": {"n": 2, "accuracy": 0.5}, "3": {"n": 2, "accuracy": 0.0}})
    record = make_items("arith", 1, "train")[0]  # a wrong last step: the first error at 1/2
    wrong = student_solution(record, random.Random(0)).replace(f"= {record['answer']}", "= 1000")
    write_jsonl(out / "01_sample" / "errors.jsonl", [dict(record, response=wrong)])
    manifest(out / "02_rectify", errors=3, rectified_ok=2, rectify_failures={"no_markers": 1}, cost_usd=1.5,
             modes={"edit": 2}, direct_problems=3, direct_solved=3, direct_requests=3)
    write_jsonl(out / "02_rectify" / "rectified.jsonl", [
        {"id": "e1", "ok": True, "mode": "edit", "rejected": "2 + 2 = 5\n\nSo $\\boxed{5}$.",
         "chosen": "2 + 2 = 4\n\nSo $\\boxed{4}$."}])
    f = out / "03_filter"
    manifest(f, gamma=0.6, unit="tokens")
    stats = {"n": 2, "mean": 0.3, "median": 0.3, "p10": 0.2, "p90": 0.4}
    (f / "proximity_report.json").write_text(json.dumps({
        "unit": "tokens", "change_ratio": stats, "change_ratio_chars": stats, "edit_distance_tokens": stats,
        "kept_by_gamma": {"0.5": 1, "0.6": 2},
        "nll": {k: {"nll_per_token": 1.0 + i} for i, k in enumerate(plots.NLL_TARGETS)},
        "counts": {"per_method": 2, "available": {"pairs": 2, "sft_direct": 3, "rft": 1}}}))
    write_jsonl(f / plots.POINTS_FILE, [{"id": "a", "change_ratio": 0.2, "edit_distance_tokens": 3},
                                        {"id": "b", "change_ratio": 0.4, "edit_distance_tokens": 5}])
    t = out / "04_train_spot"
    manifest(t)
    recorded = json.loads((t / "manifest.json").read_text())  # the settings the tether lesson is read with
    recorded["params"] = {"train": {"methods": ["sft_plus", "spot_bco"], "beta": 0.1, "lr": {"default": 3e-5}},
                          "seeds": [0]}
    (t / "manifest.json").write_text(json.dumps(recorded))
    runs = []
    for run in RUNS:
        run_dir = t / run / "seed0"
        metrics = [{"kind": "train", "step": s, "rewards/chosen": 0.1 * s, "tether/chosen": 0.5} for s in (1, 2)]
        if run != "sft_plus":
            metrics = [dict(m, **{"rewards/rejected": -0.1, "tether/rejected": 0.4, "delta": 0.01}) for m in metrics]
        metrics += [{"kind": "probe", "step": s, "kl/probe": 0.01 * s, "edit/before": 0.0, "edit/at": -0.1 * s,
                     "edit/after": 0.0, "fixed/margins": 0.1 * s, "fixed/rewards_chosen": 0.05 * s,
                     "fixed/rewards_rejected": -0.05 * s} for s in (0, 2)]
        write_jsonl(run_dir / "metrics.jsonl", metrics)
        runs.append({"run": run, "seed": 0, "dir": f"/elsewhere/04_train_spot/{run}/seed0", "train_seconds": 1.5,
                     "tokens_per_s": 100.0, "lr": 3e-5, "steps": 2})
    write_jsonl(t / "runs.jsonl", runs)
    e = out / "05_eval_forgetting"
    manifest(e)
    table = [{"run": r, "in_domain": 40.0, "ood": 30.0, "general": 60.0, "overall": 45.0} for r in ["base", *RUNS]]
    models = [{"run": r, "seed": 0, "kl": 0.02, "general": 58.0} for r in RUNS]
    (e / "results.json").write_text(json.dumps({"runs": table, "models": models}))
    (e / "reading.md").write_text("## Main table\n\n| run | general |\n|---|---|\n| base | 60 |\n\n## Reading\n\nSPoT ties.\n")
    r = out / "06_rl_init"
    manifest(r)
    rows = [{"init": i, "step": s, "reward_mean": 0.1 * s, "heldout_accuracy": 0.5, "kl": 0.01, "entropy": 1.0}
            for i in ("base", "spot_bco") for s in range(3)]
    import pandas as pd

    pd.DataFrame(rows).to_csv(r / "curves.csv", index=False)
    (r / "table4.md").write_text("| model | avg |\n|---|---|\n| base | 10.0 |\n")
    (r / "summary.json").write_text(json.dumps({"runs": {"base": {"steps": 2, "final": "x"}}}))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from spotlib.config import load_profile

    out = tmp_path_factory.mktemp("study")
    fake_study(out)
    profile = load_profile("test", overrides={"output_dir": str(out)})
    return build_report(profile)


def test_report_holds_every_stage_in_order_with_every_figure(report):
    text = report.read_text()
    positions = [text.index(f"## {stage.name}") for stage in STAGES]
    assert positions == sorted(positions)
    for stage, specs in figures.FIGURES.items():
        section = text[text.index(f"## {stage}"):]
        for spec in specs:
            match = re.search(rf"!\[{spec.name}\]\(([^)]+)\)", section)
            assert match, f"{stage}: figure {spec.name} missing from the report"
            assert (report.parent / match.group(1)).stat().st_size > 1000
            assert f"`spotlib.report.plots.{spec.name}`" in section
    # the readings and tables that go with them
    for expected in ("accuracy 25.0%", "| failures by reason | no_markers 1 |", "**2 examples per method**",
                     "3.0e-05", "SPoT ties.", "| base | 10.0 |"):
        assert expected in text


def test_html_is_self_contained_with_math_and_figures_embedded(report):
    page = (report.parent / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']https?://""", page), "the page fetches something from the network"
    assert "<script" not in page
    images = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert images and all(src.startswith("data:") for src in images)
    n_figures = sum(len(f) for f in figures.FIGURES.values())
    assert sum(src.startswith("data:image/png") for src in images) == n_figures
    assert 'class="math"' in page and "$R" not in page and "\\gamma$" not in page
    assert "<table>" in page
    # the student's text in the diff stays text: one HTML block, its `$` not taken for math
    edit = page[page.index("An edit, side by side"):]
    cell = html.unescape(edit[:edit.index("</table>")])
    assert "$\\boxed{4}$." in cell and "\n\nSo " in cell and "<img" not in cell


def test_math_becomes_svg_and_prices_stay_text(tmp_path):
    page = markdown_to_html("Weight $\\beta\\sigma(-r^+)$ costs 5 $ today.\n\n$$R = 1 - \\frac{a}{b}$$\n",
                            base_dir=tmp_path)
    assert page.count("data:image/svg+xml;base64,") == 2
    assert "5 $ today" in page and 'class="math-display"' in page
    broken = markdown_to_html("$\\notacommand x$", base_dir=tmp_path)
    assert "<code>\\notacommand x</code>" in broken  # shown as source rather than lost
