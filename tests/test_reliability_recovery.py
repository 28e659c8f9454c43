"""Artifacts a stage reads are verified and made again when they are its own; saved files are
readable as the umask allows; a moved outputs folder is the same study."""
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pairs_helpers import write_fake_stage01
from spotlib.config import REPO_ROOT, load_profile
from spotlib.io import JsonlAppender, Manifest, read_jsonl, write_jsonl
from spotlib.stages import rectify


def _cut_mid_line(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n", len(data) // 2) - 5])   # mid-record, no newline


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


# ------------------------------------------------------------ caches and torn outputs
def test_corrupt_reference_cache_is_recomputed_across_processes(tmp_path):
    from accelerate import Accelerator

    from spotlib.launch.shared_cache import cached_across_processes

    accelerator = Accelerator(cpu=True)
    path = tmp_path / "reference" / "logps-x.pt"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 not a whole zip archive")
    value = cached_across_processes(accelerator, path, lambda: {"chosen": torch.arange(3)})
    assert torch.equal(value["chosen"], torch.arange(3))
    again = cached_across_processes(accelerator, path, lambda: 1 / 0)   # whole now: loaded, not computed
    assert torch.equal(again["chosen"], torch.arange(3))


def test_manifest_is_not_fresh_once_an_output_is_cut(tmp_path):
    stage = tmp_path / "out" / "01_x"
    stage.mkdir(parents=True)
    write_jsonl(stage / "rows.jsonl", [{"i": i, "text": "x" * 40} for i in range(20)])
    Manifest(stage, params={"a": 1}).write(complete=True, outputs=("rows.jsonl",))
    assert Manifest(stage, params={"a": 1}).is_fresh()
    _cut_mid_line(stage / "rows.jsonl")
    assert not Manifest(stage, params={"a": 1}).is_fresh()


def test_torn_line_in_an_append_log_is_dropped_and_done_again(tmp_path):
    path = tmp_path / "cache.jsonl"
    write_jsonl(path, [{"key": i} for i in range(6)])
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:4]                      # cut in the middle of the file (an edit, a bad copy)
    path.write_text("\n".join(lines) + "\n")
    with JsonlAppender(path, key_fn=lambda r: r["key"]) as sink:
        assert 2 not in sink and len(sink.records) == 5
        sink.append({"key": 2})
    assert sorted(r["key"] for r in read_jsonl(path)) == list(range(6))


@pytest.mark.parametrize("output", ["rectified.jsonl", "direct.jsonl"])
def test_torn_stage_02_output_is_written_again_from_its_cache(tmp_path, output):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    write_fake_stage01(profile, 20)
    first = rectify.run(profile, progress=False)
    path = profile.stage_dir("02_rectify") / output
    whole = path.read_bytes()
    _cut_mid_line(path)
    again = rectify.run(profile, progress=False)
    assert path.read_bytes() == whole                      # made again, not trusted
    assert again["rectify_run"]["requested"] == 0          # from the stage's cache: nothing asked anew
    assert again["rectified_ok"] == first["rectified_ok"]


def test_torn_stage_01_output_names_file_line_and_the_stage_to_rerun(tmp_path):
    from spotlib.io import DataError

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    write_fake_stage01(profile, 20)
    errors = profile.stage_dir("01_sample") / "errors.jsonl"
    _cut_mid_line(errors)
    with pytest.raises(DataError, match=rf"{errors}:\d+: malformed JSON line.*run stage 01_sample again"):
        rectify.run(profile, progress=False)


@pytest.mark.slow
def test_torn_stage_01_output_is_written_again_by_stage_01(sampled_profile, tmp_path):
    """Also: a copied outputs folder is the same study (stage 01 fresh there, nothing sampled anew)."""
    from spotlib.stages import sample

    copy = tmp_path / "moved"
    shutil.copytree(sampled_profile.out, copy)
    profile = load_profile("test", overrides={"output_dir": str(copy)})
    manifest = lambda: json.loads((copy / "01_sample" / "manifest.json").read_text())  # noqa: E731
    written = manifest()["written_at"]
    sample.run(profile, progress=False)
    assert manifest()["written_at"] == written             # fresh in its new place
    errors = copy / "01_sample" / "errors.jsonl"
    whole = errors.read_bytes()
    _cut_mid_line(errors)
    sample.run(profile, progress=False)
    assert errors.read_bytes() == whole


# ------------------------------------------------------------ run keys and moved folders
def test_manifest_key_does_not_hold_the_outputs_folder(tmp_path):
    def key(out):
        return Manifest(out / "01_sample", params={"data_files": f"{out}/assets/dapo.jsonl"},
                        inputs={"student": "abc"}).key()

    assert key(tmp_path / "a") == key(tmp_path / "b")
    assert key(tmp_path / "a")["params_hash"] != Manifest(tmp_path / "a" / "01_sample",
                                                          params={"data_files": "/elsewhere/dapo.jsonl"}).key()["params_hash"]


def test_run_key_does_not_hold_where_the_base_model_lies(tmp_path):
    from types import SimpleNamespace

    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import run_key

    profile = load_profile("test")
    for name in ("a", "b"):
        (tmp_path / name / "base_model").mkdir(parents=True)
    keys = {run_key(profile.train, profile.model, parse_run("spot_bco"), 0,
                    SimpleNamespace(data_key="same-data-and-reference", base_path=str(tmp_path / n / "base_model")), 4)
            for n in ("a", "b")}
    assert len(keys) == 1
    other = run_key(profile.train, profile.model, parse_run("spot_bco"), 0,
                    SimpleNamespace(data_key="other-reference", base_path=str(tmp_path / "a" / "base_model")), 4)
    assert other not in keys


def test_runs_marked_with_the_located_key_are_kept_in_place(tmp_path):
    """Studies trained before keys left out where they lie are not trained again where they are."""
    from types import SimpleNamespace

    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import _claim_run_dir, run_keys

    profile = load_profile("test")
    (tmp_path / "base_model").mkdir()
    inputs = SimpleNamespace(data_key="d", base_path=str(tmp_path / "base_model"))
    keys = run_keys(profile.train, profile.model, parse_run("spot_bco"), 0, inputs, 4)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_key.json").write_text(json.dumps(keys[1]))
    (run_dir / "model.safetensors").write_bytes(b"weights")
    _claim_run_dir(run_dir, keys)
    assert (run_dir / "model.safetensors").is_file()
    assert json.loads((run_dir / "run_key.json").read_text()) == keys[0]   # marked anew: movable from now on
    (run_dir / "run_key.json").write_text(json.dumps("another run"))
    _claim_run_dir(run_dir, keys)
    assert not (run_dir / "model.safetensors").exists()


def test_rl_run_key_names_the_start_model_by_content(tmp_path):
    from spotlib.rl.run_state import init_identity
    from spotlib.world.pretrain import save_untrained

    world = load_profile("test").world
    save_untrained(world, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert init_identity(tmp_path / "a") == init_identity(tmp_path / "b")
    assert init_identity("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


# ------------------------------------------------------------ file modes
def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


def test_saved_base_model_is_readable_as_the_umask_allows(tmp_path, umask_022):
    from spotlib.world.pretrain import save_untrained

    save_untrained(load_profile("test").world, tmp_path / "m")
    modes = _modes(tmp_path / "m")
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}


def test_trained_model_is_readable_as_the_umask_allows(tmp_path, umask_022):
    from pairs_helpers import micro_pair_inputs
    from spotlib.train.runspec import parse_run
    from spotlib.train.trainer import train_run

    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "train.per_device_batch": 1,
                                              "train.kl_probe_every": 0, "train.edit_diag_pairs": 0,
                                              "train.save_every": 1})
    inputs = micro_pair_inputs(profile, tmp_path)
    train_run(profile.train, profile.model, parse_run("spot_bco"), 0, inputs, tmp_path / "run", steps=2,
              device=profile.device, progress=False, stop_after=1)   # a checkpoint left behind
    checkpoint = _modes(tmp_path / "run")
    train_run(profile.train, profile.model, parse_run("spot_bco"), 0, inputs, tmp_path / "run", steps=2,
              device=profile.device, progress=False)
    final = _modes(tmp_path / "run")
    assert final["model.safetensors"] == 0o644
    assert {m for m in list(checkpoint.values()) + list(final.values())} == {0o644}


# ------------------------------------------------------------ the output lock in notebooks
HOLD = """
import sys, time
from spotlib.notebook import open_profile
open_profile({yaml!r}, output_dir="", progress=False)
print("holding", flush=True)
time.sleep(60)
"""


def _profile_yaml(tmp_path) -> Path:
    import yaml

    from spotlib.config import PARAMS_DIR

    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(tmp_path / "study"))
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_notebook_kernel_holds_the_output_lock(tmp_path, capsys):
    from spotlib import reproduce
    from spotlib.notebook import open_profile
    from spotlib.launch.output_lock import OutputLocked

    path = _profile_yaml(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("SPOTLIB_OUTPUT_LOCK_HELD", None)
    kernel = subprocess.Popen([sys.executable, "-c", HOLD.format(yaml=str(path))], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert "holding" in [kernel.stdout.readline().strip() for _ in range(2)]
        assert reproduce.main(["--profile", str(path), "--stages", "01"]) == 3   # refused, naming the kernel
        assert f"PID {kernel.pid}" in capsys.readouterr().err
        with pytest.raises(OutputLocked, match=f"notebook kernel \\(PID {kernel.pid}"):
            open_profile(str(path), output_dir="", progress=False)      # a second notebook too
    finally:
        kernel.kill()
        kernel.wait()
    open_profile(str(path), output_dir="", progress=False)     # the kernel is gone: free again
    open_profile(str(path), output_dir="", progress=False)     # and this kernel holds it already


def test_a_notebook_under_reproduce_uses_the_runs_lock(tmp_path, monkeypatch):
    from spotlib.notebook import open_profile
    from spotlib.launch.output_lock import output_lock

    path = _profile_yaml(tmp_path)
    with output_lock(tmp_path / "study"):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        script = f"from spotlib.notebook import open_profile; open_profile({str(path)!r}, output_dir='', progress=False)"
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_a_copied_outputs_folder_trains_nothing_again(sampled_profile, tmp_path):
    """Stages 02–04 in one folder, then the whole folder copied and a seed added: stage 04 there trains
    the new seed only (the stage is not fresh, so every run is looked up by its own key)."""
    from spotlib.stages import filter as pair_filter
    from spotlib.stages import train_methods

    first = tmp_path / "first"
    shutil.copytree(sampled_profile.out, first)
    overrides = {"train.tether_lr": None, "train.kl_probe_every": 0}
    profile = load_profile("test", overrides={"output_dir": str(first), **overrides})
    rectify.run(profile, progress=False)
    pair_filter.run(profile, progress=False)
    train_methods.run(profile, progress=False)
    copy = tmp_path / "copied"
    shutil.copytree(first, copy)
    weights = sorted((copy / "04_train_spot").rglob("model.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in weights}
    assert weights
    train_methods.run(load_profile("test", overrides={"output_dir": str(copy), "seeds": [0, 1], **overrides}),
                      progress=False)
    assert {p: p.stat().st_mtime_ns for p in weights} == stamps   # no model of seed 0 written again
    assert len(list((copy / "04_train_spot").rglob("seed1/model.safetensors"))) == len(weights)


def test_torn_stage_03_output_read_by_stage_04_names_the_stage_to_rerun(tmp_path):
    from spotlib.io import DataError
    from spotlib.train.data import load_examples
    from spotlib.train.runspec import parse_run

    write_jsonl(tmp_path / "pairs.jsonl", [{"id": str(i), "prompt": "p", "chosen": "c", "rejected": "r"}
                                           for i in range(8)])
    _cut_mid_line(tmp_path / "pairs.jsonl")
    with pytest.raises(DataError, match=r"pairs\.jsonl:\d+: malformed JSON line.*run stage 03_filter again"):
        load_examples(tmp_path, parse_run("spot_bco"))
