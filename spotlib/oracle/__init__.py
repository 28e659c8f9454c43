"""The Oracle: rectifies a student's wrong answer with a minimal edit, or solves from scratch.

    with open_oracle(profile, problems) as oracle:
        result = oracle.rectify(problem, student_answer, ground_truth)
        result.text, result.thoughts, result.failure, result.cost_usd
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

from .base import Oracle, OracleResult, run_sync
from .parsing import CORRECTED, SOLUTION, ParsedReply, parse_reply, split_thoughts, strip_meta, wrap
from .programmatic import ProgrammaticOracle
from .runner import OracleJob, RunStats, arun_jobs, job_key, run_jobs


def __getattr__(name):
    # The HTTP pieces import openai/aiohttp: only when asked for.
    if name == "OpenAIOracle":
        from .openai_oracle import OpenAIOracle
        return OpenAIOracle
    if name == "OracleServer":
        from .server import OracleServer
        return OracleServer
    raise AttributeError(name)


@contextmanager
def open_oracle(profile, problems: Iterable[dict] = ()) -> Iterator[Oracle]:
    """The profile's Oracle; `local_server` starts the local HTTP server for the duration."""
    from spotlib.config import ConfigError

    from spotlib.world.oracle_rewrite import OracleBehaviour

    cfg = profile.oracle
    behaviour = OracleBehaviour.from_config(cfg)
    if cfg.kind == "programmatic":
        yield ProgrammaticOracle(profile.seed, behaviour)
    elif cfg.kind == "openai":
        from .openai_oracle import OpenAIOracle

        if not cfg.base_url:
            raise ConfigError(f"{profile.source}: key oracle.base_url: required when oracle.kind is openai")
        yield OpenAIOracle(cfg)
    elif cfg.kind == "local_server":
        from .openai_oracle import OpenAIOracle
        from .server import OracleServer

        with OracleServer(problems, faults=cfg.server_faults, seed=profile.seed,
                          oracle=ProgrammaticOracle(profile.seed, behaviour), thinking=cfg.server_thinking) as server:
            yield OpenAIOracle(cfg, base_url=server.url, api_key="local")
    else:
        raise ConfigError(f"{profile.source}: key oracle.kind: unknown {cfg.kind!r}")


__all__ = ["Oracle", "OracleResult", "ProgrammaticOracle", "OpenAIOracle", "OracleServer", "OracleJob",
           "RunStats", "open_oracle", "run_jobs", "arun_jobs", "job_key", "run_sync", "parse_reply",
           "ParsedReply", "split_thoughts", "strip_meta", "wrap", "CORRECTED", "SOLUTION"]
