"""`make docs`: the result tables of the pages are written from a run's files, inside their marked regions only."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from spotlib.report import docs_pages
from spotlib.config import REPO_ROOT

README = """# Title

Text before, kept as it is.   
<!-- generated: main-table from outputs/tiny/05_eval_forgetting/table.md -->

| old | table |
|---|---|

<!-- end generated -->
Between the regions: `make reproduce` wrote these.

<!-- generated: table4 from outputs/tiny/06_rl_init/table4.md -->
| hand | made |
<!-- end generated -->
tail without a newline"""

STUDY = """# Study

<!-- generated: claims from outputs/tiny/report.md § What the study says about each claim -->
old claims
<!-- end generated -->

<!-- generated: base-model from outputs/tiny/base_model/manifest.json -->
<!-- end generated -->

<!-- generated: calibration from outputs/tiny/calibration/calibration.md -->
the calibration table as it was
<!-- end generated -->
"""

TABLE = "Cells: mean ± std.\n\n| run | arith |\n|---|---|\n| base | 75.7 ± 2.9 |\n"
TABLE4 = "# Table 4 (tiny)\n\n| model | avg |\n|---|---|\n| SPoT | 79.4 |\n"
REPORT = ("# report\n\n## 05_eval_forgetting\n\nnot this\n\n## What the study says about each claim\n\n"
          "| claim | verdict |\n|---|---|\n| (a) | supports |\n\n### a sub-heading stays\n\nmore\n\n"
          "## Next section\n\nnot this either\n")
MANIFEST = {"heldout_scores": {"T=0.0": {"arith": 0.79, "facts": 0.99}, "T=0.7": {"arith": 0.655, "facts": 0.95},
                               "nll_nats_per_token": {"student": 1.0}}}


@pytest.fixture
def tree(tmp_path):
    """A repository with two pages and a study's outputs (no calibration, no sweep)."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text(README)
    (root / "docs" / "tiny-study.md").write_text(STUDY)
    out = root / "outputs" / "tiny"
    for rel, text in {"05_eval_forgetting/table.md": TABLE, "06_rl_init/table4.md": TABLE4,
                      "report.md": REPORT, "base_model/manifest.json": json.dumps(MANIFEST)}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    (out / "05_eval_forgetting" / "scores_bar.png").write_bytes(b"\x89PNG scores")
    return root


def run(root, *args):
    return docs_pages.main(["--root", str(root), *args])


def between(text, start, end):
    return text[text.index(start) + len(start):text.index(end, text.index(start))]


def test_regions_are_written_and_everything_else_kept_byte_for_byte(tree, capsys):
    assert run(tree) == 0
    readme = (tree / "README.md").read_text()
    # outside the regions: the same bytes (trailing spaces, no final newline, text between markers)
    assert readme.startswith("# Title\n\nText before, kept as it is.   \n<!-- generated: main-table")
    assert "<!-- end generated -->\nBetween the regions: `make reproduce` wrote these.\n\n<!-- generated: table4" in readme
    assert readme.endswith("<!-- end generated -->\ntail without a newline")
    assert between(readme, "table.md -->\n", "<!-- end generated -->") == "\n" + TABLE + "\n"
    # a whole file loses its title line; the page's heading names it
    assert between(readme, "table4.md -->\n", "<!-- end generated -->") == "\n| model | avg |\n|---|---|\n| SPoT | 79.4 |\n\n"
    study = (tree / "docs" / "tiny-study.md").read_text()
    claims = between(study, "each claim -->\n", "<!-- end generated -->")
    assert "| (a) | supports |" in claims and "### a sub-heading stays" in claims
    assert "not this" not in claims and "Next section" not in claims
    assert "| greedy | 79.0% | 99.0% |" in study and "| T = 0.7 | 65.5% | 95.0% |" in study
    assert (tree / "docs" / "figures" / "scores_bar.png").read_bytes() == b"\x89PNG scores"
    out = capsys.readouterr().out
    # a source that does not exist leaves its region as it was, and says so
    assert "the calibration table as it was" in study
    assert "docs/tiny-study.md: region calibration: left as it is, no source " in out
    assert "calibration/calibration.md" in out
    assert "figure frontier.png (" in out and "sweep/frontier.png): left as it is, not made yet" in out
    # written once, the pages agree with the outputs: a second run changes nothing
    before = {p: p.read_bytes() for p in (tree / "README.md", tree / "docs" / "tiny-study.md")}
    assert run(tree, "--check") == 0
    assert run(tree) == 0
    assert {p: p.read_bytes() for p in before} == before


def test_check_names_the_stale_region_and_writes_nothing(tree, capsys):
    assert run(tree) == 0
    (tree / "outputs" / "tiny" / "06_rl_init" / "table4.md").write_text("| model | avg |\n|---|---|\n| SPoT | 80.0 |\n")
    readme = (tree / "README.md").read_bytes()
    capsys.readouterr()
    assert run(tree, "--check") == 1
    captured = capsys.readouterr()
    assert "README.md: region table4" in captured.err
    assert "region main-table" not in captured.err            # only what differs
    assert (tree / "README.md").read_bytes() == readme      # --check never writes
    assert run(tree) == 0 and "| SPoT | 80.0 |" in (tree / "README.md").read_text()


def test_check_fails_on_a_page_edited_by_hand(tree):
    assert run(tree) == 0
    page = tree / "README.md"
    page.write_text(page.read_text().replace("75.7 ± 2.9", "76.0 ± 2.9"))
    assert run(tree, "--check") == 1


def test_another_profile_and_output_folder(tree):
    other = tree / "elsewhere"
    shutil.copytree(tree / "outputs" / "tiny", other)
    (other / "05_eval_forgetting" / "table.md").write_text("| run | arith |\n|---|---|\n| base | 1.0 |\n")
    assert run(tree, "--outputs", str(other)) == 0
    assert "| base | 1.0 |" in (tree / "README.md").read_text()
    assert run(tree, "--profile", "nothing-here") == 2           # no such study: a one-line error


@pytest.mark.parametrize("page, message", [
    ("<!-- generated: x from outputs/tiny/a.md -->\nno end\n", "README.md:1: region x has no '<!-- end generated -->'"),
    ("text\n<!-- end generated -->\n", "README.md:2: '<!-- end generated -->' without a region"),
    ("<!-- generated: x outputs/tiny/a.md -->\n<!-- end generated -->\n", "README.md:1: a generated-region marker"),
    ("<!-- generated: x from elsewhere/a.md -->\n<!-- end generated -->\n", "not outputs/<profile>/FILE"),
])
def test_bad_markers_are_one_line_errors_naming_page_and_line(tree, capsys, page, message):
    study = (tree / "docs" / "tiny-study.md").read_bytes()
    (tree / "README.md").write_text(page)
    assert run(tree) == 2
    assert message in capsys.readouterr().err
    assert (tree / "docs" / "tiny-study.md").read_bytes() == study   # no page is written


def test_a_section_the_report_does_not_have_yet_is_left_and_reported(tree, capsys):
    page = tree / "docs" / "tiny-study.md"
    page.write_text(STUDY.replace("§ What the study says about each claim", "§ Mechanism"))
    assert run(tree) == 0
    assert "old claims" in page.read_text()
    assert "region claims: left as it is, no heading 'Mechanism' in" in capsys.readouterr().out


def test_the_repository_pages_have_well_formed_regions():
    """Every region of the real pages parses, names a source under outputs/<profile>/ and, when it is JSON,
    has a renderer; the main table and the frontier figure head the README."""
    names = {}
    for page in docs_pages.PAGES:
        lines = (REPO_ROOT / page).read_text().splitlines(keepends=True)
        for region in docs_pages.find_regions(page, lines):
            names[region.name] = region
            if region.source.endswith(".json"):
                assert region.name in docs_pages.RENDERERS, region.where()
    assert names["main-table"].page == "README.md"
    assert {"main-table", "table4", "frontier-table", "mechanism", "claims", "calibration", "base-model"} <= set(names)
    assert "](docs/figures/frontier.png)" in (REPO_ROOT / "README.md").read_text()


def _section(text: str, heading_line: str) -> str:
    """The lines after `heading_line` up to the next heading of its level or above (read independently)."""
    level = len(heading_line) - len(heading_line.lstrip("#"))
    body = text.split(heading_line + "\n", 1)[1]
    stops = [m.start() for m in re.finditer(r"^#{1,%d} " % level, body, re.M)]
    return body[:stops[0]] if stops else body


@pytest.mark.slow
def test_pages_written_from_a_test_profile_run_equal_its_files(tmp_path, one_thread):
    """The test profile's stages 01-06, its sweep and report into a temporary folder; `make docs` on them
    fills every region whose source the run made with that source's text and copies the figures."""
    from spotlib.config import load_profile
    from spotlib.report.build import build_report
    from spotlib.stages import evaluate, rectify, rl_init, sample, sweep, train_methods
    from spotlib.stages import filter as filter_stage

    out = tmp_path / "out"
    profile = load_profile("test", overrides={"output_dir": str(out), "train.lr_grid": [1.0e-4, 3.0e-3]})
    for stage in (sample, rectify, filter_stage, train_methods, evaluate, rl_init):
        stage.run(profile, progress=False)
    sweep.run(profile, progress=False)
    build_report(profile)

    root = tmp_path / "repo"
    for page in docs_pages.PAGES:
        (root / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / page, root / page)
    before = {page: (root / page).read_text() for page in docs_pages.PAGES}
    assert docs_pages.main(["--root", str(root), "--outputs", str(out)]) == 0

    report = (out / "report.md").read_text()
    expected = {
        "main-table": (out / "05_eval_forgetting" / "table.md").read_text(),
        "table4": (out / "06_rl_init" / "table4.md").read_text(),
        "frontier-table": (out / "sweep" / "sweep.md").read_text().split("\n", 1)[1],   # less its title
        "claims": _section(report, "## What the study says about each claim"),
        "mechanism": _section(report, "### Mechanism: the pair objectives taken apart"),
    }
    scores = json.loads((out / "base_model" / "manifest.json").read_text())["heldout_scores"]
    seen = set()
    for page in docs_pages.PAGES:
        lines = (root / page).read_text().splitlines(keepends=True)
        for region in docs_pages.find_regions(page, lines):
            body = "".join(lines[region.body_start:region.body_end])
            seen.add(region.name)
            if region.name in expected:
                assert body == "\n" + expected[region.name].strip("\n") + "\n\n", region.where()
            elif region.name == "base-model":
                greedy = " | ".join(f"{100 * v:.1f}%" for v in scores["T=0.0"].values())
                assert f"| greedy | {greedy} |" in body
            else:   # calibration: the test profile has no SFT to calibrate on, so its region stays
                assert not docs_pages.source_path(region, out).exists()
                old = before[page].splitlines(keepends=True)
                start = old.index(lines[region.body_start - 1])
                assert body == "".join(old[start + 1:start + 1 + region.body_end - region.body_start])
    assert set(expected) | {"base-model"} <= seen
    for name, rel in docs_pages.FIGURES.items():
        assert (root / "docs" / "figures" / name).read_bytes() == (out / rel).read_bytes()
    assert docs_pages.main(["--root", str(root), "--outputs", str(out), "--check"]) == 0
