"""Loading a student (the tiny world's base model or any HF causal LM) and its chat format."""
from __future__ import annotations

import os
from pathlib import Path

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def torch_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(_DTYPES)})")
    return _DTYPES[name]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def require_saved_model(path: str | os.PathLike) -> None:
    """A local folder without a saved model is named here, not sent to the Hub as a repo id."""
    from spotlib.io import DataError
    from spotlib.model_paths import saved_model_problem

    problem = saved_model_problem(path)
    if problem:
        raise DataError(problem)


def load_tokenizer(path: str | os.PathLike):
    from transformers import AutoTokenizer

    require_saved_model(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str | os.PathLike, dtype: str | torch.dtype | None = None, device: str = "auto"):
    """(model, tokenizer) from a saved folder or an HF id; the model in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    local = Path(path)
    if local.suffix == "" and not local.exists() and str(path).startswith(("outputs", "/")):
        raise FileNotFoundError(f"{path}: no saved model here (run the earlier stages first)")
    require_saved_model(path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype(dtype) or torch.float32)
    model.to(resolve_device(device)).eval()
    return model, load_tokenizer(path)


def chat_prompt(tokenizer, user_text: str) -> str:
    """The model-side prompt: chat template, generation prompt, non-thinking mode (Qwen3)."""
    messages = [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=False)
