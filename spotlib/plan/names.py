"""Profile checks that read the registries of the study's parts (the methods, the local server's
faults): run by `spotlib.plan.validate` at `--dry-run` and before a run, beside `spotlib.config.checks`'
ranges, which run on every load and import nothing above the configuration."""
from __future__ import annotations

from typing import Any, Callable, Iterator

from spotlib.config.checks import Problem


def learning_rates(profile) -> Iterator[Problem]:
    from spotlib.train.runspec import METHODS  # no torch: the registry only

    lrs = profile.train.lr
    unknown = [k for k in lrs if k != "default" and k not in METHODS]
    if unknown:
        yield f"train.lr.{unknown[0]}", (f"not a method (expected 'default' or one of {', '.join(METHODS)}): "
                                         f"a misspelt name would train that method at the default")
    try:
        from spotlib.train.runspec import plan_runs

        methods = {r.method for r in plan_runs(profile.train)}
    except ValueError:
        return  # an unknown run name: validation's own line (spotlib.plan.validate)
    missing = sorted(m for m in methods if m not in lrs)
    if missing and "default" not in lrs:
        yield "train.lr", f"no 'default' and no entry for {', '.join(missing)}: add default: <lr>"


def server_fault_names(profile) -> Iterator[Problem]:
    from spotlib.oracle.faults import FAULTS

    for name in profile.oracle.server_faults:
        if name != "latency_s" and name not in FAULTS:
            yield f"oracle.server_faults.{name}", f"unknown fault (expected {', '.join(FAULTS)} or latency_s)"


NAME_RULES: list[Callable[[Any], Iterator[Problem]]] = [learning_rates, server_fault_names]
