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


def test_a_shipped_base_model_is_no_pretraining_of_this_run(tmp_path):
    """With the repository's shipped copy installed, the base model's manifest records the pre-training
    that made the copy; the table gives this run no pre-training and 01 its whole time."""
    from spotlib.config import load_profile
    from spotlib.world import shipped

    world = load_profile("tiny").world
    source, problem = shipped.shipped_for(world)
    assert source is not None, problem
    (tmp_path / "base_model").mkdir()
    (tmp_path / "base_model" / "manifest.json").write_bytes((source / "manifest.json").read_bytes())
    _manifest(tmp_path / "01_sample", counts={"samples": 4000})
    assert study_time.installed_from_shipped(tmp_path, world)
    rows = study_time.rows_for(tmp_path, {"01_sample": 70.0}, shipped_base=True)
    assert rows == [("base model: shipped copy", 0.0, None, "-"), ("01_sample", 70.0, 4000, "samples")]

    pretrained = json.loads((source / "manifest.json").read_text())
    pretrained["stats"]["total_wall_s"] += 1.0   # a base model pre-trained by this run: another manifest
    (tmp_path / "base_model" / "manifest.json").write_text(json.dumps(pretrained))
    assert not study_time.installed_from_shipped(tmp_path, world)
