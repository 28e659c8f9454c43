"""The shipped base model: used in place of pre-training only for its world and intact weights;
`--rebuild` says whether pre-training again gives the same bits."""
from __future__ import annotations

import dataclasses
import json

import pytest

import spotlib.world.pretrain as pretrain_module
from spotlib.config import load_profile
from spotlib.io import file_sha256, weights_sha256
from spotlib.world import shipped
from spotlib.world.pretrain import build_base_model, ensure_base_model, world_hash

SHIPPED_TINY = shipped.ASSETS_DIR / "tiny-base"


@pytest.fixture(scope="module")
def test_world_assets(tmp_path_factory):
    """An assets folder shipping a base model of the test world (its shape, untrained: what matters
    here is the world hash and the recorded sha256)."""
    from spotlib.world.pretrain import save_untrained

    profile = load_profile("test")
    assets = tmp_path_factory.mktemp("assets")
    built = tmp_path_factory.mktemp("built") / "base_model"
    save_untrained(profile.world, built)
    (built / "manifest.json").write_text(json.dumps({"world_hash": world_hash(profile.world),
                                                     "weights_sha256": weights_sha256(built)}))
    shipped.ship(built, "test-base", assets)
    return assets


@pytest.fixture(scope="module")
def pretrained_assets(tmp_path_factory):
    """An assets folder shipping the test profile's base model, pre-trained here."""
    assets = tmp_path_factory.mktemp("assets")
    built = tmp_path_factory.mktemp("built") / "base_model"
    build_base_model(load_profile("test").world, built, progress=False)
    shipped.ship(built, "test-base", assets)
    return assets


def no_pretraining(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("pre-trained although a matching base model is shipped")
    monkeypatch.setattr(pretrain_module, "pretrain", fail)


def test_a_matching_shipped_model_is_installed_without_pretraining(tmp_path, test_world_assets, monkeypatch, capsys):
    monkeypatch.setattr(shipped, "ASSETS_DIR", test_world_assets)
    no_pretraining(monkeypatch)
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    path = ensure_base_model(profile)
    source = test_world_assets / "test-base"
    assert "no pre-training" in capsys.readouterr().out
    for file in source.iterdir():            # byte for byte: the same dir hash, the same run keys
        assert file_sha256(path / file.name) == file_sha256(file), file.name
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["world_hash"] == world_hash(profile.world)
    assert ensure_base_model(profile) == path   # and from then on it is the cached model


def test_another_world_or_altered_weights_pretrain_instead(tmp_path, test_world_assets, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(shipped, "ASSETS_DIR", test_world_assets)
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    other = profile.replace(world=dataclasses.replace(profile.world, seed=1))
    assert shipped.shipped_for(other.world) == (None, None)
    # the shipped files altered after they were recorded: named, and never used
    altered = tmp_path / "assets"
    shutil.copytree(test_world_assets, altered)
    weights = altered / "test-base" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "ASSETS_DIR", altered)
    folder, problem = shipped.shipped_for(profile.world)
    assert folder is None and "do not match the checksum" in problem
    class Pretrained(Exception):
        pass

    def pretrain(*args, **kwargs):
        raise Pretrained
    monkeypatch.setattr(pretrain_module, "pretrain", pretrain)
    with pytest.raises(Pretrained):
        ensure_base_model(profile)
    assert "not using the shipped base model" in capsys.readouterr().out
    assert not (profile.out / "base_model" / "manifest.json").exists()


def test_compare_with_shipped_names_both_digests(tmp_path, test_world_assets):
    profile = load_profile("test")
    source = test_world_assets / "test-base"
    same, verdict = shipped.compare_with_shipped(source, profile.world, test_world_assets)
    assert same is True and "EQUAL bit for bit" in verdict
    recorded = json.loads((source / "manifest.json").read_text())["weights_sha256"]
    digests = shipped.digests(source)
    assert digests["weights_sha256"] == recorded
    assert digests["model.safetensors"] == file_sha256(source / "model.safetensors") != recorded
    other = dataclasses.replace(profile.world, seed=1)
    assert shipped.compare_with_shipped(source, other, test_world_assets)[0] is None


@pytest.mark.slow
def test_rebuild_says_whether_pretraining_again_gives_the_shipped_bits(tmp_path, pretrained_assets, monkeypatch,
                                                                       capsys):
    """`python -m spotlib.world --rebuild` (what `make base-model` runs) on the test world: equal to the
    shipped weights (exit 0); against a shipped copy with other weights, different (exit 1)."""
    import shutil

    import yaml

    from spotlib.config import resolve_profile_path
    from spotlib.world.__main__ import main

    raw = yaml.safe_load(resolve_profile_path("test").read_text())
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(shipped, "ASSETS_DIR", pretrained_assets)
    assert main(["--profile", str(path), "--rebuild", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "EQUAL bit for bit" in out and '"weights_sha256"' in out and '"model.safetensors"' in out
    # a shipped copy whose weights are other bits (recorded as such): the rebuild says so
    other = tmp_path / "assets"
    shutil.copytree(pretrained_assets, other)
    from safetensors.torch import load_file, save_file
    weights = other / "test-base" / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights, metadata={"format": "pt"})
    manifest = json.loads((other / "test-base" / "manifest.json").read_text())
    manifest["weights_sha256"] = weights_sha256(other / "test-base")
    (other / "test-base" / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(shipped, "ASSETS_DIR", other)
    assert main(["--profile", str(path), "--rebuild", "--n", "1"]) == 1
    assert "DIFFERENT from the shipped one" in capsys.readouterr().out


def test_every_shipped_base_model_is_intact_and_made_by_a_profile():
    """Each base model under assets/ matches the sha256 it records, is a few MB, and its world hash is
    a profile's (a change of that profile's world needs `python -m spotlib.world --profile P --rebuild
    --ship NAME`; until then `make reproduce` pre-trains)."""
    from spotlib.config import PARAMS_DIR, ConfigError

    hashes = {}
    for path in sorted(PARAMS_DIR.glob("*.yaml")):
        try:
            profile = load_profile(path)
        except ConfigError:   # accelerate's launcher configs sit beside the profiles
            continue
        hashes[world_hash(profile.world)] = profile.name
    for manifest_path in sorted(shipped.ASSETS_DIR.glob("*/manifest.json")):
        folder = manifest_path.parent
        manifest = json.loads(manifest_path.read_text())
        assert manifest["world_hash"] in hashes, f"{folder}: made with world settings no profile has"
        assert weights_sha256(folder) == manifest["weights_sha256"], f"{folder}: weights differ from the record"
        assert sum(p.stat().st_size for p in folder.iterdir()) < 8 * 2**20
        assert shipped.shipped_for(load_profile(hashes[manifest["world_hash"]]).world)[0] == folder


def cpu_vendor(cpu: str) -> str:
    """'AMD' or 'Intel' (the first word of the model name, as `precision.cpu_model` gives it)."""
    return (cpu or "").replace("(R)", "").split()[0] if cpu else ""


@pytest.mark.slow
def test_rebuilding_the_tiny_base_model_gives_the_shipped_bits(tmp_path):
    """`make base-model`: pre-training the tiny profile's base model again (about 11 minutes on two
    quiet cores) gives weights equal to the shipped ones (assets/tiny-base) bit for bit on a CPU of the
    vendor that built them; on the other vendor's the fp32 reductions round differently (measured: AMD
    EPYC and Intel Xeon give two models), and the command must say DIFFERENT with both digests and
    exit 1 rather than pass the other model off as the shipped one."""
    import subprocess
    import sys

    import yaml

    from spotlib.config import resolve_profile_path
    from spotlib.precision import cpu_model
    raw = yaml.safe_load(resolve_profile_path("tiny").read_text())
    raw["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    built_on = json.loads((shipped.ASSETS_DIR / "tiny-base" / "manifest.json").read_text())["machine"]["cpu"]
    done = subprocess.run([sys.executable, "-m", "spotlib.world", "--profile", str(path), "--rebuild", "--n", "2"],
                          capture_output=True, text=True, timeout=3600)
    log = done.stdout[-2000:] + done.stderr[-2000:]
    if cpu_vendor(cpu_model()) == cpu_vendor(built_on):
        assert "EQUAL bit for bit" in done.stdout, log
        assert done.returncode == 0
    else:
        assert "DIFFERENT from the shipped one" in done.stdout and "rebuilt" in done.stdout, log
        assert done.returncode == 1


def test_cpu_vendor_reads_the_model_names_precision_records():
    assert cpu_vendor("AMD EPYC") == "AMD"
    assert cpu_vendor("Intel(R) Xeon(R) Platinum 8488C") == "Intel"
    assert cpu_vendor("") == ""


def test_the_run_plan_says_where_the_base_model_comes_from():
    """`make reproduce` prints its plan first: the tiny profile names its shipped copy, a world with none
    (the test profile) says it pre-trains."""
    from spotlib.reproduce import plan

    assert "the shipped copy assets/tiny-base/, no pre-training" in plan(load_profile("tiny"), [])
    assert "pre-trained here on first use" in plan(load_profile("test"), [])
