"""The base-model gate: a study is built only on a base model that meets the profile's targets.

The tiny world's base model is pre-trained by the package itself, so what it can do depends
on its settings (and, unchecked, on the machine). Stage 01 reads the held-out accuracies the
pre-training wrote into `base_model/manifest.json` (`heldout_scores["T=<t>"]`) and compares
them with `base_gate.targets` (family -> [low, high]) at `base_gate.temperature`.

Outside the targets, `base_gate.mode: enforce` stops with one message (the scores, the
targets, what to change); `warn` goes on. Either way stage 01 writes the verdict to
`01_sample/base_gate.json` and its sentence to `base_gate.md`, which the report takes in
with the stage's other notes: a study that ran on a base model outside its targets says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from spotlib.io import write_json_atomic

VERDICT_FILE = "base_gate.json"
NOTE_FILE = "base_gate.md"


class BaseModelOutsideTargets(RuntimeError):
    """The base model's held-out scores are outside the profile's targets (gate enforced)."""


def score_key(temperature: float) -> str:
    """The manifest's key for the scores at `temperature` (as `ensure_base_model` writes it)."""
    return f"T={float(temperature)}"


def verdict(scores: dict[str, float], targets: dict[str, list[float]]) -> dict[str, dict]:
    """family -> {score, low, high, inside} for every targeted family (a missing score is outside)."""
    result = {}
    for family, (low, high) in targets.items():
        score = scores.get(family)
        result[family] = {"score": score, "low": low, "high": high,
                          "inside": score is not None and low <= score <= high}
    return result


def _fmt(score) -> str:
    return "missing" if score is None else f"{score:.2f}"


def message(families: dict[str, dict], temperature: float, source: str, manifest_path: Path,
            kernels: str | None = None, level: str | None = None) -> str:
    """The one message of a failed gate: the scores, the targets, the CPU kernels, what to change."""
    outside = [f"{f} {_fmt(v['score'])} (target {v['low']:.2f}-{v['high']:.2f})"
               for f, v in families.items() if not v["inside"]]
    inside = [f"{f} {_fmt(v['score'])}" for f, v in families.items() if v["inside"]]
    return (f"base model outside its targets at T={temperature:g} ({manifest_path}): {', '.join(outside)}"
            + (f"; within: {', '.join(inside)}" if inside else "")
            + f". A study on this model would not test what it is meant to. Change the world's settings "
            f"(world.* in {source}: precision, pre-training steps, mixture) and pre-train again, or widen "
            f"base_gate.targets; to go on anyway set base_gate.mode: warn (the report will state it)."
            + (f" This model was pre-trained on {kernels} kernels (world.cpu_kernels: {level}); the same world "
               f"on other CPU kernels is a different model, so a world calibrated elsewhere can miss here: "
               f"pin world.cpu_kernels to the kernels it was calibrated on." if kernels else ""))


def _profile_file(profile) -> str:
    """Where the user changes the settings: the profile file the run was started from. Under
    `make reproduce` a stage loads the run's copy (outputs/<p>/profile.yaml); editing that copy
    changes nothing, so name the project's profile of the same name when there is one."""
    from spotlib.config import PARAMS_DIR

    source = str(profile.source or profile.name)
    if profile.source and Path(profile.source).resolve().parent == profile.out.resolve():
        own = PARAMS_DIR / f"{profile.name}.yaml"
        if own.is_file():
            return str(own)
    return source


def check_base_model(profile, out_dir: Path) -> dict | None:
    """Check the base model against `profile.base_gate`; write the verdict into `out_dir`.

    Returns the verdict (None when the profile sets no targets or the student is not the
    world's own model). Raises `BaseModelOutsideTargets` when a target is missed and the
    mode is `enforce`, and `ValueError` when the manifest holds no scores to check."""
    cfg = profile.base_gate
    path, note = Path(out_dir) / VERDICT_FILE, Path(out_dir) / NOTE_FILE
    if not cfg.targets or profile.model.name_or_path != "world":
        path.unlink(missing_ok=True)  # no gate: no verdict from another setting left behind
        note.unlink(missing_ok=True)
        return None
    source = _profile_file(profile)
    manifest_path = profile.base_model_path() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    scores = (manifest.get("heldout_scores") or {}).get(score_key(cfg.temperature))
    if not isinstance(scores, dict):
        raise ValueError(f"{manifest_path}: no held-out scores at T={cfg.temperature:g} to check base_gate.targets "
                         f"against (set world.manifest_eval_items > 0 in {source}, or base_gate.temperature to "
                         f"one of {', '.join(k for k in manifest.get('heldout_scores', {}) if k.startswith('T='))})")
    families = verdict(scores, cfg.targets)
    passed = all(v["inside"] for v in families.values())
    result = {"passed": passed, "mode": cfg.mode, "overridden": not passed, "temperature": cfg.temperature,
              "families": families, "manifest": str(manifest_path),
              "eval_items": (manifest.get("world") or {}).get("manifest_eval_items")}
    if not passed:
        machine = (manifest.get("stats") or {}).get("machine") or {}
        text = message(families, cfg.temperature, source, manifest_path, machine.get("kernels"),
                       (manifest.get("world") or {}).get("cpu_kernels", "native"))
        if cfg.mode == "enforce":
            path.unlink(missing_ok=True)
            note.unlink(missing_ok=True)
            raise BaseModelOutsideTargets(text)
        result["message"] = text
        print(f"WARNING (base_gate.mode: warn): {text}")
    write_json_atomic(path, result)
    note.write_text(f"# Base-model gate\n\n{report_line(result)}\n")
    return result


def report_line(result: dict | None) -> str:
    """One sentence for the report: what the gate found and whether it was overridden."""
    if result is None:
        return "Base-model gate: no targets in the profile."
    scores = ", ".join(f"{f} {_fmt(v['score'])} ({v['low']:.2f}-{v['high']:.2f})"
                       for f, v in result["families"].items())
    if result["passed"]:
        return f"Base-model gate passed at T={result['temperature']:g}: {scores}."
    return (f"**Base model outside its targets at T={result['temperature']:g}; the study went on only "
            f"because the profile sets base_gate.mode: warn**: {scores}.")
