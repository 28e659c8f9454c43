"""A CPU stand-in for vLLM's `LLM`, with vLLM's process shape.

Like vLLM (whose `LLM(...)` starts its engine core in a child process), `StandinLLM(...)`
starts a child process that loads the model and generates; so, like vLLM, it cannot be
built inside a daemonic process (`multiprocessing.Pool` workers):
`AssertionError: daemonic processes are not allowed to have children`.

It speaks the part of vLLM's API the package uses: `LLM(model=path, seed=...)`,
`generate(prompts, [SamplingParams(n=1, seed=..., temperature=..., top_p=..., top_k=...,
max_tokens=...)], use_tqdm=False)` returning outputs with `.outputs[0].text`, one per
prompt, in order. Each request is sampled with its own seed (transformers on CPU, one
generator per row: `spotlib.engines.rows.generate_rows`), so its completions equal the
transformers backend's for the same seeds.

Select it with `sample.backend: vllm_standin` / `eval.backend: vllm_standin` in a profile:
the paper's data-parallel path (`spotlib.engines.pool`, two workers on CPU) then runs end to
end without a GPU.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StandinSamplingParams:
    """The fields of `vllm.SamplingParams` the package sets, validated as vLLM validates them."""
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    seed: int | None = None

    def __post_init__(self):
        if self.n != 1:
            raise ValueError(f"n must be 1 in the stand-in (one request per sample), got {self.n}")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1 or self.top_k == 0:
            raise ValueError(f"top_k must be -1 (disable), or at least 1, got {self.top_k}.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")


@dataclass
class CompletionOutput:
    text: str
    finish_reason: str | None = None   # as vLLM's: "stop" (eos written) or "length" (cut at max_tokens)


@dataclass
class RequestOutput:
    prompt: str
    outputs: list[CompletionOutput] = field(default_factory=list)


class StandinLLM:
    """`LLM(model=path, seed=...)` on CPU: the model lives in a child process ("engine core")."""

    def __init__(self, model: str, seed: int | None = None, max_num_seqs: int = 64, **_ignored):
        if not (Path(model) / "config.json").is_file():  # vLLM, too, reads the config before its engine starts
            raise FileNotFoundError(f"{model}: no config.json here (expected a saved model folder)")
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # Raises in a daemonic process, exactly where vLLM's engine core start does.
        self._proc = ctx.Process(target=_engine_core, args=(child, model, max_num_seqs), daemon=True,
                                 name="standin-engine-core")
        self._proc.start()
        child.close()
        status, detail = self._reply()
        if status != "ready":
            raise RuntimeError(f"stand-in engine for {model} failed to start: {detail}")
        self.engine_pid = self._proc.pid

    def generate(self, prompts, sampling_params, use_tqdm: bool = True) -> list[RequestOutput]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not isinstance(sampling_params, (list, tuple)):
            sampling_params = [sampling_params] * len(prompts)
        if len(sampling_params) != len(prompts):
            raise ValueError(f"The lengths of prompts ({len(prompts)}) and sampling_params "
                             f"({len(sampling_params)}) must be the same.")
        if not prompts:
            return []
        self._conn.send(("generate", prompts, [vars(p) for p in sampling_params]))
        status, detail = self._reply()
        if status != "ok":
            raise RuntimeError(f"stand-in engine failed: {detail}")
        return [RequestOutput(p, [CompletionOutput(t, why)]) for p, (t, why) in zip(prompts, detail)]

    def shutdown(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(("stop",))
            except OSError:
                pass
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()

    def _reply(self):
        try:
            return self._conn.recv()
        except EOFError:
            self._proc.join(1)
            raise RuntimeError(f"stand-in engine core died (exit code {self._proc.exitcode})") from None


def _engine_core(conn, model_path: str, max_num_seqs: int) -> None:
    """The child: load once, then generate each batch of requests with per-request seeds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the main process to handle
    try:
        import torch

        torch.set_num_threads(1)  # one core per "device"
        from spotlib.models import load_model
        from spotlib.engines.rows import generate_rows

        model, tokenizer = load_model(model_path, dtype="float32", device="cpu")
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the engine's owner is gone
            return
        if message[0] == "stop":
            return
        _, prompts, params = message
        try:
            groups: dict[tuple, list[int]] = {}  # same settings: one generate_rows call
            for i, p in enumerate(params):
                groups.setdefault((p["temperature"], p["top_p"], p["top_k"], p["max_tokens"]), []).append(i)
            texts: list[tuple[str, str]] = [("", "stop")] * len(prompts)
            for (temperature, top_p, top_k, max_tokens), rows in groups.items():
                outs, reasons = generate_rows(model, tokenizer, [prompts[i] for i in rows],
                                              [params[i]["seed"] or 0 for i in rows], temperature=temperature,
                                              top_p=top_p, top_k=top_k, max_new_tokens=max_tokens,
                                              batch_size=max_num_seqs, with_finish_reasons=True)
                for i, text, reason in zip(rows, outs, reasons):
                    texts[i] = (text, reason)
            conn.send(("ok", texts))
        except Exception as exc:  # noqa: BLE001
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
