"""Rollout engines for GRPO: transformers `generate` on the policy itself (CPU), or one
vLLM engine per training process, colocated on that process's GPU (the paper path).

vLLM (colocated, as TRL's `vllm_mode="colocate"`): each rank builds `LLM(...)` from the
start model with a small `gpu_memory_utilization` (the policy, its optimiser shard and
activations need the rest of the card) and `distributed_executor_backend=
"external_launcher"` when several ranks run, so the engine lives in the training
process and joins its torch.distributed world instead of spawning workers. Before each
rollout the policy's current weights are loaded into the engine in place (the worker's
`reload_weights`, vLLM's in-place reload: every layer's weights are processed again, as at
load time), and the prefix cache is reset (cached prompt KV came from the old weights).
Every prompt gets its own sampling seed (from the run seed, the step and the prompt's id),
so a prompt's rollouts do not depend on which rank samples it.

Between rollouts the engine sleeps where vLLM's platform supports it
(`current_platform.is_sleep_mode_available()`: CUDA; the CPU build does not): built with
`enable_sleep_mode=True`, it is put to `sleep(level=2)` after each rollout (weights and KV
cache released: the next push overwrites every weight anyway) and woken (`wake_up(["weights"])`,
push, `wake_up(["kv_cache"])`) before the next, so training has the card to itself.

On vLLM's CPU build the reload alone leaves a tied LM head computing with the old
embeddings; `spotlib.engines.vllm_weights` packs it again (see there).

`release()` frees the engine (engine core shut down, collected, CUDA cache emptied):
the trainer calls it when the run ends, before anything else (stage 06's evaluation)
needs the GPU.
"""
from __future__ import annotations

import gc
import hashlib
import os
from typing import Sequence

import torch

from spotlib.engines.vllm_weights import reload_weights_on_worker


def prompt_seed(seed: int, item_id: str) -> int:
    """A sampling seed that depends only on (seed, item id): the same on any rank, in any batch."""
    digest = hashlib.sha256(f"{seed}|{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class RolloutEngine:
    """Samples n responses per prompt from the current policy.

    `rank`/`world` say which training process this is (the transformers backend offsets
    its batch seed by rank; vLLM seeds every prompt by its id).
    """

    def __init__(self, backend: str, init_path: str | os.PathLike, seed: int, *, rank: int = 0,
                 world: int = 1, gpu_memory: float = 0.3, max_len: int | None = None,
                 engine_args: dict | None = None):
        from spotlib.engines.sampling import choose_backend

        self.backend = choose_backend(backend)
        self.init_path = str(init_path)
        self.seed = seed
        self.rank = rank
        self.world = world
        self.gpu_memory = gpu_memory
        self.max_len = max_len
        self.engine_args = engine_args  # `vllm.LLM` arguments from the profile (`spotlib.engines.settings`)
        self.sleeps = False             # whether the engine sleeps between rollouts (set when it is built)
        self._asleep = False
        self._llm = None
        self.finish_reasons: list[list[str]] = []  # the last `sample`'s, per prompt and rollout: "stop" | "length"

    # ------------------------------------------------------------------ sampling

    def sample(self, policy, tokenizer, prompts: Sequence[str], *, n: int, temperature: float,
               top_p: float, top_k: int, max_new_tokens: int, seed: int, batch_size: int,
               autocast, ids: Sequence[str] | None = None) -> list[list[str]]:
        """`policy` is the plain HF model (unwrapped). `seed` is the same on every rank."""
        from spotlib.engines.sampling import generate

        if self.backend == "vllm":
            return self._sample_vllm(policy, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p,
                                     top_k=top_k, max_new_tokens=max_new_tokens, seed=seed,
                                     ids=ids or [str(i) for i in range(len(prompts))])
        with autocast:
            texts, self.finish_reasons = generate(
                policy, tokenizer, prompts, n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                max_new_tokens=max_new_tokens, seed=seed + 7919 * self.rank, batch_size=batch_size,
                backend="transformers", progress=False, with_finish_reasons=True)
        return texts

    def _sample_vllm(self, policy, tokenizer, prompts, *, n, temperature, top_p, top_k, max_new_tokens,
                     seed, ids) -> list[list[str]]:
        from vllm import SamplingParams  # GPU extra, imported lazily

        from spotlib.models import chat_prompt

        llm = self.push_weights(policy)
        texts = [chat_prompt(tokenizer, p) for p in prompts]
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p, top_k=top_k,
                                 max_tokens=max_new_tokens, seed=prompt_seed(seed, i)) for i in ids]
        results = llm.generate(texts, params, use_tqdm=False)
        self.finish_reasons = [[c.finish_reason for c in r.outputs] for r in results]
        self.sleep()
        return [[c.text.strip() for c in r.outputs] for r in results]

    def sleep(self) -> None:
        """Release the engine's weights and KV cache until the next rollout (where vLLM supports it)."""
        if self._llm is not None and self.sleeps and not self._asleep:
            self._llm.sleep(level=2)
            self._asleep = True

    # ------------------------------------------------------------------ vLLM engine

    def engine(self):
        """This process's vLLM engine, built once."""
        if self._llm is None:
            from vllm import LLM  # GPU extra, imported lazily

            kwargs = {}
            if self.world > 1:
                # One engine per training rank, inside that rank's process (TRL's colocate mode).
                kwargs["distributed_executor_backend"] = "external_launcher"
            else:  # the model must live in this process for in-place weight loading
                os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            if self.max_len:
                kwargs["max_model_len"] = self.max_len
            kwargs.update(self.engine_args or {"dtype": "bfloat16", "gpu_memory_utilization": self.gpu_memory})
            self.sleeps = sleep_mode_available()
            self._llm = LLM(model=self.init_path, seed=self.seed + self.rank, enable_sleep_mode=self.sleeps,
                            **kwargs)
        return self._llm

    def push_weights(self, policy):
        """Load the policy's current weights into the engine in place; returns the engine."""
        llm = self.engine()
        if self._asleep:
            llm.wake_up(tags=["weights"])
        # named_parameters yields tied weights once, under the HF names vLLM's loaders expect.
        weights = [(name, param.detach()) for name, param in policy.named_parameters()]
        # On the engine's worker: in this process (colocated) the tensors are handed over as they are;
        # an engine core in another process receives CPU copies.
        if _engine_in_process(llm):
            llm.collective_rpc(reload_weights_on_worker, args=(weights,))
        else:
            llm.collective_rpc(reload_weights_on_worker, args=([(k, v.cpu()) for k, v in weights],))
        if self._asleep:
            llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        if hasattr(llm, "reset_prefix_cache"):
            llm.reset_prefix_cache()
        return llm

    def release(self) -> None:
        """Free the engine and its GPU memory (idempotent)."""
        llm, self._llm = self._llm, None
        if llm is not None:
            release_vllm(llm)
            del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def release_vllm(llm) -> None:
    """Shut a vLLM `LLM` down: its V1 engine core (in-process or a child process) first."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def sleep_mode_available() -> bool:
    """Whether vLLM can sleep on this platform (CUDA yes; its CPU build no: the worker ignores `sleep`)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())




def _vllm_model_handle(llm):
    """The engine's torch module when it runs in this process, else None."""
    paths = (("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),
             ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),
             ("llm_engine", "engine_core", "engine_core", "model_executor", "driver_worker", "worker",
              "model_runner", "model"))
    for path in paths:
        node = llm
        try:
            for attr in path:
                node = getattr(node, attr)
            return node
        except AttributeError:
            continue
    return None


def _engine_in_process(llm) -> bool:
    return _vllm_model_handle(llm) is not None


def release_cached_engines() -> None:
    """Free any vLLM engine `spotlib.engines.sampling` keeps cached in this process."""
    from spotlib.engines import sampling

    engines = getattr(sampling, "_ENGINES", None)
    if engines:
        for llm in list(engines.values()):
            release_vllm(llm)
        engines.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

