"""Loading a student (the tiny world's base model or any HF causal LM) and its chat format, and
whether a model name is a folder on this machine or a Hub id (and why a folder cannot be used).

Imports torch and transformers only inside the loaders: `--dry-run` asks `looks_local` and
`saved_model_problem` before anything is loaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
           "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}   # name -> torch attribute


def torch_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(_DTYPES)})")
    return getattr(torch, _DTYPES[name])


def resolve_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def looks_local(name: str | os.PathLike) -> bool:
    """A path on this machine, not a Hub id: absolute, relative with ./ ../ ~, a folder that exists, or more
    than one '/' (a Hub id is `name` or `org/name`)."""
    text = str(name)
    return text.startswith(("/", ".", "~")) or text.count("/") >= 2 or Path(text).expanduser().exists()


def saved_model_problem(path: str | os.PathLike, hint: str | None = None) -> str | None:
    """Why `path`, a local folder, holds no saved model (None when it does, or when `path` is a Hub id)."""
    if not looks_local(path):
        return None
    folder = Path(path).expanduser()
    if not folder.exists():
        hint = hint or ("the tiny world's base model is pre-trained by stage 01: run it first"
                if folder.name == "base_model" else "check the path, or run the stage that writes it first")
        return f"{folder}: no saved model here ({hint})"
    if not (folder / "config.json").is_file():
        return f"{folder}: no config.json in this folder, so it is not a saved model (save_pretrained writes one)"
    return None


def require_saved_model(path: str | os.PathLike) -> None:
    """A local folder without a saved model is named here, not sent to the Hub as a repo id."""
    from spotlib.io import DataError

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
    import torch
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
