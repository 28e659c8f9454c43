"""Base models the repository ships (`assets/<name>/`), used in place of pre-training when they match.

A shipped folder is a base model as `build_base_model` saved it — config, weights, tokenizer —
byte for byte, with its `manifest.json` (world hash, `weights_sha256`, pre-training stats,
held-out scores). It stands in for pre-training a profile only when the profile's world hash
equals the manifest's (every world setting, the recipe and the CPU kernels: what would make the
model) and the weights' sha256 equals the one recorded (the files are what was shipped): keyed
by what made it and by its content, never by a profile's name.

Two digests are about: `weights_sha256` (what every manifest and summary records:
`spotlib.io.weights_sha256`, over config.json and the weight files) and the sha256 of
model.safetensors alone (what `sha256sum model.safetensors` prints). `digests` gives both;
`python -m spotlib.world` prints them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from spotlib.config import REPO_ROOT
from spotlib.io import file_sha256, weights_problem, weights_sha256

from .recipe import world_hash

ASSETS_DIR = REPO_ROOT / "assets"
MANIFEST = "manifest.json"


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def candidates(world_cfg, assets: Path | None = None) -> list[Path]:
    """The shipped folders made with this world's settings (world hash), whether or not intact."""
    root = ASSETS_DIR if assets is None else assets
    digest = world_hash(world_cfg)
    return [m.parent for m in sorted(root.glob(f"*/{MANIFEST}")) if _manifest(m.parent).get("world_hash") == digest]


def shipped_for(world_cfg, assets: Path | None = None) -> tuple[Path | None, str | None]:
    """(the shipped base model of this world, None) when one matches and its weights are intact;
    (None, why not) when one was made with these settings but its files fail their checksum;
    (None, None) when none was."""
    problems = []
    for folder in candidates(world_cfg, assets):
        problem = weights_problem(folder, _manifest(folder).get("weights_sha256") or "none recorded")
        if problem is None:
            return folder, None
        problems.append(problem)
    return None, (problems[0] if problems else None)


def install_shipped(world_cfg, out: Path, assets: Path | None = None) -> Path | None:
    """Copy the matching shipped base model into `out` (replacing what is there); returns its folder,
    or None (nothing matching and intact: the caller pre-trains)."""
    source, problem = shipped_for(world_cfg, assets)
    if source is None:
        if problem:
            print(f"not using the shipped base model: {problem}; pre-training instead", flush=True)
        return None
    out = Path(out)
    tmp = out.with_name(f".{out.name}.shipped.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for file in sorted(p for p in source.iterdir() if p.is_file()):
        shutil.copyfile(file, tmp / file.name)   # the bytes (not the checkout's file modes)
    recorded = _manifest(tmp).get("weights_sha256")
    if weights_problem(tmp, recorded) is not None:   # a copy cut short (a full disk) is not installed
        shutil.rmtree(tmp)
        raise OSError(f"{out}: copying the shipped base model from {source} did not give its files")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"base model: the shipped copy {_shown(source)} (world hash {_manifest(out)['world_hash']}, "
          f"weights_sha256 {recorded[:8]}… verified): no pre-training", flush=True)
    return source


def digests(model_dir: Path) -> dict[str, str]:
    """`weights_sha256` (spotlib.io.weights_sha256: config.json + weight files, as manifests record it) and
    the sha256 of each weight file alone (as `sha256sum` prints it)."""
    model_dir = Path(model_dir)
    out = {"weights_sha256": weights_sha256(model_dir)}
    for file in sorted(model_dir.glob("*.safetensors")):
        out[file.name] = file_sha256(file)
    return out


def compare_with_shipped(rebuilt: Path, world_cfg, assets: Path | None = None) -> tuple[bool | None, str]:
    """Whether a freshly pre-trained base model equals the shipped one bit for bit (None: none shipped
    for this world), and a sentence that says so with both digests."""
    found = candidates(world_cfg, assets)
    mine = digests(rebuilt)
    if not found:
        return None, (f"no shipped base model for this world (hash {_manifest(rebuilt).get('world_hash')}); "
                      f"rebuilt weights_sha256 {mine['weights_sha256']}")
    shipped = found[0]
    theirs = _manifest(shipped).get("weights_sha256")
    same = mine["weights_sha256"] == theirs and weights_problem(shipped, theirs) is None
    verdict = "EQUAL bit for bit to" if same else "DIFFERENT from"
    return same, (f"rebuilt base model is {verdict} the shipped one ({_shown(shipped)}): weights_sha256 "
                  f"{mine['weights_sha256']} rebuilt, {theirs} shipped")


def ship(model_dir: Path, name: str, assets: Path | None = None) -> Path:
    """Copy a base model (with its manifest) into `assets/<name>/`, the folder the repository ships."""
    model_dir = Path(model_dir)
    if not (model_dir / MANIFEST).is_file():
        raise FileNotFoundError(f"{model_dir / MANIFEST}: not a finished base model")
    target = (ASSETS_DIR if assets is None else assets) / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for file in sorted(p for p in model_dir.iterdir() if p.is_file() and p.name != "world.json"):
        shutil.copyfile(file, target / file.name)
    return target


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
