"""A stop request to the runner's own process, a full disk: one line each, work kept, a quiet console."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from spotlib.config import PARAMS_DIR, REPO_ROOT


def _profile_yaml(tmp_path, **world) -> Path:
    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(tmp_path / "out"))
    raw["world"].update(world)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_sigterm_to_the_runner_alone_stops_the_stage_in_one_line(tmp_path, signum=signal.SIGTERM, rc=143):
    """Only the runner is signalled (a scheduler or `kill`, not a terminal's Ctrl-C to the group): the
    kernel and every process it started stop too, and the console says how to resume."""
    path = _profile_yaml(tmp_path, pretrain_steps=4000)   # pre-training outlasts the test
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    runner = subprocess.Popen([sys.executable, "-m", "spotlib.reproduce", "--profile", str(path), "--stages", "01"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)   # its own group: nothing but the runner gets the signal
    progress = tmp_path / "out" / "01_sample" / "progress.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (progress.is_file() and "pre-training" in progress.read_text()):
        assert runner.poll() is None, runner.communicate()
        time.sleep(0.5)
    under = psutil.Process(runner.pid).children(recursive=True)
    assert under, "no kernel under the runner"
    os.kill(runner.pid, signum)
    signalled = time.time()
    out, err = runner.communicate(timeout=120)
    assert time.time() - signalled < 60
    assert runner.returncode == rc, err
    assert "Traceback" not in err and "without encryption" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    name = signal.Signals(signum).name
    assert lines[-1].startswith(f"stopped by {name} in stage 01_sample") and "run the same command again" in lines[-1]
    assert not [p for p in under if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _run_with(monkeypatch, tmp_path, failure, capsys):
    import papermill

    from spotlib import reproduce

    path = _profile_yaml(tmp_path)
    executed = tmp_path / "out" / "notebooks" / "01_sample.ipynb"
    executed.parent.mkdir(parents=True)
    executed.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    before = executed.read_text()

    def execute_notebook(source, output, **kwargs):
        Path(output).write_text('{"cells": [{"cell_type": "code", "sou')   # cut short by the full disk
        raise failure

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    rc = reproduce.main(["--profile", str(path), "--stages", "01"])
    err = capsys.readouterr().err
    return rc, err, executed.read_text() == before, list(executed.parent.glob(".*partial*"))


@pytest.mark.parametrize("where", ["saving the notebook", "inside the stage"])
def test_full_disk_ends_in_one_line_and_keeps_the_last_executed_notebook(tmp_path, monkeypatch, capsys, where):
    import papermill

    if where == "saving the notebook":
        failure = OSError(errno.ENOSPC, "No space left on device")
    else:
        failure = papermill.PapermillExecutionError(3, 1, "summary = sample.run(profile)", "OSError",
                                                     "[Errno 28] No space left on device", ["Traceback ..."])
    rc, err, kept, partial = _run_with(monkeypatch, tmp_path, failure, capsys)
    errors = [line for line in err.splitlines() if line.strip()]
    assert rc == 1 and len(errors) == 1 and "Traceback" not in err
    assert "disk is full" in errors[0] and "run the same command again" in errors[0]
    assert kept and not partial   # the torn notebook never replaced the whole one


def test_disk_full_is_recognised_through_chained_exceptions():
    from spotlib.launch.job_control import disk_full

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not save the notebook") from exc
    except RuntimeError as chained:
        assert disk_full(chained)
    assert not disk_full(OSError(errno.EACCES, "Permission denied"))


CHILD = "import time; time.sleep(60)"


def test_a_stop_request_is_passed_on_to_every_process_under_the_runner(monkeypatch):
    """SIGINT to this process while a stage's work waits on a child (the kernel, a pre-training child):
    the child gets SIGINT, the work ends, and the run is reported stopped."""
    from spotlib.launch import job_control

    monkeypatch.setattr(job_control, "GRACE_S", 0.2)
    started = []

    def work():
        child = subprocess.Popen([sys.executable, "-c", CHILD])
        started.append(child)
        return child.wait()

    def signal_soon():
        while not started:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    import threading
    threading.Thread(target=signal_soon, daemon=True).start()
    begun = time.time()
    with job_control.StopRequests() as stops, pytest.raises(job_control.Stopped) as info:
        job_control.run_stoppable(work, stops)
    assert info.value.signame == "SIGINT" and time.time() - begun < 20
    assert started[0].returncode == -signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handlers restored


def test_notebook_kernels_start_without_the_tcp_warning(tmp_path, capfd):
    import nbformat

    from spotlib.launch.job_control import execute_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    execute_notebook(str(tmp_path / "tiny.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                     progress_bar=False)
    out, err = capfd.readouterr()
    assert (tmp_path / "out.ipynb").is_file()
    assert "without encryption" not in out + err and "WARNING" not in err
