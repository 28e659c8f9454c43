"""A cache file that every process of a launched group reads, and one process writes.

Stage 04 scores the reference model once for all its runs; under a launcher every process
joins that computation (each scores a share, all receive all), so whether the cache holds
it must be one decision for the whole group: the main process's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from spotlib.train.logps import load_cache, save_cache


def cached_across_processes(accelerator, path: Path, compute):
    """Like `cached`, for a `compute` every process must join (reference scoring is shared):
    the main process's view of the cache decides for all (a torn or corrupt file is computed
    again, as `cached` does); it alone writes."""
    found, value = load_cache(path) if accelerator.is_main_process else (False, None)
    if hasattr(accelerator, "broadcast_object"):  # a DeepSpeed run built without accelerate
        found = accelerator.broadcast_object(found)
    else:
        from accelerate.utils import broadcast_object_list

        found = broadcast_object_list([found])[0]
    if found:
        return value if accelerator.is_main_process else torch.load(path, weights_only=False)
    value = compute()
    if accelerator.is_main_process:
        save_cache(path, value)
    accelerator.wait_for_everyone()
    return value
