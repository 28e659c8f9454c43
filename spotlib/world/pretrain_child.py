"""python -m spotlib.world.pretrain_child WORLD_JSON OUT_DIR: the base model, built in this process.

Started by `ensure_base_model` with the kernel environment of `world.cpu_kernels`, which torch,
MKL and oneDNN read only when a process starts."""
import json
import sys
from pathlib import Path

from spotlib.config import WorldConfig
from spotlib.world.pretrain import build_base_model

build_base_model(WorldConfig(**json.loads(Path(sys.argv[1]).read_text())), Path(sys.argv[2]))
