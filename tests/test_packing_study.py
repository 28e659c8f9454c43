"""benchmarks/packing_study.py: the twin run's setup and the side-by-side reading of two main tables."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

SPEC = importlib.util.spec_from_file_location("packing_study", Path(__file__).resolve().parents[1] / "benchmarks"
                                              / "packing_study.py")
packing_study = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(packing_study)


def _row(run: str, mean: float, se: float) -> dict:
    row = {"run": run}
    for score in packing_study.SCORES:
        row[score], row[f"{score}_se"] = str(mean), str(se)
    return row


def test_a_difference_beyond_the_combined_standard_errors_is_flagged():
    padded = {"base": _row("base", 70.0, 1.0), "sft": _row("sft", 72.0, 1.0)}
    packed = {"base": _row("base", 70.0, 1.0), "sft": _row("sft", 75.0, 1.0)}   # +3.0 > 2 * sqrt(2) = 2.83
    rows, cells, beyond = packing_study.compare_tables(padded, packed, 2.0)
    assert cells == 10 and beyond == 5
    assert all("within" in r for r in rows if r.startswith("| base"))
    assert all("**beyond**" in r and "+3.0" in r for r in rows if r.startswith("| sft"))
    _, _, beyond_wide = packing_study.compare_tables(padded, packed, 3.0)   # 3 SE = 4.24: within
    assert beyond_wide == 0


def test_stage04_counts_sum_every_run(tmp_path):
    runs = [{"run": "a", "tokens_real": 76, "tokens_computed": 100, "train_seconds": 1.5},
            {"run": "b", "tokens": 50, "train_seconds": 0.5}]   # a run from before the counts: tokens for both
    (tmp_path / "04_train_spot").mkdir()
    (tmp_path / "04_train_spot" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    assert packing_study.stage04_counts(tmp_path) == {"tokens_real": 126, "tokens_computed": 150,
                                                       "train_seconds": 2.0, "runs": 2}


def test_the_twin_flips_packing_and_starts_from_the_same_stages(tmp_path):
    source, twin = tmp_path / "run", tmp_path / "twin"
    for name in packing_study.COPIED:
        (source / name).mkdir(parents=True)
        (source / name / "marker.txt").write_text(name)
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"train": {"packing": False, "lr": {"default": 1e-5}}}))
    path, packing = packing_study.twin_profile(profile, source, twin)
    raw = yaml.safe_load(path.read_text())
    assert packing is True and raw["train"]["packing"] is True and raw["output_dir"] == str(twin)
    assert raw["train"]["lr"] == {"default": 1e-5}
    assert all((twin / name / "marker.txt").read_text() == name for name in packing_study.COPIED)


def test_a_missing_stage_names_what_to_run(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("train: {packing: true}\n")
    with pytest.raises(FileNotFoundError, match="run the profile first"):
        packing_study.twin_profile(profile, tmp_path / "nothing", tmp_path / "twin")
