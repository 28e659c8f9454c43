"""Loading a profile: YAML (plus dotted overrides) into the schema's dataclasses.

Every key is checked against the dataclasses, so a typo or a wrong type fails at once with the
file and the key in the message instead of silently falling back to a default; then every
value (`spotlib.config.values`).
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from spotlib.config.schema import PARAMS_DIR, REPO_ROOT, ConfigError, Profile
from spotlib.config.values import check_choices, check_values


def resolve_profile_path(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if not path.is_file():
            raise ConfigError(f"{path}: profile file not found")
        return path
    candidate = PARAMS_DIR / f"{text}.yaml"
    if not candidate.is_file():
        # accelerate_*.yaml sit beside the profiles but are launcher configs, not profiles
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml") if not p.stem.startswith("accelerate"))
        raise ConfigError(f"unknown profile {text!r}: no {candidate} (known: {', '.join(known)})")
    return candidate


def load_profile(name_or_path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Profile:
    """Load and validate a profile. `overrides` uses dotted keys: {"train.beta": 0.2}."""
    path = resolve_profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:  # all defaults is never what an empty (or truncated) file meant
        raise ConfigError(f"{path}: the profile file is empty (expected settings, e.g. as in {PARAMS_DIR / 'tiny.yaml'})")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    profile = _build(Profile, raw, path, prefix="")
    if not profile.output_dir:
        profile.output_dir = str(REPO_ROOT / "outputs" / profile.name)
    _expand_output_dir(profile)
    profile.source = str(path)
    check_choices(profile, path)
    check_values(profile, path)
    return profile


OUTPUT_DIR_TOKEN = "{output_dir}"


def _expand_output_dir(profile: "Profile") -> None:
    """Paths may start with `{output_dir}` (inputs a profile builds itself, e.g. the rehearsal's)."""
    def expand(value):
        return value.replace(OUTPUT_DIR_TOKEN, profile.output_dir) if isinstance(value, str) else value

    profile.model.name_or_path = expand(profile.model.name_or_path)
    profile.sample.data_files = expand(profile.sample.data_files)
    profile.eval.data_files = {k: expand(v) for k, v in profile.eval.data_files.items()}
    profile.train.kl_probe_file = expand(profile.train.kl_probe_file)


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _build(cls, raw: Any, path: Path, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key {prefix.rstrip('.') or '<top>'}: expected a mapping, "
                          f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{path}: unknown key {prefix}{key!r} "
                              f"(expected one of: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in raw.items():
        kwargs[key] = _coerce(hints[key], value, path, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp, value, path: Path, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{path}: key {key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(path, key, "a list", value)
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(path, key, "a mapping", value)
        key_tp, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, path, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(path, key, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, key, "an integer", value)
        return value
    if tp is float:
        # YAML reads 1e-6 (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, bool):
            raise _type_error(path, key, "a number", value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(path, key, "a number", value)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(path, key, "a string", value)
        return value
    raise ConfigError(f"{path}: key {key}: unsupported type {tp}")


def _type_error(path: Path, key: str, expected: str, value) -> ConfigError:
    return ConfigError(f"{path}: key {key}: expected {expected}, got {value!r} "
                       f"({type(value).__name__})")
