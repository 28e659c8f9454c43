"""OpenAIOracle end to end against the local server: every injected fault ends as a success
or a recorded failure, 429's Retry-After is honoured, concurrency is bounded, cost is counted."""
import dataclasses

import pytest

from pairs_helpers import fake_samples
from spotlib import world
from spotlib.config import load_profile
from spotlib.io import JsonlAppender
from spotlib.oracle import CORRECTED, OpenAIOracle, OracleJob, OracleServer, run_jobs, wrap
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


PAPER_ORACLE = load_profile("paper").oracle


def test_paper_profile_asks_for_thoughts_and_caps_the_spend():
    google = PAPER_ORACLE.extra_body["extra_body"]["google"]["thinking_config"]
    assert google["include_thoughts"] is True
    assert PAPER_ORACLE.max_cost_usd is not None and 1000 <= PAPER_ORACLE.max_cost_usd <= 5000


def gemini_cfg(**changes):
    return fast_cfg(extra_body=PAPER_ORACLE.extra_body, price_input_per_mtok=1.25, price_output_per_mtok=10.0,
                    **changes)


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_thoughts_are_requested_parsed_and_billed(stream):
    with OracleServer(ERRORS, thinking="gemini") as server:
        result = ask(gemini_cfg(stream=stream), server)
        hidden = ask(fast_cfg(stream=stream, price_input_per_mtok=1.25, price_output_per_mtok=10.0), server)
    assert result.ok and world.score(ERRORS[0], result.text)
    assert result.thoughts.startswith("Checked each step") and "<thought>" not in result.text
    assert hidden.ok and hidden.thoughts == ""          # not asked for: Gemini keeps them to itself
    thinking = result.info["reasoning_tokens"]
    assert thinking == len(result.thoughts) // 4 > 0
    # billed output = answer + thinking, though the answer's completion_tokens leaves thinking out
    assert result.cost_usd == pytest.approx((result.prompt_tokens * 1.25 + result.completion_tokens * 10.0) / 1e6)
    assert result.completion_tokens == hidden.completion_tokens and hidden.info["reasoning_tokens"] == thinking
    answer_only = (result.prompt_tokens * 1.25 + (result.completion_tokens - thinking) * 10.0) / 1e6
    assert result.cost_usd > answer_only


def test_reasoning_field_thoughts_are_not_counted_twice():
    with OracleServer(ERRORS, thinking="field") as server:
        result = ask(fast_cfg(price_output_per_mtok=10.0), server)
    assert result.ok and result.thoughts.startswith("Checked each step")
    answer_tokens = len(wrap(result.text, CORRECTED)) // 4     # what the server sent as the answer
    assert result.completion_tokens == answer_tokens + result.info["reasoning_tokens"]


def test_local_server_profile_emulates_gemini(tmp_path):
    from spotlib.oracle import open_oracle

    profile = load_profile("test", overrides={"output_dir": str(tmp_path), "oracle.kind": "local_server",
                                              "oracle.server_thinking": "gemini",
                                              "oracle.extra_body": PAPER_ORACLE.extra_body})
    with open_oracle(profile, ERRORS[:1]) as oracle:
        result = oracle.rectify(ERRORS[0], ERRORS[0]["response"], ERRORS[0]["answer"])
    assert result.ok and result.thoughts and result.info["reasoning_tokens"] > 0


@pytest.mark.parametrize("usage, expected", [
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 45,
      "completion_tokens_details": {"reasoning_tokens": 30}}, (10, 35, 30)),     # Gemini: beside
    ({"prompt_tokens": 10, "completion_tokens": 35, "total_tokens": 45,
      "completion_tokens_details": {"reasoning_tokens": 30}}, (10, 35, 30)),     # OpenAI/vLLM: inside
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 45}, (10, 35, 30)),  # only the total tells
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, (10, 5, 0)),
])
def test_billed_tokens_reads_both_provider_conventions(usage, expected):
    from openai.types import CompletionUsage

    from spotlib.oracle.openai_oracle import billed_tokens

    assert billed_tokens(CompletionUsage(**usage)) == expected


def test_cost_cap_spans_every_run_of_the_oracle(tmp_path):
    cfg = fast_cfg(price_input_per_mtok=1e6, price_output_per_mtok=0.0, max_cost_usd=1.0)  # $1 per prompt token
    rectify = [OracleJob(f"{r['id']}|0|x", "rectify", r, r["response"], r["answer"]) for r in ERRORS]
    direct = [OracleJob(f"{r['id']}|d|x", "direct", r) for r in ERRORS]
    with OracleServer(ERRORS) as server:
        oracle = OpenAIOracle(cfg, base_url=server.url, api_key="k")
        with JsonlAppender(tmp_path / "out.jsonl", key_fn=lambda r: r["key"]) as sink:
            first = run_jobs(oracle, rectify, sink, concurrency=1, progress=False)   # the runner is given no cap
            second = run_jobs(oracle, direct, sink, concurrency=1, progress=False)
    assert first.ok == 1 and first.failures["budget_exhausted"] == len(ERRORS) - 1
    assert second.ok == 0 and second.failures["budget_exhausted"] == len(ERRORS)
    assert first.transient + second.transient == 2 * len(ERRORS) - 1   # asked again on a re-run
    assert len(server.log) == 1 and oracle.spent_usd >= 1.0
