"""Tensor memory measured on any device, the CPU included: bytes of the storages that are alive.

`LiveBytes` watches every tensor an operator returns (a `TorchDispatchMode`) and keeps a weak
reference to its storage (`StorageWeakRef`, which sees storages held only by autograd's saved
tensors too). `peak` is the most bytes alive after any operator, `now()` what is alive now,
both above what existed before the mode was entered. The CPU has no allocator statistics
(`torch.cuda.max_memory_allocated` is CUDA's); this is how the memory plan's terms are
checked on a CPU (tests/test_memory_terms.py).
"""
from __future__ import annotations

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveBytes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor) and not item.is_meta:
                storage = item.untyped_storage()
                key = storage.data_ptr()
                known = self.storages.get(key)
                if key and (known is None or known[0].expired()):  # a freed storage's address is reused
                    self.storages[key] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, self.now())
        return out

    def now(self) -> int:
        alive = 0
        for key, (ref, nbytes) in list(self.storages.items()):
            if ref.expired():
                del self.storages[key]
            else:
                alive += nbytes
        return alive
