"""Notebooks 04 and 05 as a class runs them in JupyterLab: in scratch mode, with every cell after the
setup cell in another order (reversed, then shuffled), the exercise cell switched on; no error, and
every figure a plotting function returned has both axes labelled. Then the report of that folder holds
every figure and every lesson cell of the notebooks."""
import json
import random
import shutil

import pytest
import yaml

from spotlib.config import PARAMS_DIR, REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"

# Runs first in the kernel: every Figure a spotlib.report.plots function returns is kept for the check.
RECORD_FIGURES = """
import spotlib.report.plots as _plots
_figures, _close_figure = [], _plots._close
def _record(fig):
    _figures.append(fig)
    return _close_figure(fig)
_plots._close = _record
"""
CHECK_FIGURES = """
_unlabelled = [problem for fig in _figures for problem in _plots.unlabelled_axes(fig)]
assert _figures and not _unlabelled, _unlabelled
print("figures checked:", len(_figures))
"""


def run_in_order(notebook, parameters: dict, order: str, edits: dict | None = None):
    """Execute the parameters and setup cells, then the other code cells in `order` ("reversed" or a
    seeded shuffle), in one fresh kernel; returns the executed cells (a cell error raises)."""
    from nbclient import NotebookClient
    from nbformat import v4
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        for old, new in (edits or {}).items():
            cell.source = cell.source.replace(old, new)
    setup = next(i for i, c in enumerate(code) if "open_profile(" in c.source)
    rest = code[setup + 1:]
    if order == "reversed":
        rest = rest[::-1]
    else:
        random.Random(order).shuffle(rest)
    nb.cells = [v4.new_code_cell(RECORD_FIGURES)] + code[:setup + 1] + rest + [v4.new_code_cell(CHECK_FIGURES)]
    client = NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb.cells


@pytest.mark.slow
def test_notebooks_04_and_05_run_in_any_order_after_setup(sampled_profile, tmp_path):
    from spotlib.report import lessons
    from spotlib.analysis import tether
    from spotlib.config import load_profile
    from spotlib.report.build import build_report
    from spotlib.stages import filter as filter_stage
    from spotlib.stages import rectify

    rectify.run(sampled_profile, progress=False)
    filter_stage.run(sampled_profile, progress=False)
    study = tmp_path / "study"
    shutil.copytree(sampled_profile.out, study)
    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(study))
    raw["eval"].update(n_items={"default": 2}, max_new_tokens=16)
    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(raw))
    parameters = {"profile_name": str(profile_path), "output_dir": "scratch", "progress": False}
    before = sorted(p.relative_to(study) for p in study.rglob("*"))

    exercise = {"exercise_lr = None": "exercise_lr = 1e-3"}
    for notebook, order, edits in (("04_train_spot", "reversed", None), ("04_train_spot", "shuffle-1", exercise),
                                   ("05_eval_forgetting", "reversed", None), ("05_eval_forgetting", "shuffle-1", None)):
        cells = run_in_order(NOTEBOOKS / f"{notebook}.ipynb", parameters, order, edits)
        printed = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
        assert "figures checked:" in printed, (notebook, order)
        if edits:
            assert "λ⁺ ranged from" in printed  # the exercise's run, read like the lesson's
    assert sorted(p.relative_to(study) for p in study.rglob("*")) == before  # scratch only
    scratch = load_profile(str(profile_path), overrides={"output_dir": str(study.with_name("study-scratch"))})
    assert (tether.exercise_dir(scratch, 1e-3, scratch.train.beta) / "summary.json").is_file()

    report = build_report(scratch).read_text()
    html = (scratch.out / "report.html").read_text()
    for notebook in ("04_train_spot", "05_eval_forgetting"):
        source = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
        section = report[report.index(f"## {notebook}"):]
        for name in lessons.read(NOTEBOOKS / f"{notebook}.ipynb", set(_report_figure_names())):
            if name.kind == "figure":
                assert f"![{name.value}]" in section, (notebook, name.value)
                assert f'alt="{name.value}"' in html, (notebook, name.value)
        for cell in source["cells"]:
            if "lesson" in cell.get("metadata", {}).get("tags", []):
                last = "".join(cell["source"]).strip().splitlines()[-1]
                assert last in section, (notebook, last)
    assert "λ⁺ ranged from" in report and "held-out KL" in report  # the lesson's printed lines


def _report_figure_names():
    from spotlib.report import figures

    return figures.figure_names()
