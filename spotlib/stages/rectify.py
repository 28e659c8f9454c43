"""Stage 02: the Oracle rectifies every wrong answer from 01 and writes direct solutions.

Writes under outputs/<profile>/02_rectify/:
  rectified.jsonl   one record per error: rejected (y⁻), chosen (y⁺ or null), thoughts,
                    failure reason, mode, tokens, cost
  direct.jsonl      direct Oracle solutions (no student answer), every attempt, with
                    `correct`; attempts continue only for problems not yet solved
                    (rejection sampling, `oracle.direct_attempts` tries at most)
  transient_failures.jsonl  requests the endpoint never answered (asked again on a re-run); any
                    left stop the stage with one line naming the endpoint and the count
  cache/            the keyed append-only logs a crashed run resumes from; each key hashes
                    the request (the student's answer included) and the Oracle's settings
                    and endpoint, so a changed answer or setting is asked anew
  manifest.json
"""
from __future__ import annotations

import time
from collections import Counter

from spotlib.io import JsonlAppender, Manifest, file_sha256, read_jsonl, read_stage_output, write_jsonl
from spotlib.oracle import OracleJob, job_key, open_oracle, run_jobs
from spotlib.oracle.base import OracleUnanswered
from spotlib.oracle.verify import verify_many

STAGE = "02_rectify"
INPUT = ("01_sample", "errors.jsonl")
PROBLEM_FIELDS = ("id", "family", "prompt", "answer", "meta")


def oracle_params(profile) -> dict:
    """The settings that change this stage's output (the key's *name*, never its value)."""
    from spotlib.config import ORACLE_BEHAVIOUR_KEYS

    cfg = profile.to_dict()["oracle"]
    for key in ORACLE_BEHAVIOUR_KEYS:   # absent when 0: the minimal-edit Oracle's earlier outputs stay valid
        if not cfg[key]:
            del cfg[key]
    return {**cfg, "seed": profile.seed, "grading": profile.sample.grading}


def _request_content(record: dict, use_truth: bool) -> dict:
    """What a rectify request says: a new student answer (or problem) is a new request."""
    return {"prompt": record["prompt"], "response": record["response"],
            "answer": record["answer"] if use_truth else None}


def _problem(record: dict) -> dict:
    return {k: record.get(k) for k in PROBLEM_FIELDS}


def run(profile, progress: bool = True) -> dict:
    out_dir = profile.stage_dir(STAGE)
    errors_path = profile.stage_dir(INPUT[0]) / INPUT[1]
    errors = read_stage_output(errors_path, INPUT[0], required=("id", "sample_id", "prompt", "answer", "response"))
    manifest = Manifest(out_dir, params=oracle_params(profile), inputs={"errors": file_sha256(errors_path)})
    if manifest.is_fresh():
        return manifest.load()["summary"]
    manifest.write(complete=False)
    started = time.perf_counter()
    cfg = profile.oracle

    problems: dict[str, dict] = {}
    for r in errors:
        problems.setdefault(r["id"], _problem(r))
    with open_oracle(profile, problems.values()) as oracle:
        fingerprint = oracle.fingerprint()
        use_truth = cfg.prompt_variant == "with_ground_truth"
        jobs = [OracleJob(job_key(r["id"], r["sample_id"], fingerprint, _request_content(r, use_truth)),
                          "rectify", _problem(r), r["response"],
                          r["answer"] if use_truth else None,
                          fields={**_problem(r), "sample_id": r["sample_id"], "rejected": r["response"],
                                  "oracle": fingerprint})
                for r in errors]
        with JsonlAppender(out_dir / "cache" / "rectify.jsonl", key_fn=lambda r: r["key"]) as sink:
            rect_stats = run_jobs(oracle, jobs, sink, concurrency=cfg.concurrency, progress=progress,
                                  desc="rectify", max_cost_usd=cfg.max_cost_usd)
            done = {r["key"]: r for r in sink.records}
        rectified = [_rectified_record(done[j.key]) for j in jobs if j.key in done]
        direct, direct_stats = _direct_solutions(profile, oracle, fingerprint, list(problems.values()),
                                                 out_dir, progress)
        where = getattr(oracle, "base_url", None) or oracle.kind

    transient = rect_stats.transient_records + [r for s in direct_stats for r in s.transient_records]
    write_jsonl(out_dir / "rectified.jsonl", rectified)
    write_jsonl(out_dir / "direct.jsonl", direct)
    write_jsonl(out_dir / "transient_failures.jsonl", transient)
    modes = Counter(r["mode"] for r in rectified if r["ok"])
    solved = {r["id"] for r in direct if r["correct"]}
    summary = {
        "errors": len(errors),
        "rectified_ok": sum(r["ok"] for r in rectified),
        "rectify_failures": dict(Counter(r["failure"] for r in rectified if not r["ok"])),
        "modes": dict(modes),
        "beyond_minimal": _beyond_minimal(rectified),
        "transient_failures": len(transient),
        "direct_problems": len(problems),
        "direct_solved": len(solved),
        "direct_requests": sum(s.requested for s in direct_stats),
        "prompt_tokens": rect_stats.prompt_tokens + sum(s.prompt_tokens for s in direct_stats),
        "completion_tokens": rect_stats.completion_tokens + sum(s.completion_tokens for s in direct_stats),
        "cost_usd": round(rect_stats.cost_usd + sum(s.cost_usd for s in direct_stats), 4),
        "rectify_run": rect_stats.as_dict(),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    manifest.counts = {"errors": len(errors), "rectified": len(rectified), "rectified_ok": summary["rectified_ok"],
                       "direct": len(direct), "direct_solved": len(solved), "transient_failures": len(transient)}
    manifest.timings = {"rectify_s": round(rect_stats.wall_s, 2), "total_s": summary["wall_time_s"]}
    # Unanswered requests leave the stage incomplete, so the next run asks for them again.
    manifest.write(complete=not transient, summary=summary,
                   outputs=("rectified.jsonl", "direct.jsonl", "transient_failures.jsonl"))
    if transient:
        raise OracleUnanswered(unanswered_message(where, transient, len(rectified) + len(direct), profile.oracle))
    return summary


def _beyond_minimal(rectified: list[dict]) -> dict:
    """What the programmatic Oracle did besides its minimal edit ({} for the minimal-edit Oracle and endpoints):
    counts of restarts and re-wordings, of fixes that slipped again and of wrong steps left."""
    did = [(r.get("info") or {}).get("beyond_minimal") for r in rectified if r["ok"]]
    did = [d for d in did if d]
    if not did:
        return {}
    return {"rewrite": dict(Counter(d["rewrite"] for d in did)), "slip": dict(Counter(d["slip"] for d in did))}


def unanswered_message(where: str, transient: list[dict], answered: int, cfg) -> str:
    """One line: where, how many, why, what was kept and what to do."""
    reasons = Counter(r.get("failure") for r in transient)
    why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    if set(reasons) == {"budget_exhausted"}:
        todo = f"raise oracle.max_cost_usd (now {cfg.max_cost_usd}) and run stage 02 again to ask for the rest"
    else:
        todo = ("check that the endpoint is up and reachable (oracle.base_url), then run stage 02 again: it asks "
                "only for the rest")
    return (f"the Oracle at {where} left {len(transient)} request(s) unanswered after its retries ({why}); the "
            f"{answered} answered are kept; {todo}")


def _rectified_record(raw: dict) -> dict:
    record = {k: raw[k] for k in (*PROBLEM_FIELDS, "sample_id", "rejected")}
    record.update({"chosen": raw["text"], "ok": raw["ok"], "failure": raw["failure"], "mode": raw["mode"],
                   "thoughts": raw["thoughts"], "attempts": raw["attempts"],
                   "prompt_tokens": raw["prompt_tokens"], "completion_tokens": raw["completion_tokens"],
                   "cost_usd": raw["cost_usd"], "info": raw["info"], "key": raw["key"]})
    return record


def _direct_solutions(profile, oracle, fingerprint: str, problems: list[dict], out_dir, progress: bool):
    """Ask for a direct solution of every problem; ask again (new attempt) only where it was wrong."""
    cfg = profile.oracle
    results: dict[str, dict] = {}
    stats = []
    with JsonlAppender(out_dir / "cache" / "direct.jsonl", key_fn=lambda r: r["key"]) as sink:
        pending = problems
        for attempt in range(cfg.direct_attempts):
            jobs = [OracleJob(job_key(p["id"], f"direct-{attempt}", fingerprint, {"prompt": p["prompt"]}),
                              "direct", p, attempt=attempt,
                              fields={**p, "oracle": fingerprint}) for p in pending]
            stats.append(run_jobs(oracle, jobs, sink, concurrency=cfg.concurrency, progress=progress,
                                  desc=f"direct (attempt {attempt + 1})", max_cost_usd=cfg.max_cost_usd))
            done = {r["key"]: r for r in sink.records}
            finished = [done[j.key] for j in jobs if j.key in done]
            verdicts = verify_many(profile, finished, [r["text"] for r in finished])
            for raw, ok in zip(finished, verdicts):
                results[raw["key"]] = {**{k: raw[k] for k in PROBLEM_FIELDS}, "attempt": raw["attempt"],
                                       "text": raw["text"], "ok": raw["ok"], "failure": raw["failure"],
                                       "correct": bool(ok), "thoughts": raw["thoughts"], "key": raw["key"]}
            solved = {r["id"] for r in results.values() if r["correct"]}
            pending = [p for p in pending if p["id"] not in solved]
            if not pending:
                break
    return sorted(results.values(), key=lambda r: (r["id"], r["attempt"])), stats


def load(profile, which: str = "rectified") -> list[dict]:
    return read_jsonl(profile.stage_dir(STAGE) / f"{which}.jsonl")
