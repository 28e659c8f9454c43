"""The `spotlib` console command runs what the make targets run, with the same arguments."""
from __future__ import annotations

import re
import sys
import tomllib

import pytest

from spotlib import cli
from spotlib.config import REPO_ROOT


@pytest.mark.parametrize("argv, module, expected", [
    (["reproduce", "--profile", "tiny"], "spotlib.reproduce", ["--profile", "tiny"]),
    (["dry-run", "--profile", "paper", "--gpus", "8"], "spotlib.reproduce", ["--dry-run", "--profile", "paper",
                                                                            "--gpus", "8"]),
    (["base-model", "--profile", "tiny"], "spotlib.world.__main__", ["--rebuild", "--profile", "tiny"]),
    (["calibrate"], "spotlib.analysis.calibrate", []),
    (["sweep", "--profile", "test", "--seeds", "0"], "spotlib.stages.sweep", ["--profile", "test", "--seeds", "0"]),
])
def test_each_command_calls_the_make_targets_main(argv, module, expected, monkeypatch):
    import importlib

    calls = []
    target = importlib.import_module(module)
    # what a command that restarts itself on pinned kernels reads (sys.argv[1:]) is its own arguments
    monkeypatch.setattr(target, "main", lambda args: calls.append((args, sys.argv[1:])) or 3)
    monkeypatch.setattr(sys, "argv", ["spotlib", *argv])
    assert cli.main(argv) == 3                          # its exit status
    assert calls == [(expected, expected)]


def test_make_targets_and_commands_run_the_same_modules():
    makefile = (REPO_ROOT / "Makefile").read_text()
    for command, (module, first, _) in cli.COMMANDS.items():
        recipe = re.search(rf"^{command}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert recipe, f"no make target {command}"
        runs = module.removesuffix(".__main__")
        assert f"-m {runs} " in recipe.group(1) or f"-m {runs}\n" in recipe.group(1), (command, recipe.group(1))
        for arg in first:
            assert arg in recipe.group(1), (command, arg)


def test_the_console_script_is_declared():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["spotlib"] == "spotlib.cli:main"
    assert "tensorboard" in project["dependencies"]


def test_unknown_command_and_help(capsys):
    assert cli.main(["reproduc"]) == 2
    assert "unknown command 'reproduc'" in capsys.readouterr().err
    assert cli.main([]) == 0 and "dry-run" in capsys.readouterr().out


def test_tensorboard_opens_the_profiles_curves(tmp_path, monkeypatch, capsys):
    from spotlib.config import load_profile

    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    monkeypatch.setattr("spotlib.config.load_profile", lambda name: profile)
    assert cli.main(["tensorboard", "--profile", "test"]) == 2      # nothing trained yet: said, not started
    assert "no training curves yet" in capsys.readouterr().err
    (profile.out / "tensorboard").mkdir(parents=True)
    started = []
    monkeypatch.setattr(cli.os, "execv", lambda exe, args: started.append(args))
    cli.main(["tensorboard", "--profile", "test", "--port", "6007"])
    assert started == [[sys.executable, "-m", "tensorboard.main", "--logdir_spec",
                        f"test:{profile.out / 'tensorboard'}", "--port", "6007"]]
