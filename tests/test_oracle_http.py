"""OpenAIOracle end to end against the local server: every injected fault ends as a success
or a recorded failure, 429's Retry-After is honoured, concurrency is bounded, cost is counted."""
import dataclasses

import pytest

from pairs_helpers import fake_samples
from spotlib import world
from spotlib.config import load_profile
from spotlib.io import JsonlAppender
from spotlib.oracle import OpenAIOracle, OracleJob, OracleServer, run_jobs
from spotlib.oracle.server import FAULTS

ERRORS = [r for r in fake_samples(20, seed=2) if not r["correct"]]


def fast_cfg(**changes):
    base = dataclasses.replace(load_profile("test").oracle, kind="openai", timeout_s=0.4, max_retries=1,
                               request_retries=1, parse_retries=1, retry_base_s=0.01)
    return dataclasses.replace(base, **changes)


def ask(cfg, server, record=ERRORS[0]):
    oracle = OpenAIOracle(cfg, base_url=server.url, api_key="test-key")
    return oracle.rectify(record, record["response"], record["answer"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fault", FAULTS)
def test_one_transient_fault_ends_in_success(fault, stream):
    with OracleServer(ERRORS, script=[fault], retry_after_s=0.05, hang_s=1.0) as server:
        result = ask(fast_cfg(stream=stream), server)
    assert result.ok, (fault, result.failure, result.info)
    assert world.score(ERRORS[0], result.text) and result.failure is None
    assert len(server.log) == 2 and server.log[0]["fault"] == fault and server.log[0]["stream"] == stream


@pytest.mark.parametrize("fault, reason, transient", [
    ("http_500", "http_500", True), ("no_markers", "no_markers", False),
    ("bad_json", "malformed_response", True), ("timeout", "timeout", True),
])
def test_persistent_fault_is_recorded_not_raised(fault, reason, transient):
    with OracleServer(ERRORS, script=[fault] * 20, hang_s=1.0) as server:
        result = ask(fast_cfg(timeout_s=0.25), server)
    assert not result.ok and result.failure == reason and result.transient == transient


def test_persistent_dropped_stream_is_recorded():
    with OracleServer(ERRORS, script=["drop_stream"] * 20) as server:
        result = ask(fast_cfg(stream=True), server)
    assert not result.ok and result.transient and result.failure.startswith(("stream_error", "connection"))


def test_retry_after_is_honoured():
    with OracleServer(ERRORS, script=["http_429"], retry_after_s=1.2) as server:
        result = ask(fast_cfg(), server)
    assert result.ok
    gap = server.log[1]["t"] - server.log[0]["t"]
    assert gap >= 1.15    # the SDK's own back-off would wait about 0.4-0.5 s


def test_unknown_request_and_bad_request():
    with OracleServer([], script=[]) as server:     # the server does not know the problem
        result = ask(fast_cfg(parse_retries=0), server)
    assert result.failure == "no_markers" and not result.transient


def test_batch_is_concurrent_resumable_and_costed(tmp_path):
    cfg = fast_cfg(price_input_per_mtok=2.0, price_output_per_mtok=10.0, concurrency=4, timeout_s=5)
    jobs = [OracleJob(f"{r['id']}|0|x", "rectify", r, r["response"], r["answer"]) for r in ERRORS]
    with OracleServer(ERRORS, faults={"latency_s": 0.3}, seed=1) as server:
        oracle = OpenAIOracle(cfg, base_url=server.url, api_key="k")
        with JsonlAppender(tmp_path / "out.jsonl", key_fn=lambda r: r["key"]) as sink:
            stats = run_jobs(oracle, jobs, sink, concurrency=4, progress=False)
        assert stats.ok == len(ERRORS) and stats.failed == 0
        assert 1 < server.max_in_flight <= 4             # overlapped, and bounded
        expected = (stats.prompt_tokens * 2.0 + stats.completion_tokens * 10.0) / 1e6
        assert stats.cost_usd == pytest.approx(expected) and stats.cost_usd > 0
        n_requests = len(server.log)
        with JsonlAppender(tmp_path / "out.jsonl", key_fn=lambda r: r["key"]) as sink:
            again = run_jobs(oracle, jobs, sink, concurrency=4, progress=False)
        assert again.skipped == len(ERRORS) and again.requested == 0 and len(server.log) == n_requests


def test_budget_cap_stops_new_requests(tmp_path):
    cfg = fast_cfg(price_input_per_mtok=1e6, price_output_per_mtok=0.0)   # $1 per prompt token
    jobs = [OracleJob(f"{r['id']}|0|x", "rectify", r, r["response"], r["answer"]) for r in ERRORS]
    with OracleServer(ERRORS) as server:
        oracle = OpenAIOracle(cfg, base_url=server.url, api_key="k")
        with JsonlAppender(tmp_path / "out.jsonl", key_fn=lambda r: r["key"]) as sink:
            stats = run_jobs(oracle, jobs, sink, concurrency=1, progress=False, max_cost_usd=1.0)
    assert stats.ok == 1 and stats.failures["budget_exhausted"] == len(ERRORS) - 1
    assert len(server.log) == 1


def test_server_binds_loopback_only_and_rejects_unknown_faults():
    with OracleServer(ERRORS) as server:
        assert server.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="unknown server fault"):
        OracleServer(ERRORS, faults={"gremlins": 1.0})
