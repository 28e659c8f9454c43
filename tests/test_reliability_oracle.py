"""Oracle caches are keyed by what determines each answer; refused requests stop the stage."""
import http.server
import json
import threading

import pytest

from pairs_helpers import plant_error, write_fake_stage01
from spotlib.config import load_profile
from spotlib.io import JsonlAppender, read_jsonl, write_jsonl
from spotlib.oracle import OracleJob, OracleResult, run_jobs
from spotlib.oracle.base import Oracle, OracleRequestError
from spotlib.stages import rectify


def test_changed_student_answers_are_rectified_anew(tmp_path):
    """Finding 1: new responses for the same (id, sample_id) must not reuse the old y⁺."""
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out")})
    write_fake_stage01(profile, 30)
    first = rectify.run(profile, progress=False)
    assert first["rectify_run"]["requested"] == first["errors"] > 0
    errors_path = profile.stage_dir("01_sample") / "errors.jsonl"
    errors = read_jsonl(errors_path)
    changed = [dict(r, response=plant_error(r["response"], 0, 7)) for r in errors]
    assert all(c["response"] != r["response"] for c, r in zip(changed, errors))
    write_jsonl(errors_path, changed)

    second = rectify.run(profile, progress=False)
    assert second["rectify_run"]["skipped"] == 0
    assert second["rectify_run"]["requested"] == len(changed)
    current = {(r["id"], r["sample_id"]): r["response"] for r in changed}
    rectified = rectify.load(profile)
    assert len(rectified) == len(changed)
    assert all(r["rejected"] == current[(r["id"], r["sample_id"])] for r in rectified)
    third = rectify.run(profile.replace(seed=profile.seed), progress=False)
    assert third == second   # unchanged inputs: the manifest says fresh


class _Refusing(Oracle):
    kind = "refusing"
    base_url = "http://wrong.example/v1"

    def __init__(self, failure):
        self.failure, self.asked = failure, 0

    async def arectify(self, problem, student_answer, ground_truth=None):
        self.asked += 1
        return OracleResult(None, failure=self.failure, info={"error": "Error code: 401 - invalid api key"})


@pytest.mark.parametrize("failure", ["http_401", "http_404", "http_400", "http_403", "http_422"])
def test_refused_requests_stop_and_cache_nothing(tmp_path, failure):
    """Finding 3: an auth/endpoint error is the user's to fix; nothing may be cached as final."""
    oracle = _Refusing(failure)
    jobs = [OracleJob(f"p{i}|0|fp", "rectify", {"prompt": "q"}, "a") for i in range(20)]
    with JsonlAppender(tmp_path / "cache.jsonl", key_fn=lambda r: r["key"]) as sink:
        with pytest.raises(OracleRequestError, match=f"refused the request \\({failure}.*nothing was cached"):
            run_jobs(oracle, jobs, sink, concurrency=2, progress=False)
        assert sink.records == []
    assert oracle.asked <= 2   # the rest are not sent once the endpoint refused
    assert (tmp_path / "cache.jsonl").read_text() == ""


def test_endpoint_is_part_of_the_fingerprint():
    from spotlib.oracle.openai_oracle import OpenAIOracle

    cfg = load_profile("test").oracle
    a = OpenAIOracle(cfg, base_url="http://a.example/v1", api_key="k")
    b = OpenAIOracle(cfg, base_url="http://b.example/v1", api_key="k")
    assert a.fingerprint() != b.fingerprint()


class _Http401(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.dumps({"error": {"message": "invalid api key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_wrong_key_stops_stage_02_and_a_fixed_key_recovers(tmp_path, monkeypatch):
    """Finding 3 end to end: a 401 over HTTP stops stage 02 with one line; nothing is cached."""
    monkeypatch.setenv("SPOT_TEST_WRONG_KEY", "wrong")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http401)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        profile = load_profile("test", overrides={
            "output_dir": str(tmp_path / "out"), "oracle.kind": "openai", "oracle.model": "m",
            "oracle.base_url": f"http://127.0.0.1:{server.server_port}/v1", "oracle.max_retries": 0,
            "oracle.api_key_env": "SPOT_TEST_WRONG_KEY", "oracle.retry_base_s": 0.01})
        write_fake_stage01(profile, 20)
        with pytest.raises(OracleRequestError) as info:
            rectify.run(profile, progress=False)
    finally:
        server.shutdown()
    message = str(info.value)
    assert "http_401" in message and "oracle.api_key_env" in message and "\n" not in message
    cache = profile.stage_dir("02_rectify") / "cache" / "rectify.jsonl"
    assert not cache.exists() or read_jsonl(cache) == []
    # With the endpoint fixed (the programmatic Oracle stands in), every item is answered.
    fixed = rectify.run(load_profile("test", overrides={"output_dir": str(tmp_path / "out")}), progress=False)
    assert fixed["rectified_ok"] + sum(fixed["rectify_failures"].values()) == fixed["errors"]
    assert not any(k.startswith("http_") for k in fixed["rectify_failures"])


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:   # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


FAST_RETRIES = {"oracle.max_retries": 0, "oracle.request_retries": 0, "oracle.retry_base_s": 0.01}


def test_unreachable_oracle_stops_stage_02_naming_endpoint_and_count(tmp_path):
    from spotlib.oracle.base import OracleUnanswered

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    profile = load_profile("test", overrides={"output_dir": str(tmp_path / "out"), "oracle.kind": "openai",
                                              "oracle.model": "m", "oracle.base_url": url, **FAST_RETRIES})
    write_fake_stage01(profile, 12)
    errors = len(read_jsonl(profile.stage_dir("01_sample") / "errors.jsonl"))
    with pytest.raises(OracleUnanswered) as info:
        rectify.run(profile, progress=False)
    message = str(info.value)
    problems = len({r["id"] for r in read_jsonl(profile.stage_dir("01_sample") / "errors.jsonl")})
    asked = errors + problems * profile.oracle.direct_attempts   # every attempt of every problem went unanswered
    assert url in message and f"left {asked} request(s) unanswered" in message
    assert "connection_error" in message and "run stage 02 again" in message and "\n" not in message
    manifest = json.loads((profile.stage_dir("02_rectify") / "manifest.json").read_text())
    assert manifest["complete"] is False   # never counted fresh: the next run asks again


def test_injected_faults_stop_the_stage_keep_the_answers_and_a_rerun_resumes(tmp_path):
    from spotlib.oracle.base import OracleUnanswered

    overrides = {"output_dir": str(tmp_path / "out"), "oracle.kind": "local_server", "oracle.direct_attempts": 1,
                 **FAST_RETRIES}
    faulty = load_profile("test", overrides={**overrides, "oracle.server_faults": {"http_500": 0.5}})
    write_fake_stage01(faulty, 30)
    with pytest.raises(OracleUnanswered, match=r"left \d+ request\(s\) unanswered .*http_500") as info:
        rectify.run(faulty, progress=False)
    cache = faulty.stage_dir("02_rectify") / "cache"
    kept = len(read_jsonl(cache / "rectify.jsonl")) + len(read_jsonl(cache / "direct.jsonl"))
    assert kept > 0 and f"the {kept} answered are kept" in str(info.value)

    summary = rectify.run(load_profile("test", overrides=overrides), progress=False)   # the endpoint recovered
    assert summary["transient_failures"] == 0
    assert summary["rectify_run"]["skipped"] == len(read_jsonl(cache / "rectify.jsonl")) - summary["rectify_run"]["requested"]
    assert summary["rectify_run"]["skipped"] > 0 and summary["rectified_ok"] == summary["errors"]


def test_local_server_direct_solutions_resume_exactly(tmp_path):
    """A run resumed from a partial cache writes the same direct solutions as one uninterrupted run
    (replies are worded by the request, not by how many requests the server saw before)."""
    import shutil

    overrides = {"oracle.kind": "local_server", "oracle.direct_attempts": 1, "oracle.concurrency": 4}
    whole = load_profile("test", overrides={"output_dir": str(tmp_path / "whole"), **overrides})
    write_fake_stage01(whole, 30)
    rectify.run(whole, progress=False)
    resumed = load_profile("test", overrides={"output_dir": str(tmp_path / "resumed"), **overrides})
    shutil.copytree(whole.out / "01_sample", resumed.out / "01_sample")
    cache = resumed.stage_dir("02_rectify") / "cache"
    cache.mkdir(parents=True)
    direct = read_jsonl(whole.stage_dir("02_rectify") / "cache" / "direct.jsonl")
    write_jsonl(cache / "direct.jsonl", direct[: len(direct) // 3])   # what a kill -9 had kept
    rectify.run(resumed, progress=False)
    texts = [(r["id"], r["text"]) for r in rectify.load(whole, "direct")]
    assert len(texts) == len(direct) > 3
    assert [(r["id"], r["text"]) for r in rectify.load(resumed, "direct")] == texts


@pytest.mark.slow
def test_reproduce_exits_non_zero_when_the_oracle_is_unreachable(tmp_path, capsys):
    import yaml

    from spotlib import reproduce
    from spotlib.config import PARAMS_DIR

    url = f"http://127.0.0.1:{_closed_port()}/v1"
    raw = yaml.safe_load((PARAMS_DIR / "test.yaml").read_text())
    raw.update(name="test", output_dir=str(tmp_path / "out"))
    raw["oracle"] = {"kind": "openai", "model": "m", "base_url": url, "max_retries": 0, "request_retries": 0,
                     "retry_base_s": 0.01}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    write_fake_stage01(load_profile(path), 8)
    assert reproduce.main(["--profile", str(path), "--stages", "02"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0] and "unanswered" in errors[0]
