"""Whether a model name is a folder on this machine or a Hub id, and why a folder cannot be used.

Kept free of torch and transformers: `--dry-run` asks it before anything is loaded.
"""
from __future__ import annotations

import os
from pathlib import Path


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
