"""benchmarks/study_time.py's table: pre-training split out of stage 01, work counted per unit."""
import json
import sys

from spotlib.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import study_time  # noqa: E402


def _manifest(path, **body):
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps(body))


def test_rows_split_pretraining_out_of_01_and_count_runs_per_seed(tmp_path):
    _manifest(tmp_path / "base_model", stats={"total_wall_s": 600.0, "eval_wall_s": 20.0, "tokens": 4_000_000})
    _manifest(tmp_path / "01_sample", counts={"samples": 4000})
    _manifest(tmp_path / "04_train_spot", counts={"runs": 10, "seeds": 3})
    rows = study_time.rows_for(tmp_path, {"01_sample": 680.0, "04_train_spot": 400.0})
    by_name = {name: (seconds, work, unit) for name, seconds, work, unit in rows}
    assert by_name["pre-training (in 01)"] == (620.0, 4_000_000, "tokens")
    assert by_name["01_sample"][:2] == (60.0, 4000)               # sampling alone, not pre-training
    assert by_name["04_train_spot"][1] == 30                      # 10 methods x 3 seeds trained
    assert [r[0] for r in rows] == ["pre-training (in 01)", "01_sample", "04_train_spot"]


def test_a_stage_without_a_manifest_keeps_its_time_and_no_work(tmp_path):
    rows = study_time.rows_for(tmp_path, {"05_eval_forgetting": 12.5})
    assert rows == [("05_eval_forgetting", 12.5, None, "answers graded")]


def test_the_fresh_profile_writes_elsewhere_and_takes_the_seeds_asked_for(tmp_path):
    from spotlib.config import load_profile

    path = study_time.fresh_profile("test", tmp_path / "run", seeds=[3, 4], kernels="avx2")
    profile = load_profile(str(path))
    assert profile.seeds == [3, 4] and profile.world.cpu_kernels == "avx2"
    assert profile.output_dir == str(tmp_path / "run")
    assert load_profile(str(study_time.fresh_profile("test", tmp_path / "all"))).seeds == load_profile("test").seeds
