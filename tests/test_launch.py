"""One launcher for every distributed relaunch: stages 04 and 06 build and run their commands in
`spotlib.launch.relaunch` (`launch_command` under both), and the accelerate config they pass names
a DeepSpeed file that exists from the folder the launcher runs in."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import yaml

from spotlib.launch import relaunch
from spotlib.config import REPO_ROOT, load_profile
from spotlib.stages import rl_init


def _paper_on_gpus(tmp_path, monkeypatch, nodes: int = 1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    return load_profile("paper", overrides={"output_dir": str(tmp_path / "out"), "hardware.nodes": nodes})


def test_stages_04_and_06_build_their_commands_with_one_function(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOT_MAIN_PORT", "29512")  # else each command picks its own free port
    profile = _paper_on_gpus(tmp_path, monkeypatch)
    calls = []
    real = relaunch.launch_command

    def recording(module_args, **kwargs):
        calls.append(module_args[0])
        return real(module_args, **kwargs)

    monkeypatch.setattr(relaunch, "launch_command", recording)
    stage04 = relaunch.training_command(profile)
    stage06 = relaunch.grpo_command(profile, rl_init.num_processes(profile), tmp_path / "p.yaml")
    assert calls == ["spotlib.stages.train_methods", "spotlib.stages.rl_init"]
    # The same launcher, the same layout: only the module and its arguments differ.
    head04, head06 = stage04[:stage04.index("-m", 3)], stage06[:stage06.index("-m", 3)]
    assert [a for a in head04 if not a.endswith(".yaml")] == [a for a in head06 if not a.endswith(".yaml")]


@pytest.mark.parametrize("stage", ["04", "06"])
def test_the_deepspeed_file_exists_from_the_launch_folder(tmp_path, monkeypatch, stage):
    profile = _paper_on_gpus(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)  # wherever the stage is started from (papermill: notebooks/)
    command = relaunch.training_command(profile) if stage == "04" else \
        relaunch.grpo_command(profile, 8, tmp_path / "p.yaml")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    config = yaml.safe_load(Path(command[command.index("--config_file") + 1]).read_text())
    assert config["distributed_type"] == "DEEPSPEED"
    json_path = Path(config["deepspeed_config"]["deepspeed_config_file"])
    monkeypatch.chdir(REPO_ROOT)  # the launcher's working folder (run_launched)
    assert json_path.is_file(), json_path
    assert json.loads(json_path.read_text())["zero_optimization"]["stage"] == 2


def test_two_nodes_meet_by_c10d_rendezvous(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOT_MAIN_ADDRESS", "10.0.0.1")
    monkeypatch.setenv("SPOT_MAIN_PORT", "29511")
    monkeypatch.setenv("SPOT_NODE_RANK", "1")
    profile = _paper_on_gpus(tmp_path, monkeypatch, nodes=2)
    command = relaunch.training_command(profile)
    value = lambda flag: command[command.index(flag) + 1]  # noqa: E731
    assert value("--num_processes") == "16" and value("--num_machines") == "2" and value("--machine_rank") == "1"
    assert value("--main_process_ip") == "10.0.0.1" and value("--main_process_port") == "29511"
    assert value("--rdzv_backend") == "c10d" and value("--deepspeed_multinode_launcher") == "standard"
    assert command[-2:] == ["--processes", "16"]  # the launched processes check the world size
    config = yaml.safe_load(Path(value("--config_file")).read_text())
    assert config["num_machines"] == 2 and config["same_network"] is False

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = relaunch.launch_command(["m"], processes=1, launcher="torchrun", accelerate_config=None,
                                config_copy=tmp_path / "c.yaml", nodes=relaunch.Nodes.from_env(2))
    assert cpu[cpu.index("--nnodes") + 1] == "2" and cpu[cpu.index("--node_rank") + 1] == "1"
    assert cpu[cpu.index("--rdzv_endpoint") + 1] == "10.0.0.1:29511"


def test_node_settings_are_checked():
    with pytest.raises(ValueError, match="SPOT_MAIN_ADDRESS"):
        relaunch.Nodes.from_env(2, env={})
    with pytest.raises(ValueError, match="node rank 2"):
        relaunch.Nodes.from_env(2, env={"SPOT_MAIN_ADDRESS": "a", "SPOT_NODE_RANK": "2"})
    assert relaunch.Nodes.from_env(2, env={"MASTER_ADDR": "h", "NODE_RANK": "1"}).main_port == relaunch.DEFAULT_PORT


def test_only_the_launcher_module_starts_a_launch():
    """No module but `spotlib.launch.relaunch` builds a launch command or runs one: a stage asks it."""
    package = REPO_ROOT / "spotlib"
    home = package / "launch" / "relaunch.py"
    callers = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and path != home:
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if name in ("launch_command", "run_launched", "resolved_accelerate_config"):
                    callers.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} calls {name}")
    assert not callers, "launches built outside spotlib/launch/relaunch.py:\n" + "\n".join(callers)
