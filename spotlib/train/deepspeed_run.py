"""DeepSpeed ZeRO-2 without accelerate: `deepspeed.initialize` behind the part of
accelerate's `Accelerator` interface the trainers use, the same on GPUs and on a CPU.

Why not accelerate's own DeepSpeed integration: `Accelerator(cpu=True)` drops the DeepSpeed
plugin and trains plain DDP, and with `cpu=False` and no CUDA every launched process sees
`num_processes 1` (accelerate decides the distributed type from the torch device). DeepSpeed
itself runs ZeRO-2 on a CPU (`DS_ACCELERATOR=cpu`, gloo). So when the profile names a
DeepSpeed config (`train.deepspeed_config`), every launched process builds its engine here,
on either device; the device is the only difference.

Semantics follow accelerate's DeepSpeed wrapper, so the trainer's loop is unchanged:
`backward` runs `engine.backward` (DeepSpeed divides by the accumulation steps) and, on the
last micro-batch of a step, `engine.step()` (ZeRO-2's reduce, clipping by `gradient_clipping`
and the optimiser step); the optimiser handed back by `prepare` does nothing on its own
`step`/`zero_grad`; `clip_grad_norm_` returns the norm the engine computed. The config's
"auto" values are filled from the profile (micro-batch, accumulation, clipping, bf16).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch


def _ensure_accelerator_env(device_type: str) -> None:
    """DeepSpeed picks its accelerator once, at import: name it from the profile's device."""
    if device_type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def filled_config(path: str | os.PathLike, *, micro_batch: int, grad_accum: int, world: int,
                  max_grad_norm: float, bf16: bool) -> dict:
    """The DeepSpeed JSON at `path` with its "auto" values set from the run's settings."""
    source = Path(path)
    try:
        config = json.loads(source.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"train.deepspeed_config: no file {source}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not valid JSON ({exc})") from None
    stage = config.get("zero_optimization", {}).get("stage")
    if stage not in (0, 1, 2):
        raise ValueError(f"{source}: zero_optimization.stage {stage!r}: this trainer gathers full weights "
                         f"on every rank (stages 0-2), not ZeRO-3")
    auto = {"train_micro_batch_size_per_gpu": micro_batch, "gradient_accumulation_steps": grad_accum,
            "train_batch_size": micro_batch * grad_accum * world, "gradient_clipping": max_grad_norm}
    for key, value in auto.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
        elif config[key] != value:
            raise ValueError(f"{source}: {key} is {config[key]}, the profile's run needs {value} (use \"auto\")")
    for precision, on in (("bf16", bf16), ("fp16", False)):
        section = config.setdefault(precision, {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = on
    # The trainers bring torch's AdamW (DeepSpeed's fused Adam would need compiled ops on CPU).
    config.setdefault("zero_allow_untested_optimizer", True)
    return config


class _EngineOptimizer:
    """What `prepare` returns for the optimiser: the engine steps and zeroes (accelerate does the same)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def step(self, *_, **__):
        pass

    def zero_grad(self, *_, **__):
        pass

    def state_dict(self):
        return self.optimizer.state_dict()


class DeepSpeedAccelerator:
    """One training process of a DeepSpeed run (torchrun / accelerate launch / a single process)."""

    def __init__(self, config_path: str | os.PathLike, *, device_type: str, micro_batch: int, grad_accum: int,
                 max_grad_norm: float, bf16: bool):
        _ensure_accelerator_env(device_type)
        import deepspeed
        import torch.distributed as dist

        for key, default in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                             ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(_free_port()))):
            os.environ.setdefault(key, default)  # one process, not launched: a group of one
        self.local_rank = int(os.environ["LOCAL_RANK"])
        if device_type == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if device_type == "cuda" else "gloo",
                                       auto_mpi_discovery=False)
        self.num_processes = dist.get_world_size()
        self.process_index = dist.get_rank()
        self.is_main_process = self.process_index == 0
        self.gradient_accumulation_steps = grad_accum
        self.config = filled_config(config_path, micro_batch=micro_batch, grad_accum=grad_accum,
                                    world=self.num_processes, max_grad_norm=max_grad_norm, bf16=bf16)
        self.engine = None
        self.sync_gradients = True
        self._micro = 0
        self._custom: list = []

    # ------------------------------------------------------------ the run
    def prepare(self, model, optimizer):
        import deepspeed

        engine, ds_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=self.config)
        self.engine = engine
        self._micro = 0
        self._custom = []  # one run per prepare: the next run registers its own scheduler and δ
        # what really trained, kept after the run frees its engine (`free_memory`)
        self.last_engine = {"zero_stage": self.zero_stage(), "processes": self.num_processes,
                            "engine": type(engine).__name__, "optimizer": type(engine.optimizer).__name__}
        if self.is_main_process:  # the launch log shows what really trains
            print(f"DeepSpeed engine: ZeRO stage {self.zero_stage()} on {self.num_processes} processes "
                  f"({type(engine.optimizer).__name__}, device {self.device.type}, "
                  f"backend {torch.distributed.get_backend()})", flush=True)
        return engine, _EngineOptimizer(ds_optimizer)

    @contextlib.contextmanager
    def accumulate(self, _model):
        self.sync_gradients = (self._micro + 1) % self.gradient_accumulation_steps == 0
        yield

    def backward(self, loss) -> None:
        self.engine.set_gradient_accumulation_boundary(is_boundary=self.sync_gradients)
        self.engine.backward(loss)
        self._micro += 1
        if self.sync_gradients:
            self.engine.step()

    def clip_grad_norm_(self, _parameters, _max_norm):
        """The engine clipped at its step (`gradient_clipping`); the norm before clipping."""
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def zero_stage(self) -> int:
        return int(self.engine.zero_optimization_stage()) if self.engine is not None else -1

    # ------------------------------------------------------------ processes
    def wait_for_everyone(self) -> None:
        import torch.distributed as dist

        if self.num_processes > 1:
            dist.barrier()

    @contextlib.contextmanager
    def main_process_first(self):
        if not self.is_main_process:
            self.wait_for_everyone()
        yield
        if self.is_main_process:
            self.wait_for_everyone()

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        if self.num_processes > 1:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        if reduction == "mean":
            out = out / self.num_processes
        return out

    def broadcast_object(self, value):
        """The main process's `value` on every process."""
        import torch.distributed as dist

        holder = [value]
        if self.num_processes > 1:
            dist.broadcast_object_list(holder, src=0)
        return holder[0]

    # ------------------------------------------------------------ weights and state
    def unwrap_model(self, model):
        return getattr(model, "module", model)

    def get_state_dict(self, model) -> dict:
        """Full weights (ZeRO-2 keeps whole parameters on every rank; only optimiser states are sharded).
        Not copied: tied weights must keep sharing storage, so that `save_pretrained` writes them once."""
        return {k: v.detach() for k, v in self.unwrap_model(model).state_dict().items()}

    def register_for_checkpointing(self, obj) -> None:
        self._custom.append(obj)

    def save_state(self, folder: str, **_ignored) -> None:
        """Engine (weights, this rank's optimiser shard) + registered objects + this rank's RNG."""
        self.engine.save_checkpoint(folder, tag="engine")
        extras = {"custom": [o.state_dict() for o in self._custom], "torch_rng": torch.get_rng_state(),
                  "micro": self._micro}
        torch.save(extras, Path(folder) / f"extras-rank{self.process_index}.pt")
        self.wait_for_everyone()

    def load_state(self, folder: str) -> None:
        self.engine.load_checkpoint(folder, tag="engine")
        extras = torch.load(Path(folder) / f"extras-rank{self.process_index}.pt", weights_only=False)
        for obj, state in zip(self._custom, extras["custom"]):
            obj.load_state_dict(state)
        torch.set_rng_state(extras["torch_rng"])
        self._micro = extras["micro"]

    def free_memory(self) -> None:
        """Drop the engine (its ZeRO buffers form reference cycles: collect them)."""
        import gc

        engine, self.engine = self.engine, None
        if engine is not None and hasattr(engine, "destroy"):
            engine.destroy()
        del engine
        gc.collect()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
