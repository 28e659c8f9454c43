"""Data-parallel generation: one long-lived engine worker process per GPU.

Why not a `multiprocessing.Pool`: its workers are daemonic, and a vLLM engine starts its
engine core in a child process, which a daemonic process may not have. Why not vLLM's own
offline data-parallel launch: it still needs one process per rank started by the caller,
and ties the ranks into one group that steps together (built for MoE expert parallelism);
for a dense model independent engines do the same work with nothing to coordinate, and a
rank with fewer prompts never waits for the others.

So each worker here is a plain, non-daemonic `spawn` process that sets
`CUDA_VISIBLE_DEVICES` to its GPU, builds its engine once and then serves chunk after
chunk of requests until the pool closes. Its stdout and stderr (the engine's own output
included) go to `engine-<rank>.log`. A worker that raises or dies stops the caller with one
error naming the worker and that log. Workers ignore Ctrl-C: the pool (a context manager)
shuts them down, on an error or an interrupt too.

Backends: `vllm` (vLLM's `LLM`, the paper path) and `vllm_standin` (`StandinLLM`, the
same process shape on CPU with transformers: see `spotlib.engines.standin`).

This module imports neither torch nor vLLM at the top: a worker imports only its engine.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import traceback
from multiprocessing.connection import wait
from pathlib import Path
from typing import Sequence

DEVICES_ENV = "SPOT_ENGINE_DEVICES"  # e.g. "0,1,2,3": the GPUs to use (default: all that CUDA sees)
STANDIN_DEVICES = ("0", "1")         # the stand-in's "devices" on CPU: two workers, like a 2-GPU box
START_TIMEOUT_S = 1800.0             # building an 8B engine (weights, CUDA graphs) takes minutes
STOP_TIMEOUT_S = 60.0


class EngineWorkerError(RuntimeError):
    """An engine worker raised or died; the message names the worker and its log."""


def default_devices(backend: str) -> list[str]:
    listed = os.environ.get(DEVICES_ENV, "").strip()
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    if backend == "vllm_standin":
        return list(STANDIN_DEVICES)
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        raise EngineWorkerError("backend vllm: no CUDA device is visible (set sample.backend/eval.backend to "
                                "transformers, or vllm_standin for a CPU rehearsal)")
    return [str(i) for i in range(count)]


def build_engine(backend: str, model_path: str, seed: int, engine_args: dict | None = None):
    """The engine for one device (called inside its worker, after CUDA_VISIBLE_DEVICES is set).

    `engine_args`: `vllm.LLM` keyword arguments from the profile (`spotlib.engines.settings`);
    without them, bf16 and SPOT_VLLM_MEM (default 0.85) of the GPU."""
    if backend == "vllm":
        from vllm import LLM  # GPU extra (or vLLM's CPU build), imported lazily

        args = dict(engine_args) if engine_args is not None else {
            "dtype": "bfloat16", "gpu_memory_utilization": float(os.environ.get("SPOT_VLLM_MEM", "0.85"))}
        return LLM(model=model_path, seed=seed, **args)
    if backend == "vllm_standin":
        from spotlib.engines.standin import StandinLLM

        return StandinLLM(model=model_path, seed=seed)
    raise ValueError(f"unknown engine backend {backend!r} (expected vllm or vllm_standin)")


def load_into_engine(engine, backend: str, model_path: str, seed: int, engine_args: dict | None):
    """The engine serving `model_path` instead: vLLM reloads the new checkpoint's weights in place
    (`reload_weights(weights_path=...)`, the load path of a fresh engine, then the CPU build's kept-weight
    GEMMs packed again; `spotlib.engines.vllm_weights`), so no engine start; the stand-in starts anew."""
    if backend == "vllm":
        from spotlib.engines.vllm_weights import reload_from_path_on_worker

        engine.collective_rpc(reload_from_path_on_worker, args=(str(model_path),))
        engine.reset_prefix_cache()
        return engine
    engine.shutdown()
    return build_engine(backend, model_path, seed, engine_args)


def same_architecture(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two saved models share an architecture (config.json apart from names, dtype and versions)."""
    ignored = {"_name_or_path", "torch_dtype", "dtype", "transformers_version", "use_cache"}  # not the weights
    configs = []
    for folder in (a, b):
        try:
            config = json.loads((Path(folder) / "config.json").read_text())
        except (OSError, ValueError):
            return False
        configs.append({k: v for k, v in config.items() if k not in ignored})
    return configs[0] == configs[1]


def _params_class(backend: str):
    if backend == "vllm":
        from vllm import SamplingParams

        return SamplingParams
    from spotlib.engines.standin import StandinSamplingParams

    return StandinSamplingParams


def engine_generate(engine, backend: str, requests: Sequence[tuple[str, int]], settings: dict,
                    progress=False) -> list[str]:
    """One completion per (prompt text, seed): `LLM.generate(prompts, [SamplingParams(seed=...)...])`,
    a list of per-request sampling parameters, outputs in the order of the prompts. `progress`:
    vLLM's `use_tqdm` (False, or a tqdm-like factory that hears of each finished request)."""
    if not requests:
        return []
    params_cls = _params_class(backend)
    top_k = settings["top_k"] if settings["top_k"] and settings["top_k"] > 0 else -1  # -1: off, in every vLLM
    params = [params_cls(n=1, seed=seed, temperature=settings["temperature"], top_p=settings["top_p"],
                         top_k=top_k, max_tokens=settings["max_tokens"]) for _, seed in requests]
    results = engine.generate([text for text, _ in requests], params, use_tqdm=progress)
    return [r.outputs[0].text.strip() for r in results]


def _worker_main(conn, backend: str, model_path: str, seed: int, device: str, log_path: str,
                 engine_args: dict | None = None, env: dict | None = None) -> None:
    """A worker's life: log to its file, build the engine once, serve requests until told to stop."""
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)  # the engine's own output (C level, child processes) goes to the log too
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # exit through finally: engine children stop
    os.environ["CUDA_VISIBLE_DEVICES"] = device  # before anything touches CUDA
    os.environ.update(env or {})  # e.g. the CPU build's core binding, before vLLM is imported
    if backend == "vllm":  # `load` ships a worker-side function (spotlib.engines.vllm_weights) to the engine core
        os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    print(f"engine worker pid {os.getpid()}, backend {backend}, device {device}, model {model_path}, "
          f"engine args {engine_args}, env {env or {}}", flush=True)
    engine = None
    try:
        started = time.perf_counter()
        engine = build_engine(backend, model_path, seed, engine_args)
        print(f"engine built in {time.perf_counter() - started:.1f} s", flush=True)
        conn.send(("ready", {"pid": os.getpid(), "device": device, "engine_pid": getattr(engine, "engine_pid", None),
                             "start_s": round(time.perf_counter() - started, 2)}))
        served = 0
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                break
            if message[0] == "stop":
                break
            if message[0] == "load":  # another model of the same architecture, into the running engine
                try:
                    started = time.perf_counter()
                    engine = load_into_engine(engine, backend, message[1], seed, engine_args)
                    model_path = message[1]
                    print(f"loaded {model_path} in {time.perf_counter() - started:.1f} s", flush=True)
                    conn.send(("ok", {"load_s": round(time.perf_counter() - started, 2)}))
                except Exception:
                    traceback.print_exc()
                    conn.send(("error", traceback.format_exc()))
                continue
            if message[0] == "info":
                conn.send(("ok", {"pid": os.getpid(), "device": device, "chunks": served,
                                  "engine_pid": getattr(engine, "engine_pid", None),
                                  "engines_built": 1, "cuda_visible_devices": os.environ["CUDA_VISIBLE_DEVICES"],
                                  "env": {k: os.environ.get(k) for k in env or {}}}))
                continue
            _, requests, settings = message
            try:
                outputs = engine_generate(engine, backend, requests, settings, progress=_reporting_bar(conn))
            except Exception:
                traceback.print_exc()
                conn.send(("error", traceback.format_exc()))
                continue
            served += 1
            print(f"chunk {served}: {len(requests)} requests", flush=True)
            conn.send(("ok", outputs))
    except Exception:
        traceback.print_exc()
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        shutdown = getattr(engine, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del engine
        log.flush()


def _reporting_bar(conn):
    """A tqdm factory for vLLM's `use_tqdm`: the bar goes to the worker's log, and finished requests
    are reported to the pool (at most about once a second) while one call serves a worker's whole share."""
    from tqdm import tqdm

    class ReportingBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(file=sys.stderr, mininterval=5.0)
            super().__init__(*args, **kwargs)
            self._unreported, self._last = 0, time.monotonic()

        def update(self, n=1):
            shown = super().update(n)
            self._unreported += n
            if time.monotonic() - self._last >= 1.0 or self.n >= (self.total or 0):
                conn.send(("progress", self._unreported))
                self._unreported, self._last = 0, time.monotonic()
            return shown

    return ReportingBar


class EnginePool:
    """Engine workers, one per device, kept for the life of the `with` block.

        with EnginePool("vllm", model_path, seed=0, log_dir=out / "engines") as pool:
            for chunk in chunks:
                texts = pool.generate([(prompt_text, seed), ...], settings)

    `generate` splits the requests into one contiguous block per worker and returns the
    completions in input order.
    """

    def __init__(self, backend: str, model_path: str, *, seed: int = 0, devices: Sequence[str] | None = None,
                 log_dir: str | os.PathLike | None = None, engine_args: dict | None = None,
                 worker_envs: Sequence[dict] | None = None):
        self.backend = backend
        self.engine_args = engine_args
        self.worker_envs = list(worker_envs) if worker_envs is not None else None
        self.model_path = str(model_path)
        self.seed = seed
        self.devices = list(devices) if devices is not None else default_devices(backend)
        if not self.devices:
            raise EngineWorkerError(f"engine pool ({backend}): no devices to start workers on")
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="spot-engines-"))
        self.workers: list[dict] = []

    # ------------------------------------------------------------ life cycle
    def __enter__(self) -> "EnginePool":
        self.start()
        return self

    def __exit__(self, exc_type, *_) -> None:
        # On an error or Ctrl-C a worker may be mid-chunk: do not wait for it to finish.
        self.close(timeout=5.0 if exc_type is not None else STOP_TIMEOUT_S)

    def start(self) -> None:
        started = time.perf_counter()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA or threads
        try:
            for rank, device in enumerate(self.devices):
                log_path = self.log_dir / f"engine-{rank}.log"
                log_path.write_text("")
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, name=f"spot-engine-{rank}", daemon=False,
                                   args=(child, self.backend, self.model_path, self.seed, device, str(log_path),
                                         self.engine_args, self.worker_envs[rank] if self.worker_envs else None))
                proc.start()
                child.close()
                self.workers.append({"rank": rank, "device": device, "proc": proc, "conn": parent,
                                     "log": log_path, "info": None})
            for worker, (kind, info) in zip(self.workers, self._collect(self.workers, START_TIMEOUT_S)):
                worker["info"] = info
            self.start_seconds = time.perf_counter() - started  # engine start-up, the pool's fixed cost
            with (self.log_dir / "starts.jsonl").open("a") as starts:
                starts.write(json.dumps({"backend": self.backend, "model": self.model_path,
                                         "workers": len(self.workers), "start_s": round(self.start_seconds, 2),
                                         "engine_args": self.engine_args}) + "\n")
        except BaseException:
            self.close(timeout=5.0)
            raise

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every worker: ask, wait up to `timeout`, then terminate (the worker exits through its
        engine's shutdown), then kill."""
        for worker in self.workers:
            try:
                worker["conn"].send(("stop",))
            except (OSError, ValueError):
                pass
        for worker in self.workers:
            proc = worker["proc"]
            proc.join(timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            worker["conn"].close()
        self.workers = []

    # ------------------------------------------------------------ work
    def generate(self, requests: Sequence[tuple[str, int]], settings: dict, on_progress=None) -> list[str]:
        """One completion per (prompt text, seed), in input order: each worker gets its whole block in
        one call. `on_progress(n)` hears of finished requests while they run (vLLM engines)."""
        if not self.workers:
            raise EngineWorkerError(f"engine pool ({self.backend}) is not running (use it inside `with`)")
        blocks = _split(len(requests), len(self.workers))
        busy = []
        for worker, (lo, hi) in zip(self.workers, blocks):
            if hi > lo:
                self._send(worker, ("generate", list(requests[lo:hi]), dict(settings)))
                busy.append((worker, lo, hi))
        out: list[str] = [""] * len(requests)
        replies = self._collect([w for w, _, _ in busy], timeout=None, on_progress=on_progress)
        for (worker, lo, hi), (_, outputs) in zip(busy, replies):
            if len(outputs) != hi - lo:
                raise EngineWorkerError(self._name(worker) + f" returned {len(outputs)} completions for "
                                        f"{hi - lo} requests; its log: {worker['log']}")
            out[lo:hi] = outputs
        return out

    def load(self, model_path: str | os.PathLike) -> str:
        """Serve another model: weights reloaded into the running engines when the architecture is the
        same ("reloaded"), else the workers restarted ("restarted"). Returns which."""
        model_path = str(model_path)
        if model_path == self.model_path:
            return "same"
        if not self.workers or not same_architecture(self.model_path, model_path):
            self.close()
            self.model_path = model_path
            self.start()
            return "restarted"
        started = time.perf_counter()
        for worker in self.workers:
            self._send(worker, ("load", model_path))
        self._collect(self.workers, timeout=START_TIMEOUT_S)
        self.model_path = model_path
        with (self.log_dir / "starts.jsonl").open("a") as starts:
            starts.write(json.dumps({"backend": self.backend, "model": model_path, "workers": len(self.workers),
                                     "reload_s": round(time.perf_counter() - started, 2)}) + "\n")
        return "reloaded"

    def info(self) -> list[dict]:
        """Each worker's pid, device, engine pid and chunks served (for checks and logs)."""
        for worker in self.workers:
            self._send(worker, ("info",))
        return [info for _, info in self._collect(self.workers, timeout=60.0)]

    # ------------------------------------------------------------ plumbing
    def _name(self, worker) -> str:
        return f"engine worker {worker['rank']} (device {worker['device']}, backend {self.backend})"

    def _send(self, worker, message) -> None:
        try:
            worker["conn"].send(message)
        except (OSError, ValueError):
            raise self._died(worker) from None

    def _died(self, worker) -> EngineWorkerError:
        proc = worker["proc"]
        proc.join(1)
        return EngineWorkerError(f"{self._name(worker)} died (exit code {proc.exitcode}); its log: {worker['log']}")

    def _collect(self, workers: list[dict], timeout: float | None, on_progress=None) -> list[tuple[str, object]]:
        """One reply from each worker; the first error or death raises, naming the worker and its log."""
        replies: dict[int, tuple[str, object]] = {}
        pending = {w["rank"]: w for w in workers}
        while pending:
            waitables = [w["conn"] for w in pending.values()] + [w["proc"].sentinel for w in pending.values()]
            ready = wait(waitables, timeout)
            if not ready:
                names = ", ".join(self._name(w) for w in pending.values())
                raise EngineWorkerError(f"no reply after {timeout:.0f} s from {names}; logs in {self.log_dir}")
            for rank, worker in list(pending.items()):
                conn = worker["conn"]
                if conn in ready or worker["proc"].sentinel in ready:
                    try:
                        has_reply = conn.poll()
                        reply = conn.recv() if has_reply else None
                    except (EOFError, OSError):
                        reply = None
                    if reply is None:
                        if worker["proc"].is_alive() and conn not in ready:
                            continue
                        raise self._died(worker)
                    if reply[0] == "progress":  # the worker is still at it
                        if on_progress is not None:
                            on_progress(reply[1])
                        continue
                    if reply[0] == "error":
                        last = str(reply[1]).strip().splitlines()[-1]
                        raise EngineWorkerError(f"{self._name(worker)} failed: {last}; its log: {worker['log']}")
                    replies[rank] = reply
                    del pending[rank]
        return [replies[w["rank"]] for w in workers]


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous blocks covering range(n), sizes differing by at most one."""
    base, extra = divmod(n, parts)
    bounds, lo = [], 0
    for p in range(parts):
        hi = lo + base + (1 if p < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds
