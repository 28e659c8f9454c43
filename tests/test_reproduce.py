import subprocess
import sys

import pytest

from spotlib import reproduce
from spotlib.config import ConfigError, load_profile


def test_paper_dry_run_prints_plan_without_gpus():
    proc = subprocess.run([sys.executable, "-m", "spotlib.reproduce", "--profile", "paper", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in ("Qwen/Qwen3-8B", "DAPO-Math-17k-Processed", "gemini-2.5-pro", "GEMINI_API_KEY",
                     "01_sample", "CUDA device(s) visible", "report.md"):
        assert expected in out


def test_unknown_profile_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "spotlib.reproduce", "--profile", "nope", "--dry-run"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown profile 'nope'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_stage_selection():
    stages = reproduce.STAGES
    assert [s.name for s in reproduce.select(stages, ["01", "rectify"])] == ["01_sample", "02_rectify"]
    with pytest.raises(ConfigError, match="unknown stage"):
        reproduce.select(stages, ["99"])


def test_auto_profile_without_gpu(monkeypatch):
    monkeypatch.setattr(reproduce, "cuda_devices", lambda: 0)
    assert reproduce.pick_profile("auto") == "tiny"
    monkeypatch.setattr(reproduce, "cuda_devices", lambda: 8)
    assert reproduce.pick_profile("auto") == "paper"
    assert reproduce.pick_profile("tiny") == "tiny"


def test_plan_lists_every_available_stage():
    profile = load_profile("tiny")
    text = reproduce.plan(profile, reproduce.available_stages())
    for stage in reproduce.available_stages():
        assert stage.name in text
