"""The base model's identity: the recipe's version and the world hash that keys a pre-trained model.

Both pre-training (`spotlib.world.pretrain`, which writes the hash into a model's manifest)
and the shipped copies (`spotlib.world.shipped`, which match a profile to one by it) read
this key; it sits below both so neither imports the other to learn it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from spotlib import precision

# Bumped whenever the training loop changes what it computes, so cached base models retrain.
RECIPE_VERSION = 2


def world_hash(world_cfg) -> str:
    """The base model's cache key: every world setting (precision, threads, CPU kernels), the recipe,
    the instruction set the kernels compute with here (`native` differs between CPUs) and the
    environment that pins them."""
    fields = dataclasses.asdict(world_cfg)
    if not fields["oracle_style_prefix"]:
        del fields["oracle_style_prefix"]   # absent = the worlds made before the setting existed
    if fields["tie_word_embeddings"]:
        del fields["tie_word_embeddings"]   # likewise: tied is what every earlier world built
    blob = json.dumps({**fields, "recipe": RECIPE_VERSION,
                       "kernels": precision.effective_kernels(world_cfg.cpu_kernels),
                       "kernel_env": precision.kernel_env_spec(world_cfg.cpu_kernels)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
