"""Many Oracle requests at once: bounded concurrency, resumable output, a live cost bar.

Each finished request is appended at once to a keyed JSONL (`spotlib.io.JsonlAppender`),
so a crash or `kill -9` loses only the requests in flight, and a re-run skips every
key already written. Keys are (problem id, sample id, hash of the request's content,
Oracle fingerprint), the fingerprint hashing the Oracle's settings, endpoint and the
prompt templates: change the student's answer, any setting or the endpoint and that
work is redone. Transient failures are returned, not stored: a re-run asks again. A
request the endpoint refuses (`SETTINGS_FAILURES`) stops the run, storing nothing.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from spotlib.progress import bar as tqdm  # tqdm in Jupyter, reported lines under the runner

from spotlib.io import JsonlAppender, params_hash

from .base import SETTINGS_FAILURES, Oracle, OracleRequestError, OracleResult, run_sync


@dataclass
class OracleJob:
    key: str
    kind: str                           # "rectify" | "direct"
    problem: dict
    student_answer: str | None = None
    ground_truth: str | None = None
    attempt: int = 0
    fields: dict = field(default_factory=dict)   # copied into the output record


def job_key(problem_id: str, sample_id, fingerprint: str, content: dict | None = None) -> str:
    """`content`: what the request says (the student's answer, the problem): a changed answer
    is a new request, never one served from the cache of the old one."""
    parts = [str(problem_id), str(sample_id)]
    if content is not None:
        parts.append(params_hash(content))
    return "|".join([*parts, fingerprint])


@dataclass
class RunStats:
    requested: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    transient: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    failures: Counter = field(default_factory=Counter)
    transient_records: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        body = {k: v for k, v in self.__dict__.items() if k != "transient_records"}
        body["failures"] = dict(self.failures)
        body["cost_usd"] = round(self.cost_usd, 6)
        body["wall_s"] = round(self.wall_s, 2)
        return body


def record_of(job: OracleJob, result: OracleResult) -> dict:
    return {**job.fields, "key": job.key, "kind": job.kind, "attempt": job.attempt, **result.to_record()}


async def arun_jobs(oracle: Oracle, jobs: Iterable[OracleJob], sink: JsonlAppender, *, concurrency: int = 64,
                    progress: bool = True, desc: str = "oracle", max_cost_usd: float | None = None) -> RunStats:
    stats = RunStats()
    todo = []
    for job in jobs:
        if job.key in sink:
            stats.skipped += 1
        else:
            todo.append(job)
    stats.requested = len(todo)
    started = time.perf_counter()
    gate = asyncio.Semaphore(max(1, concurrency))
    bar = tqdm(total=len(todo), desc=desc, disable=not progress, dynamic_ncols=True)
    refused: list[tuple[str, str]] = []   # (failure, error text) of requests the endpoint refused

    async def one(job: OracleJob) -> None:
        async with gate:
            if refused:   # the settings are wrong: asking on only costs money
                return
            if max_cost_usd is not None and stats.cost_usd >= max_cost_usd:
                result = OracleResult(None, failure="budget_exhausted", transient=True, attempts=0)
            elif job.kind == "rectify":
                result = await oracle.arectify(job.problem, job.student_answer, job.ground_truth)
            else:
                result = await oracle.asolve_direct(job.problem, job.attempt)
        stats.prompt_tokens += result.prompt_tokens
        stats.completion_tokens += result.completion_tokens
        stats.cost_usd += result.cost_usd
        if result.failure in SETTINGS_FAILURES:
            refused.append((result.failure, str(result.info.get("error", ""))))
            return
        record = record_of(job, result)
        if result.ok:
            stats.ok += 1
        else:
            stats.failures[result.failure] += 1
        if result.transient:
            stats.transient += 1
            stats.transient_records.append(record)
        else:
            stats.failed += not result.ok
            sink.append(record)
        bar.update(1)
        bar.set_postfix(done=stats.ok, failed=stats.failed + stats.transient, cost=f"${stats.cost_usd:.2f}",
                        refresh=False)

    try:
        await asyncio.gather(*(one(job) for job in todo))
    finally:
        bar.close()
        await oracle.aclose()
    stats.wall_s = time.perf_counter() - started
    if refused:
        failure, error = refused[0]
        where = getattr(oracle, "base_url", None) or oracle.kind
        raise OracleRequestError(
            f"the Oracle endpoint {where} refused the request ({failure}: {' '.join(error.split())[:160]}); "
            f"check oracle.base_url, oracle.model and the key in oracle.api_key_env, then re-run "
            f"(nothing was cached for the {len(refused)} refused request(s))")
    return stats


def run_jobs(oracle: Oracle, jobs: Iterable[OracleJob], sink: JsonlAppender, **kwargs) -> RunStats:
    return run_sync(arun_jobs(oracle, jobs, sink, **kwargs))
