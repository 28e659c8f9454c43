"""One GRPO run on fixed rollouts, as one process or as one rank under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/rl_dist_worker.py INIT OUT [--bypass-wrapper]

Each rank writes OUT/rank<k>.json (the world size it saw, steps, engine releases);
the main process saves the final model under OUT/run/final. `--bypass-wrapper` hands the
trainer the bare model instead of the DDP wrapper (gradients never averaged): the test's
negative control.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rl_helpers import FixedRollouts, says_a, toy_items  # noqa: E402

from spotlib.config import RLConfig  # noqa: E402

# 4 prompts × 4 rollouts a step, one mini-batch of 4 prompts; 2 micro-batches per rank on 2 ranks.
CONFIG = RLConfig(num_prompts=8, rollouts_per_prompt=4, prompts_per_step=4, mini_batch=4, lr=3e-3,
                  kl_coef=0.01, max_new_tokens=6, max_steps=3, eval_every=100, micro_batch=4,
                  bf16_autocast=False, save_every=0, heldout_items=0, logp_chunk_tokens=5)


def bypass_wrapper() -> None:
    """Make `accelerator.prepare` return the bare model: no DDP, no gradient averaging."""
    from accelerate import Accelerator

    prepare = Accelerator.prepare

    def bare(self, *args):
        out = prepare(self, *args)
        return tuple(self.unwrap_model(o) if isinstance(o, torch.nn.Module) else o for o in out)

    Accelerator.prepare = bare


def run(init: Path, out: Path) -> None:
    from spotlib.rl.grpo import train_grpo

    torch.set_num_threads(1)
    engine = FixedRollouts()
    result = train_grpo(init, out / "run", toy_items(8), says_a, CONFIG, device="cpu", max_len=64,
                        progress=False, engine=engine)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "world": int(os.environ.get("WORLD_SIZE", "1")), "released": engine.released,
        "steps": result["steps"], "processes": [m["processes"] for m in result["metrics"]]}))


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--bypass-wrapper" in args:
        args.remove("--bypass-wrapper")
        bypass_wrapper()
    run(Path(args[0]), Path(args[1]))
