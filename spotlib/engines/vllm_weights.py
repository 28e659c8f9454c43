"""New weights into a running vLLM engine, in place, on its worker (`LLM.collective_rpc`).

vLLM's own in-place reload (`Worker.reload_weights`) processes every layer again as a load
does. On vLLM's CPU build that is not enough: an unquantized linear layer keeps a packed copy
of its weight for its GEMM (`dispatch_cpu_unquantized_gemm`, set up by
`process_weights_after_loading`), and a language-model head tied to the embeddings is never
reloaded on its own (the checkpoint has no `lm_head.weight`; vLLM logs "ParallelLMHead:
Failed to load weights" and puts the old tensors back), so its GEMM keeps multiplying by the
packed copy of the *old* embeddings. After the reload, every GEMM that keeps its weight is
packed again from the weight it holds now (`repack_cpu_heads`; nothing to do off the CPU build).

These functions run on the engine's worker (in this process, or pickled by reference into an
engine core process): they import vLLM themselves and nothing of the package above this layer.
"""
from __future__ import annotations


def repack_cpu_heads(model) -> int:
    """vLLM's CPU build: pack again every GEMM that kept its weight (embedding-shaped layers, the
    LM head), from the weight it holds now. Returns how many; 0 off the CPU build."""
    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        method = getattr(module, "quant_method", None)
        if hasattr(module, "cpu_linear") and weight is not None and weight.numel() > 0 and method is not None:
            method.process_weights_after_loading(module)
            count += 1
    return count


def reload_weights_on_worker(worker, state) -> int:
    """(name, tensor) pairs in HF names loaded in place; returns how many GEMMs were packed again."""
    from vllm.config import set_current_vllm_config

    worker.reload_weights(weights_iterator=iter(state))
    with set_current_vllm_config(worker.vllm_config):
        return repack_cpu_heads(worker.model_runner.model)


def reload_from_path_on_worker(worker, path: str) -> int:
    """The checkpoint at `path` (same architecture) loaded in place, as a fresh engine loads it."""
    from vllm.config import set_current_vllm_config

    worker.reload_weights(weights_path=path)
    with set_current_vllm_config(worker.vllm_config):
        return repack_cpu_heads(worker.model_runner.model)
