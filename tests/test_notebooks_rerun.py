"""The notebooks as a class runs them: executed by `make reproduce`'s parameters, then every cell
run again in the same kernel (a user re-running cells). No error, no unfinished progress bar
stored, and every figure a notebook shows is in the report."""
import copy
import json
import re
from pathlib import Path

import pytest

from conftest import profile_yaml
from spotlib import reproduce
from spotlib.report import figures, plots
from spotlib.config import REPO_ROOT, ConfigError
from spotlib.notebook import SCRATCH, open_profile, output_folder, seed_scratch

NOTEBOOKS = REPO_ROOT / "notebooks"
_PERCENT = re.compile(r"(\d{1,3})%\|")


def reproduce_parameters(monkeypatch, profile, tmp_path) -> dict:
    """The parameters and environment `make reproduce` gives a notebook (papermill itself not run):
    its kernel reports progress to a file the runner follows."""
    import papermill

    from spotlib.progress import ENV_FILE

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: seen.update(k["parameters"]))
    reproduce.run_stage(str(profile_yaml(profile, tmp_path / "p.yaml")), profile, reproduce.STAGES[0], "python3")
    monkeypatch.setenv(ENV_FILE, str(tmp_path / "progress.jsonl"))
    return seen


def execute_twice(notebook: Path, parameters: dict) -> list:
    """Run every cell, then every cell again in the same kernel; a cell error raises."""
    from nbclient import NotebookClient
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(notebook)), parameters)
    client = NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(NOTEBOOKS)}})
    runs = []
    with client.setup_kernel():
        for _ in range(2):
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    cell.outputs = []
                    client.execute_cell(cell, index)
            runs.append(copy.deepcopy(nb))
    return runs


def unfinished_bars(nb) -> list[str]:
    """Widget bars (stored headless they keep their first frame) and text bars below 100%."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                found.append(str(data.get("text/plain", "widget"))[:80])
            text = out.get("text", "") + str(data.get("text/plain", ""))
            for segment in re.split(r"[\r\n]", text):
                found += [segment[:80] for m in _PERCENT.finditer(segment) if int(m.group(1)) < 100]
    return found


def errors(nb) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def figure_calls(notebook: Path) -> set[str]:
    source = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"]
                       if c["cell_type"] == "code")
    return set(re.findall(r"plots\.(\w+)\(", source)) & set(figures.figure_names())


def check_executed(stage: str, runs: list) -> None:
    for nb in runs:
        assert not errors(nb), errors(nb)
        assert not unfinished_bars(nb), unfinished_bars(nb)
    assert images(runs[0]) == images(runs[1]) > 0, "a re-run shows other figures than the first run"
    assert images(runs[0]) <= len(figures.FIGURES[stage])


def check_in_report(stage: str, report: str) -> None:
    section = report[report.index(f"## {stage}"):]
    for name in figure_calls(NOTEBOOKS / f"{stage}.ipynb"):
        assert f"![{name}]" in section and f"`spotlib.report.plots.{name}`" in section, f"{stage}: {name} not in report"


def test_notebooks_name_the_parameter_apart_from_the_profile():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, path.name
        assert re.search(r"^profile_name = ", "".join(params[0]["source"]), re.M), path.name
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "profile = open_profile(profile_name, output_dir, progress)" in code, path.name
        assert not re.search(r"\bcfg\b|\bP\b = ", code), f"{path.name}: one name for the profile"
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells
                   if c["cell_type"] == "code"), f"{path.name}: stored with outputs"


def test_scratch_starts_as_a_copy_and_leaves_the_study_alone(tmp_path):
    study = tmp_path / "outputs" / "test"
    (study / "01_sample").mkdir(parents=True)
    (study / "01_sample" / "all.jsonl").write_text("{}\n")
    (study / "notebooks").mkdir()
    assert output_folder(study, "") == study
    scratch = output_folder(study, SCRATCH)
    assert scratch == tmp_path / "outputs" / "test-scratch"
    assert seed_scratch(study, scratch)
    assert (scratch / "01_sample" / "all.jsonl").read_text() == "{}\n" and not (scratch / "notebooks").exists()
    (scratch / "01_sample" / "all.jsonl").write_text("changed\n")
    assert not seed_scratch(study, scratch)  # never copied over an existing scratch
    assert (study / "01_sample" / "all.jsonl").read_text() == "{}\n"


def test_open_profile_points_every_path_at_the_chosen_folder(tmp_path, tmp_profile):
    yaml_path = profile_yaml(tmp_profile, tmp_path / "p.yaml")
    assert open_profile(str(yaml_path), "", progress=False).out == tmp_profile.out
    mine = open_profile(str(yaml_path), str(tmp_path / "mine"))
    assert mine.out == tmp_path / "mine"
    with pytest.raises(ConfigError, match="^profile_name: expected a profile name or a YAML path, got Profile$"):
        open_profile(mine)  # a Profile where the name belongs: one clear line


def test_rectify_notebook_reruns_cleanly_with_reproduce_parameters(sampled_profile, tmp_path, monkeypatch):
    """The fast variant: 02 only (the session's stage-01 outputs make it cheap)."""
    from spotlib.report.build import build_report

    parameters = reproduce_parameters(monkeypatch, sampled_profile, tmp_path)
    assert parameters["output_dir"] == "" and "progress" not in parameters
    runs = execute_twice(NOTEBOOKS / "02_rectify.ipynb", parameters)
    check_executed("02_rectify", runs)
    check_in_report("02_rectify", build_report(sampled_profile).read_text())


@pytest.mark.slow
def test_every_notebook_reruns_cleanly_and_its_figures_are_in_the_report(tmp_path, monkeypatch):
    from spotlib.config import load_profile

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    parameters = reproduce_parameters(monkeypatch, profile, tmp_path)
    executed = {stage.name: execute_twice(NOTEBOOKS / stage.notebook, parameters) for stage in reproduce.STAGES}
    report = (profile.out / "report.md").read_text()  # written by notebook 06's last cell
    for stage, runs in executed.items():
        check_executed(stage, runs)
        check_in_report(stage, report)
    assert (profile.out / "report.html").stat().st_size > 10_000
