"""An Oracle behind any OpenAI-compatible endpoint (Gemini's, a vLLM server, the local one).

Robustness, in layers:
- the SDK retries connection errors, timeouts, 429 and 5xx with exponential back-off
  and honours a server's `Retry-After` (`max_retries`, per-request `timeout_s`);
- on top, failures the SDK cannot retry — a stream dropped halfway, a body that is
  not JSON — are retried `request_retries` times, and a reply without markers is
  asked again `parse_retries` times;
- what still fails becomes an `OracleResult` with its reason, never an exception.

Thoughts: Gemini's OpenAI-compatible endpoint returns its thought summaries only when
asked (`oracle.extra_body: {extra_body: {google: {thinking_config: {include_thoughts:
true}}}}` in the paper profile); they arrive in `<thought>` tags in the content, other
servers use `<think>` tags or a `reasoning_content` field: all end in `thoughts`.

Cost estimate: prompt_tokens · p_in + output tokens · p_out, prices per million tokens
from the profile. Thinking tokens are billed as output. Providers report them two ways:
inside `completion_tokens` (OpenAI, vLLM: `completion_tokens_details.reasoning_tokens` is a
breakdown) or beside it (Gemini: `total_tokens` = prompt + completion + thoughts). The
output counted is therefore max(completion, total − prompt), plus the reported reasoning
tokens when there is no total to tell. A result's `completion_tokens` is that billed
output; `info["reasoning_tokens"]` its thinking part.

Cost cap: once the estimated spend of this Oracle (every request it sent in this run of
the stage, rectify and direct alike) reaches `oracle.max_cost_usd`, it sends nothing more: each further request
ends as a transient `budget_exhausted` failure (asked again on a re-run). Requests
already in flight finish, so the spend can pass the cap by at most `concurrency`
requests.

The API key is read from the environment variable named in the profile and is held
only by the client object.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import openai

from spotlib.config import OracleConfig, secret_from_env

from . import prompts
from .base import Oracle, OracleResult
from .parsing import CORRECTED, SOLUTION, parse_reply

_FINAL_4XX = {400, 401, 403, 404, 422}   # the request itself is wrong: asking again cannot help


class _Reply:
    def __init__(self, content: str, reasoning: str | None, finish: str | None, usage: Any):
        self.content, self.reasoning, self.finish = content, reasoning, finish
        self.prompt_tokens, self.output_tokens, self.reasoning_tokens = billed_tokens(usage)


def billed_tokens(usage: Any) -> tuple[int, int, int]:
    """(prompt, billed output, thinking part of it) from an OpenAI-style `usage` object."""
    prompt = getattr(usage, "prompt_tokens", 0) or 0
    completion = getattr(usage, "completion_tokens", 0) or 0
    total = getattr(usage, "total_tokens", 0) or 0
    details = getattr(usage, "completion_tokens_details", None)
    reported = (getattr(details, "reasoning_tokens", 0) or 0) if details is not None else 0
    if total:
        output = max(completion, total - prompt)      # thoughts beside the completion show in the total
        thinking = reported if reported else output - completion
    else:
        output, thinking = completion + reported, reported   # nothing to tell: count them (cap errs high)
    return prompt, output, thinking


def _reasoning_of(obj) -> str | None:
    """vLLM and others return thoughts in a side field rather than `<think>` tags."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(obj, name, None)
        if value is None and getattr(obj, "model_extra", None):
            value = obj.model_extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


class OpenAIOracle(Oracle):
    kind = "openai"

    def __init__(self, cfg: OracleConfig, base_url: str | None = None, api_key: str | None = None):
        self.cfg = cfg
        self.base_url = base_url or cfg.base_url
        # A local server needs no key; a real endpoint's key comes from the named variable only.
        self._api_key = api_key or secret_from_env(cfg.api_key_env) or "no-key"
        self._clients: dict[int, openai.AsyncOpenAI] = {}
        self.spent_usd = 0.0            # estimated spend of every request sent (the cap's measure)

    def settings(self) -> dict:
        c = self.cfg
        return {"kind": self.kind, "model": c.model, "prompt_variant": c.prompt_variant,
                "temperature": c.temperature, "max_tokens": c.max_tokens, "extra_body": c.extra_body}

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIOracle(model={self.cfg.model!r}, base_url={self.base_url!r})"

    def _client(self) -> openai.AsyncOpenAI:
        # One client per event loop: its connection pool belongs to the loop that made it.
        loop_id = id(asyncio.get_running_loop())
        if loop_id not in self._clients:
            self._clients[loop_id] = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, max_retries=self.cfg.max_retries,
                timeout=self.cfg.timeout_s)
        return self._clients[loop_id]

    async def aclose(self) -> None:
        loop_id = id(asyncio.get_running_loop())
        client = self._clients.pop(loop_id, None)
        if client is not None:
            await client.close()

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.cfg.price_input_per_mtok
                + completion_tokens * self.cfg.price_output_per_mtok) / 1e6

    async def arectify(self, problem: dict, student_answer: str, ground_truth: str | None = None) -> OracleResult:
        if ground_truth is None and self.cfg.prompt_variant == "with_ground_truth":
            ground_truth = problem.get("answer")
        text = prompts.rectify_prompt(self.cfg.prompt_variant, problem["prompt"], student_answer, ground_truth)
        return await self._ask(text, CORRECTED)

    async def asolve_direct(self, problem: dict, attempt: int = 0) -> OracleResult:
        return await self._ask(prompts.direct_prompt(problem["prompt"]), SOLUTION)

    def over_budget(self) -> bool:
        cap = self.cfg.max_cost_usd
        return cap is not None and self.spent_usd >= cap

    async def _ask(self, user_text: str, markers: tuple[str, str]) -> OracleResult:
        started = time.perf_counter()
        tokens_in = tokens_out = thinking = attempts = 0
        transport_left, parse_left = self.cfg.request_retries, self.cfg.parse_retries
        while True:
            if self.over_budget():
                return OracleResult(None, failure="budget_exhausted", transient=True, attempts=attempts,
                                    prompt_tokens=tokens_in, completion_tokens=tokens_out,
                                    cost_usd=self.cost(tokens_in, tokens_out),
                                    latency_s=time.perf_counter() - started,
                                    info={"reasoning_tokens": thinking, "spent_usd": round(self.spent_usd, 4)})
            attempts += 1
            try:
                reply = await self._request(user_text)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded reason
                reason, retryable = _classify(exc)
                if retryable and transport_left > 0:
                    await asyncio.sleep(self.cfg.retry_base_s * 2 ** (self.cfg.request_retries - transport_left))
                    transport_left -= 1
                    continue
                return OracleResult(None, failure=reason, transient=retryable, attempts=attempts,
                                    prompt_tokens=tokens_in, completion_tokens=tokens_out,
                                    cost_usd=self.cost(tokens_in, tokens_out),
                                    latency_s=time.perf_counter() - started, info={"error": str(exc)[:300]})
            tokens_in += reply.prompt_tokens
            tokens_out += reply.output_tokens
            thinking += reply.reasoning_tokens
            self.spent_usd += self.cost(reply.prompt_tokens, reply.output_tokens)
            parsed = parse_reply(reply.content, markers, reasoning=reply.reasoning, finish_reason=reply.finish)
            if parsed.failure and parse_left > 0:
                parse_left -= 1
                continue
            info = {"finish_reason": reply.finish, "reasoning_tokens": thinking}
            if parsed.failure:
                info["reply_head"] = (reply.content or "")[:300]
            return OracleResult(parsed.text, thoughts=parsed.thoughts, failure=parsed.failure,
                                prompt_tokens=tokens_in, completion_tokens=tokens_out,
                                cost_usd=self.cost(tokens_in, tokens_out), attempts=attempts,
                                latency_s=time.perf_counter() - started, info=info)

    async def _request(self, user_text: str) -> _Reply:
        c = self.cfg
        kwargs: dict[str, Any] = {"model": c.model, "messages": [{"role": "user", "content": user_text}]}
        if c.temperature is not None:
            kwargs["temperature"] = c.temperature
        if c.max_tokens is not None:
            kwargs["max_tokens"] = c.max_tokens
        if c.extra_body:
            kwargs["extra_body"] = c.extra_body
        client = self._client()
        if not c.stream:
            resp = await client.chat.completions.create(**kwargs)
            if not getattr(resp, "choices", None):
                raise ValueError(f"malformed response: no choices in {str(resp)[:200]}")
            choice = resp.choices[0]
            return _Reply(choice.message.content or "", _reasoning_of(choice.message),
                          choice.finish_reason, resp.usage)
        # Streaming: the SDK retries opening the stream; a stream that stalls or drops is ours.
        return await asyncio.wait_for(self._stream(client, kwargs), timeout=c.timeout_s)

    async def _stream(self, client, kwargs) -> _Reply:
        stream = await client.chat.completions.create(**kwargs, stream=True,
                                                      stream_options={"include_usage": True})
        content, reasoning, finish, usage = [], [], None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices or []:
                if choice.delta is not None:
                    content.append(choice.delta.content or "")
                    reasoning.append(_reasoning_of(choice.delta) or "")
                finish = choice.finish_reason or finish
        if finish is None:
            raise ConnectionError("stream ended without a finish reason (dropped)")
        return _Reply("".join(content), "".join(reasoning) or None, finish, usage)


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(failure reason, whether asking again may help)."""
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}", exc.status_code not in _FINAL_4XX
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
        return "timeout", True
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, ValueError)) \
            and not isinstance(exc, openai.APIConnectionError):
        return "malformed_response", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error", True
    return f"stream_error:{type(exc).__name__}", True
