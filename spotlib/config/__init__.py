"""Profiles: one YAML file per study setting, loaded into typed, validated objects.

A profile is plain values (nanoGPT style). Loading checks every key against the schema's
dataclasses, so a typo or a wrong type fails at once with the file and the key in the
message instead of silently falling back to a default.

Callers import from here: the schema (`spotlib.config.schema`), loading
(`spotlib.config.load`) and the value checks (`spotlib.config.values`, whose range rules are
`spotlib.config.checks`).
"""
from __future__ import annotations

from spotlib.config.load import OUTPUT_DIR_TOKEN, load_profile, resolve_profile_path
from spotlib.config.schema import (PARAMS_DIR, REPO_ROOT, BaseGateConfig, ConfigError, EngineConfig, EvalConfig,
                                   FilterConfig, HardwareConfig, ModelConfig, OracleConfig, Profile, RLConfig,
                                   SampleConfig, TrainConfig, WorldConfig)
from spotlib.config.values import (DTYPE_NAMES, ORACLE_BEHAVIOUR_KEYS, TRACKERS, check_ranges, check_values,
                                   report_to_problem, secret_from_env)

__all__ = ["OUTPUT_DIR_TOKEN", "load_profile", "resolve_profile_path",
           "PARAMS_DIR", "REPO_ROOT", "BaseGateConfig", "ConfigError", "EngineConfig", "EvalConfig", "FilterConfig",
           "HardwareConfig", "ModelConfig", "OracleConfig", "Profile", "RLConfig", "SampleConfig", "TrainConfig",
           "WorldConfig",
           "DTYPE_NAMES", "ORACLE_BEHAVIOUR_KEYS", "TRACKERS", "check_ranges", "check_values", "report_to_problem",
           "secret_from_env"]
