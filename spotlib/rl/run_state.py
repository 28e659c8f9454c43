"""A GRPO run's folder: its key (kept work is reused only under the same settings), its
checkpoints (resumable after a kill), its final model written whole, and its result read back.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from spotlib.config import RLConfig
from spotlib.io import params_hash, read_jsonl, share_saved_files, write_json_atomic

# RL settings that say how a run executes, not what it computes (kept out of its run key).
EXECUTION_ONLY = ("num_processes", "gradient_checkpointing", "logp_chunk_tokens", "vllm_gpu_memory",
                  "offload_reference")


def check_config(cfg: RLConfig) -> None:
    for name in ("rollouts_per_prompt", "prompts_per_step", "mini_batch", "micro_batch", "ppo_epochs",
                 "rollout_batch", "eval_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"rl.{name}: expected a positive integer, got {getattr(cfg, name)}")
    if cfg.rollouts_per_prompt < 2:
        raise ValueError("rl.rollouts_per_prompt: GRPO needs at least 2 rollouts per prompt")


def init_identity(init_path) -> str:
    """The start model in a run key, by content for a local folder (a moved outputs folder, or a
    retrained checkpoint at the same path, is told apart by what it holds, not where)."""
    from spotlib.io import weights_sha256

    path = Path(init_path)
    return weights_sha256(path) if path.is_dir() else str(init_path)


def claim_run_dir(run_dir: Path, key: dict) -> None:
    """Keep a run folder's earlier work only if it was made with the same settings; else start clean."""
    key_file = run_dir / "run_key.json"
    digest = params_hash(key)
    if run_dir.exists() and (not key_file.is_file() or json.loads(key_file.read_text()).get("hash") != digest):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not key_file.is_file():
        write_json_atomic(key_file, {"hash": digest, **key})


def key_config(cfg: RLConfig) -> dict:
    """The settings a run's results depend on (not how it is executed)."""
    return {k: v for k, v in asdict(cfg).items() if k not in EXECUTION_ONLY}


def save_pretrained_atomic(path: Path, model, tokenizer) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    share_saved_files(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def save_checkpoint(path: Path, accelerator, step: int) -> None:
    """Weights, optimiser (sharded under ZeRO) and RNG states by `accelerator.save_state`, then the step."""
    tmp = path.with_name(path.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=False)  # torch.save keeps tied weights tied
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch.save({"step": step}, tmp / "trainer_state.pt")
        share_saved_files(tmp)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()


def resume(path: Path, accelerator) -> int:
    """Load a checkpoint's states into the prepared model and optimiser; returns the step to start from."""
    state_file = path / "trainer_state.pt"
    if not state_file.is_file():
        return 0
    accelerator.load_state(str(path))
    return int(torch.load(state_file, map_location="cpu", weights_only=False)["step"])


def finished_result(run_dir: str | os.PathLike) -> dict:
    """The result of a run trained elsewhere (launched processes); fails if it did not finish."""
    run_dir = Path(run_dir)
    if not (run_dir / "final" / "done.json").is_file():
        raise FileNotFoundError(f"{run_dir / 'final' / 'done.json'}: the GRPO run did not finish")
    return run_result(run_dir)


def run_result(run_dir: Path) -> dict:
    metrics = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    held = read_jsonl(run_dir / "heldout.jsonl") if (run_dir / "heldout.jsonl").is_file() else []
    return {"final": str(run_dir / "final"), "steps": len(metrics), "metrics": metrics, "heldout": held}
