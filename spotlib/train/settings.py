"""Training settings chosen by the memory plan: the fastest that fit the GPU.

For a profile on its hardware (`hardware.gpus`, `hardware.gpu_memory_gib`), stage 04's
micro-batch is made as large as the plan allows while the optimiser step keeps its examples
(`per_device_batch × grad_accum` per process: the data order and effective batch are
unchanged), gradient checkpointing only where the activations would not fit without it
(recomputation costs a third more FLOPs), ZeRO-2 only across several processes (on one it
flattens and casts for nothing), and fused AdamW on CUDA.

A larger micro-batch with fewer accumulation steps is the same gradient for every objective
but SPoT-BCO, whose δ is updated once per micro-batch (as in the authors' trainer); the
choice says so when it changes the micro-batch.

    python -m spotlib.train.settings --profile paper [--gpus 1 --gpu-memory-gib 79.6]
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainChoice:
    gradient_checkpointing: bool
    per_device_batch: int
    grad_accum: int
    micro_batch_tokens: int     # the most a micro-batch holds: sequences × train.max_len (packed: its token budget)
    zero: str                   # "none" (one process) or "zero2"
    fused_adamw: bool
    planned_peak_gib: float
    fits: bool
    notes: tuple[str, ...] = ()

    def overrides(self) -> dict:
        """The profile overrides that apply the choice (`load_profile(..., overrides=...)`)."""
        values = {"train.gradient_checkpointing": self.gradient_checkpointing,
                  "train.per_device_batch": self.per_device_batch, "train.grad_accum": self.grad_accum}
        if self.zero == "none":  # one process: no ZeRO engine, no DeepSpeed launch
            values.update({"train.deepspeed_config": None, "train.accelerate_config": None})
        return values


def _divisors_descending(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def choose(profile, gpus: int | None = None, gpu_memory_gib: float | None = None,
           cuda: bool | None = None) -> TrainChoice:
    """The plan's choice for stage 04 of `profile` (on `gpus` × `gpu_memory_gib` if given)."""
    from spotlib.plan.memory import GIB, build_plan
    from spotlib.train.runspec import plan_runs

    if cuda is None:
        import torch
        cuda = torch.cuda.is_available()
    t = profile.train
    processes = gpus if gpus is not None else max(profile.hardware.gpus, 1)
    per_step = t.per_device_batch * t.grad_accum
    pairs = any(r.info.pairs for r in plan_runs(t))
    fitting = None
    tried = []
    for checkpointing in (False, True):   # without recomputation first: fewer FLOPs per token
        for batch in _divisors_descending(per_step):
            train = dataclasses.replace(t, gradient_checkpointing=checkpointing, per_device_batch=batch,
                                        grad_accum=per_step // batch)
            plan = build_plan(dataclasses.replace(profile, train=train), gpus=gpus, gpu_memory_gib=gpu_memory_gib)
            stage = next(s for s in plan.stages if s.stage.startswith("04"))
            tried.append((checkpointing, batch, stage.peak / GIB))
            if stage.fits:
                fitting = (checkpointing, batch, stage.peak / GIB)
                break
        if fitting:
            break
    notes = []
    fits = fitting is not None
    if not fits:  # nothing fits: the smallest micro-batch with checkpointing, flagged
        fitting = (True, 1, tried[-1][2])
        notes.append("no micro-batch fits even with gradient checkpointing: see the memory plan")
    checkpointing, batch, peak = fitting
    if batch != t.per_device_batch and any(r.objective == "bco" for r in plan_runs(t)):
        notes.append(f"micro-batch {t.per_device_batch} -> {batch}: SPoT-BCO updates δ once per micro-batch")
    return TrainChoice(gradient_checkpointing=checkpointing, per_device_batch=batch, grad_accum=per_step // batch,
                       micro_batch_tokens=batch * (2 if pairs else 1) * t.max_len,
                       zero="zero2" if processes > 1 else "none", fused_adamw=bool(cuda),
                       planned_peak_gib=round(peak, 2), fits=fits,
                       notes=tuple(notes))


def main(argv=None) -> None:
    from spotlib.config import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--gpu-memory-gib", type=float)
    args = parser.parse_args(argv)
    choice = choose(load_profile(args.profile), gpus=args.gpus, gpu_memory_gib=args.gpu_memory_gib, cuda=True)
    for key, value in dataclasses.asdict(choice).items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
