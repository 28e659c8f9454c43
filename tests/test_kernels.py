"""world.cpu_kernels: the CPU instruction set a study computes with is the profile's, not the CPU's."""
import json

import pytest

from spotlib import precision
from spotlib.config import ConfigError, load_profile
from spotlib.world.pretrain import ensure_base_model, world_hash


def test_each_level_caps_torch_mkl_and_onednn_and_native_changes_nothing():
    env = precision.kernel_env("avx2")
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2,STRICT",
                   "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert precision.kernel_env_spec("avx2") == env       # what the world hash holds
    assert precision.kernel_env("native") == {}
    with pytest.raises(ValueError, match="world.cpu_kernels"):
        precision.kernel_env("sse4")


@pytest.mark.parametrize("cpu, level", [("aarch64", "avx2"), ("avx2", "avx512"), ("x86_64", "avx2")])
def test_a_cpu_without_the_pinned_kernels_is_told_before_any_work(monkeypatch, cpu, level):
    monkeypatch.setattr(precision, "cpu_isa", lambda: cpu)
    with pytest.raises(precision.KernelsUnavailable, match="world.cpu_kernels: native"):
        precision.kernel_env(level)


def test_an_unknown_level_in_a_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="world.cpu_kernels"):
        load_profile("test", overrides={"world.cpu_kernels": "avx1024"})


def test_the_world_hash_holds_the_instruction_set_the_model_is_computed_with(monkeypatch):
    world = load_profile("test").world
    pinned = {level: world_hash(world.__class__(**{**world.__dict__, "cpu_kernels": level}))
              for level in ("avx2", "avx512")}
    assert pinned["avx2"] != pinned["avx512"]
    native = {}
    for cpu in ("avx2", "avx512"):          # native: a model per CPU kind, never mistaken for another
        monkeypatch.setattr(precision, "cpu_isa", lambda cpu=cpu: cpu)
        native[cpu] = world_hash(world)
        assert world_hash(world.__class__(**{**world.__dict__, "cpu_kernels": "avx2"})) == pinned["avx2"]
    assert native["avx2"] != native["avx512"]
    assert not set(native.values()) & set(pinned.values())   # pinned also pins MKL's reproducible path


def test_pinned_kernels_pretrain_in_a_child_that_has_them_and_reproduce_bit_for_bit(tmp_path):
    """The test process runs on this CPU's own kernels; a pinned profile's base model is built in a
    child started on AVX2 kernels (the manifest says so), twice the same weights — once on one thread,
    once on two (MKL's strict path: the thread count does not change a bit) — and reused."""
    def build(name, threads=1):
        profile = load_profile("test", overrides={"world.cpu_kernels": "avx2", "world.num_threads": threads,
                                                  "output_dir": str(tmp_path / name)})
        out = ensure_base_model(profile, progress=False)
        return out, json.loads((out / "manifest.json").read_text())

    out, first = build("a")
    assert first["stats"]["machine"]["kernels"] == "AVX2"
    assert first["world"]["cpu_kernels"] == "avx2"
    written = (out / "model.safetensors").stat().st_mtime_ns
    _, second = build("b", threads=2)
    assert second["stats"]["threads"] == 2
    assert second["weights_sha256"] == first["weights_sha256"]
    again, _ = build("a")                    # cached: same hash, weights intact
    assert (again / "model.safetensors").stat().st_mtime_ns == written


@pytest.mark.slow
def test_the_base_model_command_restarts_itself_on_the_pinned_kernels(tmp_path):
    """`python -m spotlib.world` on a pinned profile: one process on AVX2 kernels pre-trains and scores
    (no child pre-training), and the manifest says AVX2."""
    import subprocess
    import sys

    import yaml

    from spotlib.config import resolve_profile_path
    raw = yaml.safe_load(resolve_profile_path("test").read_text())
    raw["world"]["cpu_kernels"] = "avx2"
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "spotlib.world", "--profile", str(path), "--n", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "restarting on avx2 kernels" in done.stderr
    assert "child process" not in done.stdout + done.stderr
    manifest = json.loads((tmp_path / "out" / "base_model" / "manifest.json").read_text())
    assert manifest["stats"]["machine"]["kernels"] == "AVX2"
    assert '"T=0.7"' in done.stdout


def test_make_lab_gets_the_profiles_kernel_environment():
    import subprocess
    import sys

    def words(profile):
        done = subprocess.run([sys.executable, "-m", "spotlib.reproduce", "--kernel-env", "--profile", profile],
                              capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert "ATEN_CPU_CAPABILITY=avx2" in words("tiny") and "MKL_CBWR=AVX2,STRICT" in words("tiny")
    assert words("test") == []                       # native: nothing to set


def test_a_trained_runs_cache_key_holds_the_kernels_it_computes_with(monkeypatch):
    """A run trained in a notebook kernel on the CPU's own kernels must not pass for one trained on
    the profile's pinned kernels (their weights differ): the run key includes the kernel signature."""
    from spotlib.train.runspec import plan_runs
    from spotlib.train.trainer import RunInputs, run_key
    profile = load_profile("test")
    run = plan_runs(profile.train)[0]
    inputs = RunInputs(data=None, ref_chosen=None, ref_rejected=None, base_path="base", data_key="d")
    monkeypatch.setattr(precision, "_ENV_AT_START", {})                 # started on the CPU's own kernels
    here = run_key(profile.train, profile.model, run, 0, inputs, 4)
    assert run_key(profile.train, profile.model, run, 0, inputs, 4) == here
    monkeypatch.setattr(precision, "_ENV_AT_START", {"MKL_CBWR": "AVX2,STRICT", "ATEN_CPU_CAPABILITY": "avx2"})
    pinned = run_key(profile.train, profile.model, run, 0, inputs, 4)
    assert pinned != here and precision.kernel_signature()["MKL_CBWR"] == "AVX2,STRICT"
