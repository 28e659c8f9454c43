"""One run per output folder; Ctrl-C, a dead kernel and bad input end in one clear line; group-readable files."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from spotlib import reproduce
from spotlib.config import PARAMS_DIR, load_profile
from spotlib.io import JsonlAppender, Manifest, atomic_path, write_json_atomic, write_jsonl
from spotlib.plan.validate import validate, writable_problem


def _profile_file(tmp_path, **changes):
    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update({"name": "test", "output_dir": str(tmp_path / "out")})
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _hold_lock(out):
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from spotlib.reproduce import output_lock
        with output_lock(Path({str(out)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    """Finding 4: a second run gets one line naming the holder; nothing of it runs."""
    path = _profile_file(tmp_path)
    holder = _hold_lock(tmp_path / "out")
    try:
        assert reproduce.main(["--profile", str(path), "--stages", "01"]) == 3
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"PID {holder.pid}" in err and "started 20" in err and "in use by another run" in err
    assert not (tmp_path / "out" / "01_sample").exists()


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    holder = _hold_lock(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert str(holder.pid) in (out / reproduce.LOCK_NAME).read_text()   # the dead run's record is still there
    with reproduce.output_lock(out):
        assert f'"pid": {os.getpid()}' in (out / reproduce.LOCK_NAME).read_text()
        with pytest.raises(reproduce.OutputLocked, match=f"PID {os.getpid()}"):
            with reproduce.output_lock(out):   # a second holder, even in this process, is refused
                pass


def test_ctrl_c_ends_in_one_line(tmp_path, capsys, monkeypatch):
    path = _profile_file(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "run_stage", interrupted)
    assert reproduce.main(["--profile", str(path), "--stages", "01"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err.splitlines()[0]] and "interrupted in stage 01_sample" in err
    assert "run the same command again to resume" in err and "Traceback" not in err


def test_interrupted_kernel_and_dead_kernel_end_in_one_line(tmp_path, capsys, monkeypatch):
    import papermill
    from nbclient.exceptions import DeadKernelError

    path = _profile_file(tmp_path)
    raised = [papermill.PapermillExecutionError(0, 1, "", "KeyboardInterrupt", "", []), DeadKernelError("gone")]

    def execute(*args, **kwargs):
        raise raised.pop(0)

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    assert reproduce.main(["--profile", str(path), "--stages", "01"]) == 130
    assert "interrupted in stage 01_sample" in capsys.readouterr().err
    assert reproduce.main(["--profile", str(path), "--stages", "02"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "its kernel died" in err and "run the same command again" in err


def test_paper_profile_without_gpus_stops_before_any_stage(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("spotlib.plan.validate.cuda_devices", lambda: 0)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    raw = yaml.safe_load((PARAMS_DIR / "paper.yaml").read_text())
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(raw))
    started = time.perf_counter()
    assert reproduce.main(["--profile", str(path), "--stages", "01"]) == 2
    assert time.perf_counter() - started < 10
    err = capsys.readouterr().err
    assert "needs CUDA GPUs (device: cuda)" in err and "GEMINI_API_KEY" not in err   # 02 not selected
    assert not (tmp_path / "out").exists()


def test_unwritable_output_folder_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "is not a folder" in writable_problem(blocker / "out")
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    assert "is not writable" in writable_problem(tmp_path / "out")
    assert writable_problem.__module__ == "spotlib.plan.validate"


BAD_INPUTS = [
    # (what, profile change or file text, expected message fragment)
    ("empty profile file", "", "the profile file is empty"),
    ("lr: 0", {"train.lr": {"default": 0}}, "key train.lr.default: expected a value > 0, got 0.0"),
    ("lr: -1e-4", {"train.lr": {"default": -1e-4}}, "key train.lr.default: expected a value > 0"),
    ("seeds: []", {"seeds": []}, "key seeds: expected at least one seed"),
    ("num_problems: -5", {"sample.num_problems": -5}, "key sample.num_problems: expected a value > 0, got -5"),
    ("unknown method", {"train.methods": ["spot_bco", "sftt"]}, "key train.methods"),
    ("unknown dtype", {"model.dtype": "float8"}, "key model.dtype: 'float8' is not one of"),
    ("unknown benchmark", {"eval.benchmarks": ["arith", "aime99"]}, "key eval.benchmarks: unknown 'aime99'"),
    ("unknown RL start", {"rl.init_methods": ["base", "dpo"]}, "key rl.init_methods: 'dpo'"),
    ("k: 0", {"eval.k": {"default": 0}}, "key eval.k.default: expected a value > 0"),
    ("rl.lr: 0", {"rl.lr": 0}, "key rl.lr: expected a value > 0"),
    ("max_steps: 0", {"train.max_steps": 0}, "key train.max_steps: expected a value > 0"),
]


@pytest.mark.parametrize("what,change,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_clear_line_at_dry_run(tmp_path, capsys, what, change, expected):
    """Finding 7: each bad input stops `--dry-run` with exit 2 and one line naming the file and key."""
    if isinstance(change, str):
        path = tmp_path / "profile.yaml"
        path.write_text(change)
    else:
        path = _profile_file(tmp_path, **change)
    assert reproduce.main(["--profile", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}") and expected in err, err


def test_missing_key_variable_is_named_at_dry_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPOT_UNSET_KEY", raising=False)
    path = _profile_file(tmp_path, **{"oracle.kind": "openai", "oracle.base_url": "http://x/v1",
                                      "oracle.api_key_env": "SPOT_UNSET_KEY"})
    assert reproduce.main(["--profile", str(path), "--dry-run"]) == 0
    assert "not ready: environment variable SPOT_UNSET_KEY (oracle.api_key_env) is not set" in capsys.readouterr().out
    assert reproduce.main(["--profile", str(path), "--stages", "02"]) == 2
    assert validate(load_profile(path), ["01_sample"]) == []


def test_dtype_names_match_the_loader():
    from spotlib.config import DTYPE_NAMES
    from spotlib.models import _DTYPES

    assert set(DTYPE_NAMES) == set(_DTYPES)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_are_readable_by_the_group(tmp_path, umask):
    """Finding 8: files renamed from temp files get the umask's mode, not mkstemp's 0600."""
    old = os.umask(umask)
    try:
        write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])
        write_json_atomic(tmp_path / "b.json", {"x": 1})
        Manifest(tmp_path / "stage", params={}).write()
        with atomic_path(tmp_path / "c.pt") as tmp:
            tmp.write_bytes(b"x")
        with JsonlAppender(tmp_path / "d.jsonl", key_fn=lambda r: r["x"]) as sink:
            sink.append({"x": 1})
    finally:
        os.umask(old)
    for name in ("a.jsonl", "b.json", "stage/manifest.json", "c.pt", "d.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
