"""Precision and threads are the profile's: the CPU's capabilities never change them."""
import dataclasses
import os
import json

import pytest
import torch

from spotlib import precision
from spotlib.config import load_profile
from spotlib.world.pretrain import ensure_base_model, world_hash


@pytest.mark.parametrize("wanted", [False, True])
def test_the_choice_is_the_profiles_whatever_the_cpu(monkeypatch, capsys, wanted):
    chosen = {}
    for native in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        precision._warned.clear()
        chosen[native] = precision.use_bf16("cpu", wanted, "train.bf16_autocast")
        warned = "train.bf16_autocast" in capsys.readouterr().err
        assert warned == (wanted and not native)  # a warning, one line, only for bf16 without native bf16
    assert chosen == {True: wanted, False: wanted}


def test_a_base_model_is_the_same_on_either_cpu(tmp_path, monkeypatch):
    """The world pre-trains bit for bit alike and records the same precision and hash."""
    base = load_profile("test")
    world = dataclasses.replace(base.world, pretrain_steps=3, manifest_eval_items=0)
    results = {}
    for native in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        profile = base.replace(world=world, output_dir=str(tmp_path / f"native_{native}"))
        path = ensure_base_model(profile, progress=False)
        manifest = json.loads((path / "manifest.json").read_text())
        from safetensors.torch import load_file
        results[native] = (manifest["world_hash"], manifest["stats"]["precision"], manifest["stats"]["threads"],
                           load_file(path / "model.safetensors"))
    (hash_a, prec_a, threads_a, weights_a), (hash_b, prec_b, threads_b, weights_b) = results.values()
    assert (hash_a, prec_a, threads_a) == (hash_b, "fp32", world.num_threads)
    assert prec_b == "fp32" and threads_b == threads_a
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_precision_and_threads_are_in_the_world_hash():
    world = load_profile("test").world
    assert world_hash(world) != world_hash(dataclasses.replace(world, bf16_autocast=not world.bf16_autocast))
    assert world_hash(world) != world_hash(dataclasses.replace(world, num_threads=world.num_threads + 1))


def test_tiny_profile_is_fp32_everywhere_and_recorded():
    tiny = load_profile("tiny")
    record = precision.record(tiny)
    assert {record["world_pretrain"]["precision"], record["train"]["precision"], record["rl"]["precision"]} == {"fp32"}
    # Two pre-training threads: the profile's choice, recorded as such (on the pinned kernels' strict
    # MKL path 1 and 2 threads make the same weights; tests/test_kernels.py).
    assert record["world_pretrain"]["threads"] == tiny.world.num_threads == 2
    # AVX2 kernels on every x86 CPU: the AVX-512 kernels made a different base model of the same world.
    assert record["cpu_kernels"] == tiny.world.cpu_kernels == "avx2"


def test_autocast_for_follows_the_flag_only():
    x = torch.randn(4, 4)
    with precision.autocast_for("cpu", True):
        assert (x @ x).dtype == torch.bfloat16
    with precision.autocast_for("cpu", False):
        assert (x @ x).dtype == torch.float32


def test_the_machine_record_names_the_kernels_torch_dispatches_to():
    """A run on lowered kernels (ATEN_CPU_CAPABILITY) says so in every manifest's machine record."""
    import subprocess
    import sys

    code = "from spotlib import precision; print(precision.machine()['kernels'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "DEFAULT"
