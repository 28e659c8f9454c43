"""The Oracle interface: rectify a wrong answer, or solve a problem from scratch.

Every Oracle returns an `OracleResult`: the text (y⁺ or a direct solution), its
thoughts kept apart, token usage and cost, and when it failed, the reason. Failures
are data, not exceptions: a stage counts them. A *transient* failure (the endpoint
was unreachable after every retry) is not a verdict on the request, so it is not
stored as done and a re-run asks again. A request the endpoint *refuses* (a wrong key,
URL, model name or request: HTTP 400/401/403/404/422) is neither: the stage stops with
`OracleRequestError` and stores nothing, since the fix is the user's, not a retry's.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from spotlib.io import params_hash

from . import prompts


@dataclass
class OracleResult:
    text: str | None
    thoughts: str = ""
    failure: str | None = None      # reason when text is None
    transient: bool = False         # failure of the transport, not of the Oracle: retry on a re-run
    mode: str | None = None         # "edit" | "rewrite" (programmatic) | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 1
    latency_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.text is not None

    def to_record(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["ok"] = self.ok
        return body


# Failures that mean the settings are wrong (key, URL, model, request), not the item.
SETTINGS_FAILURES = frozenset({"http_400", "http_401", "http_403", "http_404", "http_422"})


class OracleRequestError(RuntimeError):
    """The endpoint refused the requests themselves: fix the profile or the key, then re-run."""


class OracleUnanswered(RuntimeError):
    """Requests still unanswered after every retry (an endpoint down, refusing, or a spending cap):
    what was answered is kept and a re-run asks only for the rest."""


class Oracle:
    """Subclasses implement `arectify` and `asolve_direct`; the sync forms wrap them."""

    kind = "base"

    def settings(self) -> dict[str, Any]:
        """Everything that changes the Oracle's answers (hashed into resume keys). Never secrets."""
        return {"kind": self.kind}

    def endpoint(self) -> str | None:
        """Where requests go (an HTTP Oracle's base URL): another server may answer otherwise."""
        cfg = getattr(self, "cfg", None)
        if getattr(cfg, "kind", None) == "local_server":
            return "local_server"  # a fresh port each run, the same answers
        return getattr(self, "base_url", None)

    def fingerprint(self) -> str:
        return params_hash({"settings": self.settings(), "endpoint": self.endpoint(),
                            "prompts": prompts.templates_hash()})

    async def arectify(self, problem: dict, student_answer: str, ground_truth: str | None = None) -> OracleResult:
        raise NotImplementedError

    async def asolve_direct(self, problem: dict, attempt: int = 0) -> OracleResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None

    def rectify(self, problem: dict, student_answer: str, ground_truth: str | None = None) -> OracleResult:
        return run_sync(self._once(self.arectify(problem, student_answer, ground_truth)))

    def solve_direct(self, problem: dict, attempt: int = 0) -> OracleResult:
        return run_sync(self._once(self.asolve_direct(problem, attempt)))

    async def _once(self, coro):
        try:
            return await coro
        finally:
            await self.aclose()


def run_sync(coro):
    """Run a coroutine to completion from sync code, also inside Jupyter's running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
