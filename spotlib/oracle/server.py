"""A small OpenAI-compatible chat-completions server answering with the ProgrammaticOracle.

It puts the real HTTP path under test: `OpenAIOracle` talks to it exactly as it would
to Gemini or vLLM, streaming or not. Faults can be injected at a rate each (seeded)
or by a script (one fault name per request, in order):

    http_500      a 500 error                 http_429   a 429 with Retry-After
    timeout       no answer for `hang_s`      drop_stream  connection cut mid-reply
    no_markers    a reply without the markers bad_json   a body that is not JSON

`latency_s` in the fault table delays every answer. Binds 127.0.0.1 only.

How the Oracle's thoughts come back (`thinking`), as the servers it stands in for do:

    inline     `<think>` tags in the content, counted in completion_tokens (default)
    gemini     Gemini's OpenAI-compatible endpoint: thoughts are always spent and billed
               beside the answer (usage.completion_tokens_details.reasoning_tokens, and in
               total_tokens but not completion_tokens); shown, in `<thought>` tags, only when
               the request asks with extra_body.google.thinking_config.include_thoughts
    field      vLLM's reasoning parser: a `reasoning_content` field, reasoning tokens a
               breakdown of completion_tokens
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
import uuid
from typing import Iterable

from aiohttp import web

from . import prompts
from .faults import FAULTS
from .parsing import CORRECTED, SOLUTION, wrap
from .programmatic import ProgrammaticOracle

THINKING = ("inline", "gemini", "field")


class OracleServer:
    def __init__(self, problems: Iterable[dict] = (), faults: dict[str, float] | None = None,
                 script: Iterable[str | None] = (), seed: int = 0, retry_after_s: float = 1.0,
                 hang_s: float = 30.0, oracle: ProgrammaticOracle | None = None, thinking: str = "inline"):
        if thinking not in THINKING:
            raise ValueError(f"unknown thinking mode {thinking!r} (expected one of {', '.join(THINKING)})")
        self.thinking = thinking
        self.problems = {p["prompt"]: p for p in problems}
        faults = dict(faults or {})
        self.latency_s = float(faults.pop("latency_s", 0.0))
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown server fault(s) {sorted(unknown)} (expected {', '.join(FAULTS)}, latency_s)")
        self.fault_rates = faults
        self.script = list(script)
        self.rng = random.Random(seed)   # faults by arrival (a re-run meets others); replies by content
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.oracle = oracle or ProgrammaticOracle(seed)
        self.log: list[dict] = []       # one entry per request: time, fault, stream
        self.in_flight = self.max_in_flight = 0
        self.port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_problems(self, problems: Iterable[dict]) -> None:
        self.problems.update({p["prompt"]: p for p in problems})

    # -- lifecycle: its own thread and event loop, so it serves while the caller's loop awaits it
    def start(self) -> "OracleServer":
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._startup())
            except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="oracle-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    async def _startup(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> "OracleServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- requests
    def _pick_fault(self) -> str | None:
        if self.script:
            return self.script.pop(0)
        for name, rate in self.fault_rates.items():
            if self.rng.random() < rate:
                return name
        return None

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "programmatic", "object": "model"}]})

    def _answer(self, user_text: str, seed: int = 0) -> tuple[str, str]:
        """(the marked answer, the thoughts behind it): worded by the request's content and `seed` field
        (as a model at temperature 0 would answer), never by arrival order, so a resumed run is exact."""
        req = prompts.read_request(user_text)
        problem = self.problems.get(req["problem"])
        if problem is None:
            return "I do not recognise this problem, so I cannot check the solution.", ""
        if req["kind"] == "rectify":
            result = self.oracle.fix(problem, req["student_answer"])
            return wrap(result.text, CORRECTED), result.thoughts
        return (wrap(self.oracle.direct(problem, attempt=seed).text, SOLUTION),
                "Solving the problem from scratch, left to right.")

    def _present(self, body: dict, answer: str, thoughts: str, prompt_tokens: int) -> tuple[str, str | None, dict]:
        """(content, reasoning field, usage) of a reply in this server's thinking mode."""
        answer_tokens, thought_tokens = len(answer) // 4, len(thoughts) // 4
        if self.thinking == "inline":
            content = f"<think>\n{thoughts}\n</think>\n\n{answer}" if thoughts else answer
            return content, None, {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                                   "total_tokens": prompt_tokens + len(content) // 4}
        details = {"reasoning_tokens": thought_tokens}
        if self.thinking == "field":
            completion = answer_tokens + thought_tokens
            return answer, thoughts, {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                      "total_tokens": prompt_tokens + completion,
                                      "completion_tokens_details": details}
        google = ((body.get("extra_body") or {}).get("google") or {}).get("thinking_config") or {}
        content = f"<thought>{thoughts}</thought>{answer}" if google.get("include_thoughts") else answer
        return content, None, {"prompt_tokens": prompt_tokens, "completion_tokens": answer_tokens,
                               "total_tokens": prompt_tokens + answer_tokens + thought_tokens,
                               "completion_tokens_details": details}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            user_text = body["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return web.json_response({"error": {"message": "expected {messages: [...]}"}}, status=400)
        fault = self._pick_fault()
        stream = bool(body.get("stream"))
        self.log.append({"t": time.monotonic(), "fault": fault, "stream": stream})
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "http_500":
            return web.json_response({"error": {"message": "injected server error"}}, status=500)
        if fault == "http_429":
            return web.json_response(
                {"error": {"message": "injected rate limit"}}, status=429,
                headers={"Retry-After": str(math.ceil(self.retry_after_s)),
                         "retry-after-ms": str(int(self.retry_after_s * 1000))})
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
        answer, thoughts = self._answer(user_text, int(body.get("seed") or 0))
        if fault == "no_markers":
            for marker in (*CORRECTED, *SOLUTION):
                answer = answer.replace(marker, "")
            answer = "Here is the corrected solution:\n" + answer.strip()
        content, reasoning, usage = self._present(body, answer, thoughts, len(user_text) // 4)
        model = body.get("model", "programmatic")
        if not stream:
            if fault == "drop_stream":   # cut the connection before any answer
                request.transport.close()
                return web.Response(status=500)
            if fault == "bad_json":
                return web.Response(text='{"id": "x", "choices": [{"message": ', content_type="application/json")
            message = {"role": "assistant", "content": content}
            if reasoning:
                message["reasoning_content"] = reasoning
            return web.json_response({
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop", "message": message}]})
        return await self._stream(request, body, content, usage, model, fault, reasoning)

    async def _stream(self, request, body, content, usage, model, fault, reasoning=None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        def event(choices, usage_field=None) -> bytes:
            chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": choices}
            if usage_field is not None:
                chunk["usage"] = usage_field
            return f"data: {json.dumps(chunk)}\n\n".encode()

        await resp.write(event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
        if reasoning:
            await resp.write(event([{"index": 0, "delta": {"reasoning_content": reasoning}, "finish_reason": None}]))
        pieces = [content[i:i + 64] for i in range(0, len(content), 64)] or [""]
        for k, piece in enumerate(pieces):
            if fault == "drop_stream" and k >= len(pieces) // 2:
                request.transport.close()   # the connection dies mid-reply
                return resp
            if fault == "bad_json" and k == len(pieces) // 2:
                await resp.write(b'data: {"id": "x", "choices": [{"delta": \n\n')
                continue
            await resp.write(event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}]))
        await resp.write(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(event([], usage))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
