import json

from spotlib.io import read_jsonl
from spotlib.stages import sample

from conftest import profile_yaml


def test_sample_outputs_partition_all(sampled_profile):
    out = sampled_profile.stage_dir("01_sample")
    rows = read_jsonl(out / "all.jsonl")
    errors = read_jsonl(out / "errors.jsonl")
    correct = read_jsonl(out / "correct.jsonl")
    assert len(rows) == sampled_profile.sample.num_problems * sampled_profile.sample.n
    assert len(errors) + len(correct) == len(rows)
    assert all(not r["correct"] for r in errors) and all(r["correct"] for r in correct)
    assert len({(r["id"], r["sample_id"]) for r in rows}) == len(rows)
    for r in rows:
        assert {"id", "prompt", "answer", "response", "correct", "sample_id"} <= set(r)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["counts"]["samples"] == len(rows)
    assert manifest["wall_time_s"] >= 0


def test_rerun_is_skipped_and_crash_resumes_without_duplicates(sampled_profile):
    out = sampled_profile.stage_dir("01_sample")
    before = read_jsonl(out / "all.jsonl")
    mtime = (out / "errors.jsonl").stat().st_mtime_ns
    sample.run(sampled_profile, progress=False)
    assert (out / "errors.jsonl").stat().st_mtime_ns == mtime  # fresh: nothing redone

    # Simulate a crash: manifest left incomplete, the last samples lost, a torn line.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["complete"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    lines = (out / "all.jsonl").read_text().splitlines(keepends=True)
    (out / "all.jsonl").write_text("".join(lines[:-5]) + lines[-5][:10])
    sample.run(sampled_profile, progress=False)
    after = read_jsonl(out / "all.jsonl")
    assert len(after) == len(before)
    assert sorted((r["id"], r["sample_id"]) for r in after) == sorted((r["id"], r["sample_id"]) for r in before)
    kept = {(r["id"], r["sample_id"]): r["response"] for r in before[:-5]}
    assert all(kept[k] == r["response"] for r in after if (k := (r["id"], r["sample_id"])) in kept)


def test_notebook_01_runs_under_papermill(sampled_profile, tmp_path):
    from spotlib import reproduce

    yaml_path = profile_yaml(sampled_profile, tmp_path / "test_profile.yaml")
    code = reproduce.main(["--profile", str(yaml_path), "--stages", "01"])
    assert code == 0
    executed = sampled_profile.out / "notebooks" / "01_sample.ipynb"
    nb = json.loads(executed.read_text())
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def test_sampling_reports_samples_done_of_total(sampled_profile, tmp_path, monkeypatch):
    """Under the runner (progress to a file), stage 01 reports samples k/N across its chunks."""
    import shutil

    from spotlib.config import load_profile

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    shutil.copytree(sampled_profile.base_model_path(), profile.base_model_path())
    monkeypatch.setenv("SPOTLIB_PROGRESS", str(tmp_path / "progress.jsonl"))
    summary = sample.run(profile, progress=True)
    bars = [r for r in read_jsonl(tmp_path / "progress.jsonl") if r["desc"] == "samples"]
    total = profile.sample.num_problems * profile.sample.n
    assert bars[0]["n"] == 0 and bars[-1]["n"] == bars[-1]["total"] == total and bars[-1]["closed"]
    assert bars[-1]["postfix"]["wrong"] == str(summary["errors"])
