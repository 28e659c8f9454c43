"""One trainer for every method: only the objective and the data differ.

Per optimiser step: `effective_batch = per_device_batch × grad_accum × processes`
examples in a seeded order; chosen and rejected sequences go through the model in one
forward pass; reference log-probs come precomputed (`RunInputs.ref_*`). AdamW
(β = 0.9, 0.95), linear warmup then cosine decay, gradient clipping, accumulation.

Across processes (DDP, DeepSpeed ZeRO-2 or gloo on CPU) the loss comes from the wrapped
model's own forward (`CompletionLogpsModel`), so gradients are all-reduced and ZeRO's hooks
run; `accelerator.accumulate()` makes one optimizer step per logged step (DeepSpeed steps
its engine there); δ is updated from means all-reduced over processes. So P processes ×
batch b train as 1 process × batch P·b (tests/test_distributed.py).

Precision: on CPU fp32 weights with bf16 autocast (about 2x faster there); on GPU bf16
(with DeepSpeed ZeRO-2 when `accelerate launch` brings its config) and, if asked,
gradient checkpointing. Log-prob sums and losses are always fp32.

A run is resumable exactly: a checkpoint holds the weights, optimiser, scheduler, δ and
RNG states (`accelerator.save_state`); the data order is a pure function of (seed,
step). A run whose `summary.json` says complete is skipped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spotlib import losses as L
from spotlib.io import (JsonlAppender, params_hash, share_saved_files, weights_bytes, weights_problem,
                        weights_sha256, write_json_atomic)

from . import packing as P
from .data import TrainData, step_rows
from .logps import CompletionLogpsModel, completion_logps
from .optim import param_groups
from .probes import EditDiagSet, ProbeSet, diag_settings, edit_diagnostic, probe_kl
from .runspec import EXECUTION_ONLY, NOT_IN_RUN_KEY, RunSpec, lr_for  # noqa: F401 - re-exported
from .tracking import tracked


@dataclass
class RunInputs:
    """Everything a run needs that is shared across seeds (and computed once)."""
    data: TrainData
    ref_chosen: torch.Tensor            # [N] summed reference log-probs of y⁺
    ref_rejected: torch.Tensor | None   # [N] of y⁻ (pair data)
    base_path: str                      # the start model = π_ref
    probe: ProbeSet | None = None
    diag: EditDiagSet | None = None
    data_key: str = ""                  # hash of the examples, reference model and lengths


def train_bf16(device: torch.device, train_cfg) -> bool:
    """The profile's precision: bf16 autocast on CPU (`train.bf16_autocast`), bf16 on GPUs (`train.bf16`)."""
    from spotlib.precision import use_bf16

    if device.type == "cpu":
        return use_bf16(device, train_cfg.bf16_autocast, "train.bf16_autocast")
    return use_bf16(device, train_cfg.bf16, "train.bf16")


def num_steps(train_cfg, n_examples: int, effective_batch: int) -> int:
    if train_cfg.max_steps:
        return int(train_cfg.max_steps)
    return max(1, math.ceil(train_cfg.epochs * n_examples / effective_batch))


def make_accelerator(train_cfg, device: str):
    """The Accelerator for `train_cfg` on the profile's `device` (auto | cpu | cuda); with
    `train.deepspeed_config`, a DeepSpeed engine built directly (`spotlib.train.deepspeed_run`)."""
    from accelerate import Accelerator

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if train_cfg.deepspeed_config:
        from spotlib.config import REPO_ROOT
        from spotlib.train.deepspeed_run import DeepSpeedAccelerator

        path = Path(train_cfg.deepspeed_config)
        return DeepSpeedAccelerator(path if path.is_absolute() else REPO_ROOT / path,
                                    device_type="cpu" if on_cpu else "cuda",
                                    micro_batch=train_cfg.per_device_batch, grad_accum=train_cfg.grad_accum,
                                    max_grad_norm=train_cfg.max_grad_norm, bf16=train_cfg.bf16 and not on_cpu)
    mixed = "bf16" if (train_cfg.bf16 and not on_cpu) else "no"
    accelerator = Accelerator(cpu=on_cpu, mixed_precision=mixed,
                              gradient_accumulation_steps=train_cfg.grad_accum)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:  # no prepared dataloader tells DeepSpeed the batch: say it here
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = train_cfg.per_device_batch
        plugin.deepspeed_config["gradient_clipping"] = train_cfg.max_grad_norm
    return accelerator


def _latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def load_model(path: str, dtype: str):
    from transformers import AutoModelForCausalLM

    from spotlib.models import torch_dtype

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype) or torch.float32)


class _Registered:
    """Wraps δ so accelerate's save_state/load_state carries it."""

    def __init__(self, tracker: L.DeltaTracker):
        self.tracker = tracker

    def state_dict(self):
        return self.tracker.state_dict()

    def load_state_dict(self, state):
        self.tracker.load_state_dict(state)



def run_key(train_cfg, model_cfg, run: RunSpec, seed: int, inputs: RunInputs, steps: int,
            located: bool = False) -> str:
    """What a finished run depends on: its settings, learning rate, data, start model, seed and the
    CPU kernels it computes with (`precision.kernel_signature`). `located`: the key runs were marked
    with before keys left out where the folders lie (still accepted, in the same place)."""
    from spotlib.precision import kernel_signature
    cfg = dataclasses.asdict(train_cfg)
    model = dataclasses.asdict(model_cfg)
    base = str(inputs.base_path)
    if not located:
        if cfg["kl_probe_file"] and Path(cfg["kl_probe_file"]).is_file():   # by content, wherever it lies
            from spotlib.io import file_sha256
            cfg["kl_probe_file"] = file_sha256(cfg["kl_probe_file"])
        model["name_or_path"] = base_identity(model_cfg.name_or_path)
        base = base_identity(inputs.base_path)
    if not cfg.get("packing"):  # padded batches are what runs keyed before packing existed computed
        cfg.pop("packing", None)
    return params_hash({"run": run.name, "seed": seed, "steps": steps, "lr": lr_for(train_cfg, run.method),
                        "train": {k: v for k, v in cfg.items() if k not in NOT_IN_RUN_KEY},
                        "model": model, "data": inputs.data_key, "base": base, "kernels": kernel_signature()})


def run_keys(*args) -> tuple[str, str]:
    """(this run's key, the located key an earlier version marked the same run with)."""
    return run_key(*args), run_key(*args, located=True)


def base_identity(base_path) -> str | None:
    """The start model in a run key: a Hub id by name; a local folder not by where it lies (a moved
    outputs folder is the same study) but by its content, which `data_key` already hashes."""
    return None if str(base_path) != "world" and Path(base_path).is_dir() else str(base_path)


def _claim_run_dir(run_dir: Path, keys: tuple[str, ...]) -> None:
    """Clear what other settings left in `run_dir` (a stale model or checkpoint must never
    pass for this run) and mark it with this run's key (the first of `keys`, each of which
    marks the same run); the same run keeps its files."""
    key, key_path = keys[0], run_dir / "run_key.json"
    if key_path.is_file() and json.loads(key_path.read_text()) in keys:
        if json.loads(key_path.read_text()) != key:
            write_json_atomic(key_path, key)
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    write_json_atomic(key_path, key)


def finished_summary(run_dir: Path, full: bool = True) -> dict | None:
    """The summary of a run finished in `run_dir` (None if it is not), as stages check before training."""
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        # A corrupt or partly written model is not a finished run: train it again.
        if done.get("complete") and weights_problem(run_dir, done.get("weights_sha256"), done.get("weights_bytes"),
                                                    full=full) is None:
            return done
    return None


def train_run(*args, **kwargs) -> dict:
    """`_train_run`, then what the run held is freed before the next run in this process (see
    `release_run`): a stage trains every method and the tether run one after another."""
    try:
        return _train_run(*args, **kwargs)
    finally:
        release_run()


def release_run(accelerator=None) -> None:
    """Free a finished run: its DeepSpeed engine (`engine.destroy()`, inside `free_memory`), the
    accelerator's references to its model and optimiser, and the reference cycles ZeRO's
    parameters and the wrappers form, which would otherwise wait for a chance collection
    while the next run allocates its own."""
    import gc

    if accelerator is not None:
        accelerator.free_memory()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_run(cfg, model_cfg, run: RunSpec, seed: int, inputs: RunInputs, run_dir: Path, *, steps: int,
               device: str, progress: bool = True, stop_after: int | None = None, accelerator=None,
               tracking=None) -> dict:
    """Train one (run, seed) into `run_dir`; returns the summary. `stop_after` simulates a crash.

    `cfg` is the profile's `train`, `model_cfg` its `model` (dtype, and part of the run key),
    `device` its `device` (for the Accelerator made here when none is given).
    A run whose `summary.json` says complete under the same run key is returned as is; a
    run left by other settings (another learning rate, data or start model) is trained anew.
    `tracking` (`spotlib.train.tracking.run_tracking`): the trackers its records also go to."""
    from accelerate.utils import set_seed
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    accelerator = accelerator or make_accelerator(cfg, device)
    if accelerator.is_main_process:
        _claim_run_dir(run_dir, run_keys(cfg, model_cfg, run, seed, inputs, steps))
    accelerator.wait_for_everyone()
    done = finished_summary(run_dir)
    if done is not None:
        return done
    device = accelerator.device
    autocast = train_bf16(device, cfg)
    set_seed(seed)

    model = load_model(inputs.base_path, model_cfg.dtype)
    tokenizer = AutoTokenizer.from_pretrained(inputs.base_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()
    ref_model = None
    if run.objective == "kl_sft":  # the KL term needs π_ref's whole distribution at each token
        ref_model = load_model(inputs.base_path, model_cfg.dtype).to(device).eval().requires_grad_(False)
    if cfg.packing:  # padding-free micro-batches: attention by segments (spotlib.train.packing)
        for lm in (model, ref_model):
            if lm is not None:
                P.use_varlen(lm)

    lr = lr_for(cfg, run.method)
    # fused AdamW on GPUs (one kernel for all parameters); the default elsewhere
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr, betas=tuple(cfg.adam_betas),
                                  **({"fused": True} if device.type == "cuda" else {}))
    # Same parameters; the forward that makes the loss must be the wrapper's (see CompletionLogpsModel).
    model = CompletionLogpsModel(model)
    warmup = math.ceil(cfg.warmup_ratio * steps)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    delta = L.DeltaTracker(run.delta_mode if run.objective == "bco" else "none", decay=cfg.delta_ema_decay)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(_Registered(delta))

    start_step = 0
    checkpoint = _latest_checkpoint(run_dir)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        start_step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]

    processes = accelerator.num_processes
    micro = cfg.per_device_batch
    effective = micro * cfg.grad_accum * processes
    data = inputs.data
    metrics = JsonlAppender(run_dir / "metrics.jsonl", key_fn=lambda r: (r["kind"], r["step"])) \
        if accelerator.is_main_process else None
    metrics = tracked(metrics, tracking, start_step)   # live curves: every record to the trackers too

    def probe(step: int):
        if not accelerator.is_main_process or (inputs.probe is None and inputs.diag is None):
            return None
        record = {"kind": "probe", "step": step}
        inner = accelerator.unwrap_model(model).lm
        if inputs.probe is not None:
            record.update(probe_kl(inner, inputs.probe, pad_id, device, autocast=autocast))
        if inputs.diag is not None:
            record.update(edit_diagnostic(inner, inputs.diag, pad_id, device, beta=cfg.beta, autocast=autocast,
                                          **diag_settings(cfg)))
        metrics.append(record)
        return record

    if start_step == 0:
        probe(0)
    train_seconds = 0.0
    last_probe = None
    bar = None
    if progress and accelerator.is_main_process:
        from spotlib.progress import bar as tqdm
        bar = tqdm(total=steps, initial=start_step, desc=f"{run.name} seed {seed}", leave=False)
    for step in range(start_step, steps):
        t0 = time.perf_counter()
        rows = step_rows(len(data), seed, step, effective)
        # Metrics stay on the device through the step and are read once, after it (no host sync inside).
        keys = ("loss", "rc", "rr", "acc", "wc", "wr", "lc", "lr_", "n", "tokens", "tokens_computed")
        sums = torch.zeros(len(keys), dtype=torch.float64, device=device)
        counted = {"n": 0, "tokens": 0, "tokens_computed": 0}
        for m in range(cfg.grad_accum):
            first = (m * processes + accelerator.process_index) * micro
            mrows = rows[first: first + micro]
            # accumulate(): DDP all-reduces on the last micro-batch only, DeepSpeed steps its
            # engine there; backward divides by grad_accum (DeepSpeed scales by itself).
            with accelerator.accumulate(model):
                out = _micro_step(model, ref_model, run, cfg, inputs, mrows, pad_id, device, autocast, delta)
                accelerator.backward(out["loss"])
            sums[:8] += torch.stack([(out["loss"].detach() * len(mrows)).double()]
                                    + [out[k].double() for k in ("rc", "rr", "acc", "wc", "wr", "lc", "lr_")])
            counted["n"] += len(mrows)
            counted["tokens"] += out["tokens"]
            counted["tokens_computed"] += out["tokens_computed"]
        if not accelerator.sync_gradients:  # one logged step is one optimizer step, always
            raise RuntimeError(f"step {step + 1}: gradients not synchronised after {cfg.grad_accum} micro-batches")
        lr_now = scheduler.get_last_lr()[0]
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        sums[8:] = torch.tensor([counted[k] for k in keys[8:]], dtype=torch.float64)
        totals = accelerator.reduce(sums, reduction="sum").tolist()  # the step's one read of the device
        delta.settle()
        elapsed = time.perf_counter() - t0
        train_seconds += elapsed
        agg = dict(zip(keys, totals))
        n = agg["n"]
        if accelerator.is_main_process:
            record = {"kind": "train", "step": step + 1, "loss": agg["loss"] / n,
                      "rewards/chosen": agg["rc"] / n, "logps/chosen": agg["lc"] / n,
                      "tether/chosen": agg["wc"] / n, "delta": delta.value,
                      "lr": lr_now,
                      "grad_norm": float(grad_norm) if grad_norm is not None else None,
                      "tokens": int(agg["tokens"]), "tokens_per_s": agg["tokens"] / elapsed,
                      "tokens_computed": int(agg["tokens_computed"])}
            if device.type == "cuda":  # what the memory plan predicts (spotlib.plan.memory)
                record["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if run.info.pairs:
                record.update({"rewards/rejected": agg["rr"] / n, "rewards/margins": (agg["rc"] - agg["rr"]) / n,
                               "rewards/accuracies": agg["acc"] / n, "tether/rejected": agg["wr"] / n,
                               "logps/rejected": agg["lr_"] / n})
            metrics.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", r_c=f"{record['rewards/chosen']:.2f}")
        done = step + 1
        if cfg.kl_probe_every and (done % cfg.kl_probe_every == 0 or done == steps):
            last_probe = probe(done) or last_probe
        if cfg.save_every and done % cfg.save_every == 0 and done < steps:
            _save_checkpoint(accelerator, run_dir, done)
        if stop_after is not None and done >= stop_after:
            if bar is not None:
                bar.close()
            accelerator.free_memory()
            return {"complete": False, "step": done}
    if bar is not None:
        bar.close()
    if last_probe is None and inputs.probe is not None:
        last_probe = probe(steps)
    summary = _finish(accelerator, model, tokenizer, run, seed, run_dir, metrics, steps, train_seconds,
                      last_probe, lr, device)
    accelerator.free_memory()  # the engine is destroyed here; train_run collects what is left on return
    return summary


def _micro_step(model, ref_model, run, cfg, inputs, rows, pad_id, device, autocast, delta) -> dict:
    data = inputs.data
    pairs = run.info.pairs
    n = len(rows)
    # chosen and rejected in one forward pass: padded to the longest, or packed end to end in one row;
    # the layout is built on the host (where each scored token is), so nothing here reads the device
    parts = [(data.chosen, rows)] + ([(data.rejected, rows)] if pairs else [])
    batch = P.layout(parts, pad_id, packing=getattr(cfg, "packing", False)).to(device)
    # kl_sft: the token KL against π_ref by the same LM-head chunks (π_ref's whole distribution at each token)
    out = completion_logps(model, batch, autocast=autocast, head_chunk=cfg.logits_chunk_tokens,
                           reference=ref_model if run.objective == "kl_sft" else None)
    pc, counts = out.sums[:n], out.counts[:n]
    rc = inputs.ref_chosen[rows].to(device)
    pr = rr = None
    if pairs:  # y⁻'s sums cover the tokens its score mask keeps (all, or the edit for +edit_only)
        pr = out.sums[n:]
        rr = inputs.ref_rejected[rows].to(device)
        if run.gradient == "rejected":  # +rejected_only: y⁺'s term a constant (same loss value, same δ)
            pc = pc.detach()
        elif run.gradient == "chosen":  # +chosen_only
            pr = pr.detach()
    objective = run.objective
    delta_used = 0.0
    if objective == "bco":
        delta_used = delta.update_on_device(L.implicit_rewards(pc, rc, cfg.beta),
                                            L.implicit_rewards(pr, rr, cfg.beta))
        losses, r_c, r_r = L.bco(pc, pr, rc, rr, beta=cfg.beta, delta=delta_used)
    elif objective == "kl_sft":
        kl_sums = torch.zeros(n, device=device).index_add(0, out.rows, out.token_kl)
        losses, r_c, r_r = L.kl_sft(pc, None, rc, None, beta=cfg.beta, chosen_counts=counts,
                                    token_kl_sums=kl_sums, kl_coef=cfg.kl_coef)
    elif objective == "sft":
        losses, r_c, r_r = L.sft(pc, None, rc, None, beta=cfg.beta, chosen_counts=counts)
    elif objective == "reward_sft":
        losses, r_c, r_r = L.reward_sft(pc, None, rc, None, beta=cfg.beta)
    else:
        losses, r_c, r_r = getattr(L, objective)(pc, pr, rc, rr, beta=cfg.beta)
    w_c, w_r = L.gradient_weights(objective, r_c, r_r, beta=cfg.beta, delta=delta_used, chosen_counts=counts)
    if pairs and run.gradient != "both":  # the detached side gets no pull
        w_c, w_r = (w_c, torch.zeros_like(w_r)) if run.gradient == "chosen" else (torch.zeros_like(w_c), w_r)
    # sums as 0-dim device tensors: the step adds them up and reads them once
    zero = torch.zeros((), device=pc.device)
    result = {"loss": losses.mean(), "rc": r_c.sum(), "wc": w_c.sum(), "wr": w_r.sum(),
              "lc": pc.detach().sum(), "rr": zero, "acc": zero, "lr_": zero,
              "tokens": batch.tokens_real, "tokens_computed": batch.tokens_computed}
    if pairs:
        result.update({"rr": r_r.sum(), "acc": (r_c > r_r).float().sum(), "lr_": pr.detach().sum()})
    return result


def _save_checkpoint(accelerator, run_dir: Path, step: int) -> None:
    """Write checkpoint-<step> completely, then drop older ones: a kill leaves one intact."""
    tmp = run_dir / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_json_atomic(tmp / "trainer_state.json", {"step": step})
        share_saved_files(tmp)
        tmp.rename(run_dir / f"checkpoint-{step}")
        for old in run_dir.glob("checkpoint-*"):
            if int(old.name.split("-")[1]) < step:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def saved_state_dict(accelerator, model) -> dict | None:
    """The full state dict to save, built on the main process only (None elsewhere).

    Under ZeRO-2 (and DDP) every rank holds the whole model, so the main rank alone copies it
    to the host (the others would each build 16 GB of CPU tensors at 8B for nothing); ZeRO-3
    gathers the shards, a collective every rank joins (accelerate's consolidated 16-bit state)."""
    if zero_stage(accelerator) == 3:
        state = accelerator.get_state_dict(model)
        return state if accelerator.is_main_process else None
    return accelerator.get_state_dict(model) if accelerator.is_main_process else None


def zero_stage(accelerator) -> int:
    """The ZeRO stage a run trains under: the engine's (`deepspeed_run.DeepSpeedAccelerator`), accelerate's
    DeepSpeed plugin's, or 0 (DDP, one process)."""
    if hasattr(accelerator, "zero_stage"):
        return accelerator.zero_stage()
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return plugin.zero_stage if plugin is not None else 0


def _finish(accelerator, model, tokenizer, run, seed, run_dir, metrics, steps, train_seconds, last_probe,
            lr, device) -> dict:
    accelerator.wait_for_everyone()
    prefix = "lm."  # the causal LM inside CompletionLogpsModel
    full = saved_state_dict(accelerator, model)
    summary = {}
    if accelerator.is_main_process:
        state = {k[len(prefix):]: v for k, v in full.items()}
        inner = accelerator.unwrap_model(model).lm
        if device.type == "cuda":  # bf16 on GPU: what vLLM and transformers load as-is
            state = {k: v.to(torch.bfloat16) for k, v in state.items()}
            inner.config.dtype = "bfloat16"
        inner.save_pretrained(run_dir, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(run_dir)
        share_saved_files(run_dir)   # safetensors writes its files 0600
        train_records = [r for r in metrics.records if r["kind"] == "train"]
        final = train_records[-1] if train_records else {}
        tokens = sum(r["tokens"] for r in train_records)
        computed = sum(r.get("tokens_computed", r["tokens"]) for r in train_records)
        # From the per-step records, so a resumed run counts its steps before the interruption too.
        train_seconds = sum(r["tokens"] / r["tokens_per_s"] for r in train_records)
        summary = {"run": run.name, "method": run.method, "objective": run.objective, "data": run.data,
                   "delta_mode": run.delta_mode if run.objective == "bco" else None, "seed": seed,
                   "steps": steps, "lr": lr, "train_seconds": round(train_seconds, 2),
                   "tokens": tokens, "tokens_per_s": tokens / max(train_seconds, 1e-9),
                   # the data's tokens and the positions the model ran (padding included)
                   "tokens_real": tokens, "tokens_computed": computed,
                   "final": {k: v for k, v in final.items() if k not in ("kind",)},
                   "final_probe": last_probe, "complete": True,
                   "weights_sha256": weights_sha256(run_dir), "weights_bytes": weights_bytes(run_dir)}
        write_json_atomic(run_dir / "summary.json", summary)
        metrics.close()
        for old in run_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return summary
