"""The tiny world's Oracle: a minimal edit computed from the problem's structure.

It finds the student's first wrong step, corrects it, recomputes what follows, and
keeps the student's wording everywhere else (`spotlib.world.edit.minimal_fix`). A
solution it cannot parse is rewritten whole in the Oracle's style (`mode="rewrite"`).
With an `OracleBehaviour` it also does what a real Oracle does beyond the minimal edit
(`spotlib.world.oracle_rewrite`: restarts, re-wording, failed fixes, a wrong step left).
Direct solutions are written in the Oracle's style, which the student rarely saw:
the tiny analogue of a stronger model's distribution shift.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
import time

from .base import Oracle, OracleResult


def _as_dict(obj) -> dict:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "_asdict"):
        return dict(obj._asdict())
    return dict(vars(obj))


def stable_seed(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def world_record(problem: dict) -> dict:
    """A tiny-world view of a problem that arrives in another dataset's format (the rehearsal
    writes world arithmetic as DAPO-Math rows): its operands and operators parsed from the text."""
    if problem.get("family") in ("arith", "arith_ood"):
        return problem
    from spotlib.world.families import parse_arith_problem

    meta = problem.get("meta") or {}
    parsed = parse_arith_problem(meta.get("problem") or problem.get("prompt", ""))
    if parsed is None:
        return problem
    operands, ops = parsed
    return {**problem, "family": "arith", "meta": {**meta, "operands": operands, "ops": ops, "n_ops": len(ops)}}


class ProgrammaticOracle(Oracle):
    kind = "programmatic"

    def __init__(self, seed: int = 0, behaviour=None):
        from spotlib.world.oracle_rewrite import OracleBehaviour

        self.seed = seed
        self.behaviour = behaviour or OracleBehaviour()

    def settings(self) -> dict:
        if self.behaviour.minimal:   # the minimal-edit Oracle's fingerprint (and cached replies) as before
            return {"kind": self.kind, "seed": self.seed}
        behaviour = dataclasses.asdict(self.behaviour)
        if not behaviour["restart_first"]:   # unset: the fingerprint (and cached replies) of profiles before it
            del behaviour["restart_first"]
        return {"kind": self.kind, "seed": self.seed, "behaviour": behaviour}

    def fix(self, problem: dict, student_answer: str) -> OracleResult:
        from spotlib.world.edit import minimal_fix

        started = time.perf_counter()
        problem = world_record(problem)
        if problem["family"] not in ("arith", "arith_ood"):
            # Facts and format answers have no steps to repair: the right answer is the edit.
            return OracleResult(text=self.direct(problem).text, mode="rewrite",
                                thoughts="No steps to repair; wrote the answer.",
                                latency_s=time.perf_counter() - started)
        fix = minimal_fix(problem, student_answer)
        info = {k: v for k, v in _as_dict(fix).items() if k != "text"}
        if not self.behaviour.minimal and fix.mode == "edit":
            from spotlib.world.oracle_rewrite import beyond_minimal

            rng = random.Random(stable_seed(self.seed, "rectify", problem.get("id"), student_answer))
            first_wrong = fix.wrong_steps_before[0] if fix.wrong_steps_before else 0
            text, did = beyond_minimal(problem, fix.text, first_wrong, rng, self.behaviour)
            fix = dataclasses.replace(fix, text=text)
            info["beyond_minimal"] = did
        thoughts = (f"Checked each step against the problem. Wrong steps: {info.get('wrong_steps_before')}; "
                    f"changed: {info.get('changed_steps')} ({fix.mode}).")
        return OracleResult(text=fix.text, thoughts=thoughts, mode=fix.mode, info=info,
                            latency_s=time.perf_counter() - started)

    def direct(self, problem: dict, attempt: int = 0) -> OracleResult:
        from spotlib.world import oracle_solution

        rng = random.Random(stable_seed(self.seed, problem["id"], attempt))
        return OracleResult(text=oracle_solution(world_record(problem), rng), mode="direct")

    async def arectify(self, problem: dict, student_answer: str, ground_truth: str | None = None) -> OracleResult:
        return self.fix(problem, student_answer)

    async def asolve_direct(self, problem: dict, attempt: int = 0) -> OracleResult:
        return self.direct(problem, attempt)
