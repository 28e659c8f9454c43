"""The rollout engine's contract with vLLM (the GPU path's, checked with a recording stand-in):
each rollout wakes the engine, reloads the policy's weights on its worker in place, wakes the
KV cache, resets the prefix cache, samples, and sleeps again where the platform supports it."""
import types

import torch

from spotlib.engines import rollout
from spotlib.engines.rollout import RolloutEngine
from spotlib.engines.vllm_weights import reload_weights_on_worker, repack_cpu_heads


class _Worker:
    def __init__(self, calls):
        self.calls = calls
        self.vllm_config = None
        self.model_runner = types.SimpleNamespace(model=torch.nn.Sequential(torch.nn.Linear(2, 2)))

    def reload_weights(self, weights_iterator):
        self.calls.append(("reload_weights", [name for name, _ in weights_iterator]))


class _LLM:
    """Records what the rollout engine asks of `vllm.LLM` (in-process engine core)."""

    def __init__(self, calls):
        self.calls = calls
        self.worker = _Worker(calls)

    def collective_rpc(self, method, args=()):
        return [method(self.worker, *args)]

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def generate(self, texts, params, use_tqdm=False):
        self.calls.append(("generate", len(texts)))
        out = types.SimpleNamespace(text=" 4")
        return [types.SimpleNamespace(outputs=[out]) for _ in texts]


def _engine(monkeypatch, sleeps: bool):
    calls = []
    engine = RolloutEngine("vllm", "unused", seed=0)
    engine._llm = _LLM(calls)
    engine.sleeps = sleeps
    monkeypatch.setattr(rollout, "_engine_in_process", lambda llm: True)
    return engine, calls


def test_a_rollout_reloads_the_weights_in_place_and_the_engine_sleeps_between_rollouts(monkeypatch):
    import sys
    fake_config = types.ModuleType("vllm.config")
    fake_config.set_current_vllm_config = lambda cfg: __import__("contextlib").nullcontext()
    monkeypatch.setitem(sys.modules, "vllm.config", fake_config)
    engine, calls = _engine(monkeypatch, sleeps=True)
    policy = torch.nn.Sequential(torch.nn.Linear(2, 2))
    policy[0].weight.data.fill_(0.5)
    for _ in range(2):
        engine.push_weights(policy)
        engine._llm.generate(["a"], None)
        engine.sleep()
    names = ["0.weight", "0.bias"]
    assert calls == [("reload_weights", names), ("reset_prefix_cache",), ("generate", 1), ("sleep", 2),
                     ("wake_up", ["weights"]), ("reload_weights", names), ("wake_up", ["kv_cache"]),
                     ("reset_prefix_cache",), ("generate", 1), ("sleep", 2)]


def test_without_sleep_mode_the_engine_stays_awake(monkeypatch):
    import sys
    fake_config = types.ModuleType("vllm.config")
    fake_config.set_current_vllm_config = lambda cfg: __import__("contextlib").nullcontext()
    monkeypatch.setitem(sys.modules, "vllm.config", fake_config)
    engine, calls = _engine(monkeypatch, sleeps=False)
    engine.push_weights(torch.nn.Linear(2, 2))
    engine.sleep()
    assert [c[0] for c in calls] == ["reload_weights", "reset_prefix_cache"]


class _KeptWeightGemm(torch.nn.Module):
    """Like a vLLM CPU embedding/LM head: keeps its weight and a packed copy used by its GEMM."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3, 2))
        self.quant_method = self
        self.cpu_linear = None
        self.packed = None

    def process_weights_after_loading(self, layer):
        layer.packed = layer.weight.detach().clone()
        layer.cpu_linear = lambda x, w, b: x @ layer.packed.t()


class _RemovedWeightGemm(_KeptWeightGemm):
    """Like a vLLM CPU linear layer: its weight was removed after packing (reloaded by vLLM itself)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(0))


def test_cpu_heads_that_keep_their_weight_are_packed_again_from_it():
    model = torch.nn.ModuleDict({"head": _KeptWeightGemm(), "linear": _RemovedWeightGemm(),
                                 "plain": torch.nn.Linear(2, 2)})
    model["head"].process_weights_after_loading(model["head"])
    model["head"].weight.data.fill_(2.0)  # the tied embeddings were reloaded; the packed copy is stale
    assert repack_cpu_heads(model) == 1
    assert torch.equal(model["head"].packed, torch.full((3, 2), 2.0))
    assert model["linear"].packed is None


def test_the_worker_side_reload_repacks_after_vllms_reload(monkeypatch):
    import sys
    fake_config = types.ModuleType("vllm.config")
    fake_config.set_current_vllm_config = lambda cfg: __import__("contextlib").nullcontext()
    monkeypatch.setitem(sys.modules, "vllm.config", fake_config)
    calls = []
    worker = _Worker(calls)
    worker.model_runner.model = torch.nn.ModuleDict({"head": _KeptWeightGemm()})
    assert reload_weights_on_worker(worker, [("head.weight", torch.zeros(3, 2))]) == 1
    assert calls == [("reload_weights", ["head.weight"])]
