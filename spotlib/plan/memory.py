"""Memory and time plan of a profile, per stage, computed before any GPU hour is spent.

`python -m spotlib.reproduce --profile paper --dry-run` prints it. Every figure is bytes
on one GPU at that stage's peak, for the profile's model shape, `hardware.gpus` and
`hardware.gpu_memory_gib`; a stage that does not fit names its numbers and the setting
to change. The terms and where they come from:

* ZeRO-2 in bf16 with N data-parallel ranks, as DeepSpeed 0.19 allocates it
  (deepspeed/runtime/zero/stage_1_and_2.py): the model's bf16 weights, flattened in place,
  2P; the fp32 master partition 4P/N and Adam's m, v on it 8P/N; gradients in the model's
  dtype (grad_accum_dtype unset), the rank's partition 2P/N, alive from a backward to the
  optimiser step, so across the micro-batches of one step (each backward copies them into
  a fresh partition buffer: two partitions while it runs); the IPG buckets, reduce_bucket_size
  elements in bf16 (twice with overlap_comm), allocated at a backward's first gradient hook
  and freed at its end; at the step the partition is flattened (2P/N) and cast to fp32
  (4P/N). The updated weights are all-gathered in place (all_gather_into_tensor), so
  allgather_bucket_size allocates nothing. Tied embeddings are one parameter, counted once.
  The stage's peak is the largest of its phases, each the sum of what is alive then.
* Activations kept for backward, per token and layer (Korthikanti et al. 2022, "Reducing
  Activation Recomputation in Large Transformer Models", §4.1, redone for Qwen3: RMSNorm,
  grouped-query attention with q/k norms, SwiGLU, fused attention so no s² score term and
  no dropout). In bf16 (2 B) elements: attention norm input h, q/k/v projection input h,
  q/k norm inputs hq + hkv, attention inputs q, k, v hq + 2·hkv, o_proj input hq, MLP norm
  input h, gate/up input h, gate and up outputs, SiLU output, down_proj input 4·I; plus
  the fp32 copies HF's RMSNorm makes of its input, 4 B × (2h + hq + hkv):
      bytes/token/layer = 2·(4h + 3hq + 3hkv + 4I) + 4·(2h + hq + hkv)
  With gradient checkpointing only each layer's input stays (2h B per token per layer),
  plus one layer's full set while that layer is recomputed in backward.
  The final norm keeps 8h B per token once (fp32 input, bf16 normalised, its output).
* Logits: only completion positions go through the LM head (spotlib.train.logps), by
  chunks of train.logits_chunk_tokens (rl.logp_chunk_tokens in GRPO), each under
  torch.utils.checkpoint, so one chunk's logits exist at a time: chunk × vocab × 16 B when
  training (fp32 copy kept for log-sum-exp 4 B; in backward the softmax 4 B, gather's
  scattered gradient 4 B and their sum 4 B), at the start of the backward, before the
  decoder's layers are recomputed and before the first gradient hook. No-grad scoring:
  chunk × vocab × 8 B (fp32 copy, log-sum-exp's temporary); reference log-probs run the head
  1,024 tokens at a time (spotlib.train.logps.reference_sums), before training, with the
  reference model alone on the GPU. kl_sft computes the token KL in the same chunks:
  policy, reference and KL temporaries, 36 B per chunk token and vocabulary entry, plus its
  reference model 2P for the whole run.
* Stage 04 also counts (spotlib.plan.memory_terms, measured on a CPU term by term): a padded
  batch's mask and SDPA's bf16 copy of it per saving layer, repeat_kv's expanded K and V
  under that mask, whole gradients of parameters larger than the reduce bucket (embeddings,
  an untied head), the edit diagnostic's and the probes' passes beside the training states.
* Checked against the real trainer on one H200 (benchmarks/gpu_trainer_check.py: stage 04
  under accelerate + DeepSpeed ZeRO-2, Qwen3-0.6B shape, pairs of 2,176 tokens, unchunked
  head): peak 18.97 GiB measured, 19.0 GiB planned (tests/test_memory_plan.py).
* Measured on an H200 (bf16, SDPA attention, a Qwen3-0.6B-shaped model with 8 layers, slopes
  between 2,048 and 4,096 tokens): 73,961 B per token per layer against 71,680 planned
  (+3%); 2,114 B checkpointed against 2,048; no-grad logits 8.02 B and training logits
  15.9 B per token per vocabulary entry; kl_sft's policy + reference logits and token KL
  36.0 B (planned 16 + 20); a no-grad forward's peak 0.84 of one layer's training set
  (planned: one layer's worth).
* vLLM: the engine takes gpu_memory_utilization × card (SPOT_VLLM_MEM, 0.85; the GRPO
  engine rl.vllm_gpu_memory, held through the update: the paper's plan fits on 80 GB
  without sleep mode); what its bf16 weights and a start-up reserve leave is KV cache at 2 (K, V) × kv_heads × head_dim × layers × 2 B per token; vLLM refuses to start when one
  sequence of max_model_len (the model's max_position_embeddings) does not fit.
* Time: training FLOPs 6·P per token (8·P with recomputation), no-grad forwards 2·P, over
  GPUs × gpu_tflops × mfu; generation tokens over GPUs × generation_tokens_per_s. Token
  counts are upper bounds: every sequence at its length cap.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from spotlib.config import PARAMS_DIR, Profile
from spotlib.plan.model_shape import BF16, FP32, ModelShape, model_shape

GIB = 1024 ** 3
LOGIT_BYTES_TRAIN = 4 * FP32                # fp32 copy kept; backward: softmax, gather's gradient, their sum
LOGIT_BYTES_NO_GRAD = FP32 + FP32           # fp32 copy, log-sum-exp temporary
KL_EXTRA_LOGIT_BYTES = 5 * FP32             # reference logits, log q, exp(log p), difference, product
REFERENCE_HEAD_CHUNK = 1024                 # spotlib.train.logps.reference_sums's head_chunk
VLLM_STARTUP_RESERVE_GIB = 2.0              # vLLM's profiled activations, CUDA graphs, sampler
DEFAULT_BUCKET_ELEMENTS = 5e8               # DeepSpeed's default bucket sizes


@dataclass
class StagePlan:
    stage: str
    what: str
    terms: list[tuple[str, float]] = field(default_factory=list)   # (label, bytes per GPU)
    hours: float = 0.0
    time_note: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)              # reasons it cannot run, besides memory
    suggestion: str = ""
    budget_bytes: float = 0.0                                       # 0: uses no GPU
    phases: dict[str, float] = field(default_factory=dict)          # bytes per GPU at each phase's peak

    @property
    def peak(self) -> float:
        return sum(b for _, b in self.terms)

    @property
    def fits(self) -> bool:
        return not self.problems and (self.budget_bytes == 0 or self.peak <= self.budget_bytes)


@dataclass
class MemoryPlan:
    profile: str
    shape: ModelShape
    gpus: int
    gpu_memory_gib: float
    stages: list[StagePlan]

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.stages)

    def failures(self) -> list[str]:
        """One line per stage that cannot run, with its numbers and the setting to change."""
        lines = []
        for s in self.stages:
            if s.fits:
                continue
            reasons = list(s.problems)
            if s.budget_bytes and s.peak > s.budget_bytes:
                label, largest = max(s.terms, key=lambda term: term[1])
                reasons.insert(0, f"needs {gib(s.peak)} GiB per GPU, the card has {gib(s.budget_bytes)} GiB usable "
                                  f"({self.gpus} x {self.gpu_memory_gib:g} GiB); largest: {label} {gib(largest)} GiB")
            lines.append(f"stage {s.stage} does not fit: {'; '.join(reasons)}"
                         + (f" -> {s.suggestion}" if s.suggestion else ""))
        return lines


def gib(n: float) -> str:
    return f"{n / GIB:.1f}"


def vllm_fraction(variable: str, default: float) -> float:
    """The engine's memory share, read the way spotlib.engines.sampling reads it."""
    return float(os.environ.get(variable, str(default)))


def deepspeed_buckets(profile: Profile) -> tuple[float, bool]:
    """reduce_bucket_size and overlap_comm from the DeepSpeed JSON the run uses."""
    path = PARAMS_DIR / "deepspeed_zero2.json"
    ds = json.loads(path.read_text()).get("zero_optimization", {}) if path.is_file() else {}
    return float(ds.get("reduce_bucket_size", DEFAULT_BUCKET_ELEMENTS)), bool(ds.get("overlap_comm", False))


@dataclass(frozen=True)
class Zero2:
    """What ZeRO-2 holds on one GPU, by when it is alive (see the module's docstring)."""
    states: list[tuple[str, float]]    # the whole run
    grads: tuple[str, float]           # from a backward to the step
    buckets: tuple[str, float]         # during a backward, from its first gradient hook
    step: list[tuple[str, float]]      # at the optimiser step, besides the gradient partition


def zero2_terms(profile: Profile, shape: ModelShape, gpus: int) -> Zero2:
    p, n = shape.params, max(gpus, 1)
    reduce_bucket, overlap = deepspeed_buckets(profile)
    copies = 2 if overlap else 1
    return Zero2(states=[("bf16 weights (replicated) 2P", BF16 * p),
                         (f"fp32 master weights 4P/{n}", FP32 * p / n),
                         (f"Adam m, v (fp32) 8P/{n}", 2 * FP32 * p / n)],
                 grads=(f"bf16 gradient partition 2P/{n}", BF16 * p / n),
                 buckets=(f"DeepSpeed IPG buckets {copies} x {reduce_bucket:.0e} x 2 B", copies * reduce_bucket * BF16),
                 step=[(f"step: flattened gradient partition 2P/{n}", BF16 * p / n),
                       (f"step: fp32 gradient partition 4P/{n}", FP32 * p / n)])


Terms = list[tuple[str, float]]


def activation_terms(shape: ModelShape, tokens: int, checkpointing: bool) -> tuple[Terms, Terms, str]:
    """(kept through the forward, added while a layer runs backward, a note with the other choice)."""
    full = shape.activation_bytes_per_token_layer()
    final = ("activations: final norm", shape.final_norm_bytes_per_token() * tokens)
    if checkpointing:
        kept = shape.checkpointed_bytes_per_token_layer() * shape.layers * tokens
        return ([("activations: layer inputs (checkpointed)", kept), final],
                [("activations: one layer recomputed", full * tokens)],
                f"without checkpointing {gib(full * shape.layers * tokens)} GiB")
    return ([("activations (no checkpointing)", full * shape.layers * tokens), final], [],
            f"with gradient checkpointing {gib((shape.checkpointed_bytes_per_token_layer() * shape.layers + full) * tokens)} GiB")


def backward_phases(shape: ModelShape, zero: Zero2, held: Terms, tokens: int, chunk: int, logit_bytes: int,
                    checkpointing: bool, accumulating: bool, logits_label: str = "logits") -> dict[str, Terms]:
    """What is alive at each peak of one micro-batch's forward/backward and of the optimiser step.

    `held`: what stays on the GPU besides ZeRO's states (a reference model, vLLM's share);
    `accumulating`: an earlier micro-batch of the same step left its gradient partition."""
    kept, recomputed, _ = activation_terms(shape, tokens, checkpointing)
    base = zero.states + held + ([("gradients of the step's earlier micro-batches", zero.grads[1])]
                                 if accumulating else [])
    hidden = ("completion hidden states and their gradient 4h B/token", 2 * BF16 * shape.hidden * tokens)
    head = [(f"{logits_label}: chunk {chunk:,} tokens x {shape.vocab:,} x {logit_bytes} B",
             chunk * shape.vocab * logit_bytes)]
    return {"LM-head backward": base + kept + [hidden] + head,
            "decoder backward": base + [zero.grads, zero.buckets] + kept + recomputed,
            "optimizer step": zero.states + held + [zero.grads] + zero.step}


def set_peak(plan: StagePlan, phases: dict[str, Terms]) -> str:
    """The plan's terms are its largest phase's; a note gives every phase's total."""
    totals = {name: sum(b for _, b in terms) for name, terms in phases.items()}
    largest = max(totals, key=totals.get)
    plan.terms, plan.phases = phases[largest], totals
    plan.notes.append("phases: " + ", ".join(f"{name} {gib(total)} GiB" for name, total in totals.items())
                      + f"; the peak is the {largest}")
    return largest


def training_hours(shape: ModelShape, tokens: float, hw, checkpointing: bool) -> float:
    flops = (8 if checkpointing else 6) * shape.params * tokens
    return flops / (max(hw.gpus, 1) * hw.gpu_tflops * 1e12 * hw.mfu) / 3600


def forward_hours(shape: ModelShape, tokens: float, hw) -> float:
    return 2 * shape.params * tokens / (max(hw.gpus, 1) * hw.gpu_tflops * 1e12 * hw.mfu) / 3600


def generation_hours(tokens: float, hw) -> float:
    return tokens / (max(hw.gpus, 1) * hw.generation_tokens_per_s) / 3600


def vllm_stage(stage: str, what: str, shape: ModelShape, card: float, fraction: float, variable: str,
               generated_tokens: float, hw) -> StagePlan:
    share = fraction * card
    plan = StagePlan(stage, what, [(f"vLLM share {fraction:g} x card ({variable})", share)], budget_bytes=card,
                     hours=generation_hours(generated_tokens, hw),
                     time_note=f"{generated_tokens / 1e6:.0f}M generated tokens at most")
    check_kv_cache(plan, shape, share, variable)
    if plan.problems:
        plan.suggestion = f"raise {variable} or use GPUs with more memory"
    return plan


def check_kv_cache(plan: StagePlan, shape: ModelShape, share: float, variable: str) -> None:
    """What vLLM's share leaves for the KV cache; a problem when one longest sequence does not fit."""
    weights = BF16 * shape.params
    kv = share - weights - VLLM_STARTUP_RESERVE_GIB * GIB
    kv_tokens = max(0, int(kv // shape.kv_bytes_per_token()))
    plan.notes.append(f"vLLM ({variable}): bf16 weights {gib(weights)} GiB, start-up reserve "
                      f"{VLLM_STARTUP_RESERVE_GIB:g} GiB, KV cache {gib(max(kv, 0))} GiB = {kv_tokens:,} tokens at "
                      f"{shape.kv_bytes_per_token():,} B/token ({kv_tokens // max(shape.max_position, 1)} sequences "
                      f"of {shape.max_position:,})")
    if kv_tokens < shape.max_position:
        plan.problems.append(f"vLLM's KV cache holds {kv_tokens:,} tokens, less than one sequence of max_model_len "
                             f"{shape.max_position:,} (weights {gib(weights)} GiB in a share of {gib(share)} GiB)")


def build_plan(profile: Profile, gpus: int | None = None, gpu_memory_gib: float | None = None) -> MemoryPlan:
    """The per-stage plan; `gpus` and `gpu_memory_gib` override the profile's hardware (what-if)."""
    changes = {k: v for k, v in (("gpus", gpus), ("gpu_memory_gib", gpu_memory_gib)) if v is not None}
    hw = dataclasses.replace(profile.hardware, **changes)
    hw = dataclasses.replace(hw, gpus=hw.gpus * hw.nodes)  # hardware.gpus is per node: plan for all of them
    shape = model_shape(profile)
    card = hw.gpu_memory_gib * GIB
    usable = card - hw.reserve_gib * GIB
    t, s, f = profile.train, profile.sample, profile.filter
    stages = []

    # 01: vLLM data-parallel, one engine per GPU.
    stages.append(vllm_stage("01_sample", "vLLM sampling, one engine per GPU", shape, card,
                             vllm_fraction("SPOT_VLLM_MEM", 0.85), "SPOT_VLLM_MEM",
                             s.num_problems * s.n * s.max_new_tokens, hw))
    stages.append(StagePlan("02_rectify", "Oracle over its API (no GPU)", time_note="bounded by the API"))

    # 03: the NLL report, no-grad forwards of filter.nll_batch_tokens tokens on one GPU,
    # the LM head 1,024 tokens at a time (spotlib.proximity.chunked_completion_logps)
    chunk = f.nll_batch_tokens
    head_chunk = min(REFERENCE_HEAD_CHUNK, chunk)
    nll = StagePlan("03_filter", "NLL report, no-grad forwards", budget_bytes=usable,
                    suggestion="lower filter.nll_batch_tokens")
    nll.terms = [("bf16 weights 2P", BF16 * shape.params),
                 (f"activations: one layer's worth, {chunk:,} tokens", shape.activation_bytes_per_token_layer() * chunk),
                 ("completion hidden states 2h B/token", BF16 * shape.hidden * chunk),
                 (f"logits: head chunk {head_chunk:,} tokens x {shape.vocab:,} x {LOGIT_BYTES_NO_GRAD} B",
                  head_chunk * shape.vocab * LOGIT_BYTES_NO_GRAD)]
    nll_tokens = min(f.nll_max_items, f.max_examples) * 2 * t.max_len
    nll.hours, nll.time_note = forward_hours(shape, nll_tokens, hw) * max(hw.gpus, 1), f"{nll_tokens / 1e6:.0f}M tokens on one GPU"
    stages.append(nll)

    stages.append(training_stage(profile, shape, hw, usable))
    stages.append(vllm_stage("05_eval_forgetting", "vLLM evaluation of every checkpoint", shape, card,
                             vllm_fraction("SPOT_VLLM_MEM", 0.85), "SPOT_VLLM_MEM", eval_tokens(profile), hw))
    stages.append(rl_stage(profile, shape, hw, card, usable))
    return MemoryPlan(profile.name, shape, hw.gpus, hw.gpu_memory_gib, stages)


def training_stage(profile: Profile, shape: ModelShape, hw, usable: float) -> StagePlan:
    from spotlib.train.runspec import plan_runs

    t = profile.train
    runs = plan_runs(t)
    plan = StagePlan("04_train_spot", f"training under ZeRO-2 on {hw.gpus} GPU(s)", budget_bytes=usable)
    zero = zero2_terms(profile, shape, hw.gpus)
    pair_runs = any(r.info.pairs for r in runs)
    kl_runs = any(r.objective == "kl_sft" for r in runs)
    seqs = t.per_device_batch * (2 if pair_runs else 1)   # chosen and rejected share one forward
    tokens = seqs * t.max_len
    accumulating = t.grad_accum > 1
    phases = backward_phases(shape, zero, [], tokens, min(t.logits_chunk_tokens, tokens), LOGIT_BYTES_TRAIN,
                             t.gradient_checkpointing, accumulating)
    if kl_runs:  # kl_sft: unpaired forwards, but a reference model and the token KL by chunks too
        kl_tokens = t.per_device_batch * t.max_len
        kl = backward_phases(shape, zero, [("kl_sft reference model 2P", BF16 * shape.params)], kl_tokens,
                             min(t.logits_chunk_tokens, kl_tokens), LOGIT_BYTES_TRAIN + KL_EXTRA_LOGIT_BYTES,
                             t.gradient_checkpointing, accumulating, "kl_sft logits and token KL")
        phases.update({f"kl_sft {name}": terms for name, terms in kl.items()})
    ref_tokens_batch = t.ref_batch_tokens
    head_chunk = min(REFERENCE_HEAD_CHUNK, ref_tokens_batch)
    phases["reference log-probs (before training)"] = [
        ("reference model bf16 2P", BF16 * shape.params),
        (f"activations: one layer, no grad, {ref_tokens_batch:,} tokens",
         shape.activation_bytes_per_token_layer() * ref_tokens_batch),
        ("completion hidden states 2h B/token", BF16 * shape.hidden * ref_tokens_batch),
        (f"logits: head chunk {head_chunk:,} tokens x {shape.vocab:,} x {LOGIT_BYTES_NO_GRAD} B",
         head_chunk * shape.vocab * LOGIT_BYTES_NO_GRAD)]
    add_stage04_extras(profile, shape, zero, phases, seqs)
    largest = set_peak(plan, phases)
    other = activation_terms(shape, tokens, t.gradient_checkpointing)[2]
    plan.notes.append(f"micro-batch {seqs} sequence(s) x train.max_len {t.max_len:,} = {tokens:,} tokens, "
                      f"LM head by train.logits_chunk_tokens {t.logits_chunk_tokens:,}; activations {other}")
    held = sum(b for _, b in zero.states) + (BF16 * shape.params if kl_runs else 0)
    if held > usable:
        plan.suggestion = (f"use more GPUs than {hw.gpus} (ZeRO-2 partitions the optimizer states only) or GPUs with "
                           f"more memory: weights and optimizer states alone take {gib(held)} GiB")
    elif largest.startswith("reference"):
        plan.suggestion = "lower train.ref_batch_tokens"
    elif not t.gradient_checkpointing:
        plan.suggestion = "set train.gradient_checkpointing: true, or lower train.per_device_batch"
    elif largest.endswith("LM-head backward") and t.logits_chunk_tokens > 1024:
        plan.suggestion = "lower train.logits_chunk_tokens"
    elif t.per_device_batch > 1:
        plan.suggestion = "lower train.per_device_batch (raise train.grad_accum to keep the batch)"
    else:
        plan.suggestion = f"lower train.max_len or use more GPUs than {hw.gpus}"
    examples = t.n_examples or profile.filter.max_examples
    train_tokens = sum(examples * (2 if r.info.pairs else 1) * t.max_len * t.epochs for r in runs) * len(profile.seeds)
    ref_tokens = sum(examples * (2 if r.info.pairs else 1) * t.max_len for r in runs if r.info.needs_reference)
    plan.hours = training_hours(shape, train_tokens, hw, t.gradient_checkpointing) + forward_hours(shape, ref_tokens, hw)
    plan.time_note = (f"{len(runs)} run(s) x {len(profile.seeds)} seed(s), {train_tokens / 1e6:.0f}M training tokens "
                      f"at most, MFU {hw.mfu:g}")
    return plan


def add_stage04_extras(profile: Profile, shape: ModelShape, zero: Zero2, phases: dict[str, Terms], seqs: int) -> None:
    """Stage 04's terms from spotlib.plan.memory_terms: the padding mask and repeat_kv where
    activations are kept, whole gradients over the reduce bucket, the edit diagnostic and the
    probes beside the training states."""
    from spotlib.plan import memory_terms as M

    t = profile.train
    oversized = M.oversized_gradients(shape, deepspeed_buckets(profile)[0])
    grads = [(f"whole bf16 gradient of the {name} (over the reduce bucket)", b) for name, b in oversized.items()]
    head_grad = grads[-1:]  # the LM head's (the embeddings' when tied) exists from the LM-head backward on
    saving = 1 if t.gradient_checkpointing else shape.layers
    for name in list(phases):
        kl = name.startswith("kl_sft")
        rows = t.per_device_batch if kl else seqs
        if name.endswith("LM-head backward"):
            phases[name] = phases[name] + head_grad + (
                M.padding_mask_terms(rows, t.max_len, 0) if t.gradient_checkpointing
                else M.masked_attention_terms(shape, rows, t.max_len, shape.layers, with_bool=False))
        elif name.endswith("decoder backward"):  # the bool mask stays only as a checkpointed layer's input
            phases[name] = phases[name] + grads + M.masked_attention_terms(
                shape, rows, t.max_len, saving, with_bool=t.gradient_checkpointing)
    ref_rows = max(1, t.ref_batch_tokens // max(t.max_len, 1))
    phases["reference log-probs (before training)"] += M.masked_attention_terms(shape, ref_rows, t.max_len, 1)
    if t.edit_diag_pairs:
        phases["edit diagnostic (main rank, between steps)"] = zero.states + M.no_grad_pass_terms(
            shape, M.diag_rows(t), t.max_len, t.logits_chunk_tokens, LOGIT_BYTES_NO_GRAD)
    if M.probes_on(profile):
        build, measure = M.probe_terms(profile, shape)
        phases["probe set (before training)"] = [("reference model bf16 2P", BF16 * shape.params)] + build
        phases["held-out KL probe (main rank, between steps)"] = zero.states + measure


BENCHMARK_ITEMS = {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "minerva": 272,
                   "olympiadbench": 675, "gpqa_diamond": 198, "ifeval": 541, "connect4": 1000}


def eval_tokens(profile: Profile) -> float:
    from spotlib.evals.base import setting

    e, t = profile.eval, profile.train
    models = (1 if e.include_base else 0) + len(t.methods) * len(profile.seeds)
    per_model = sum(min(setting(e.n_items, b, 10 ** 9), BENCHMARK_ITEMS.get(b, 500)) * setting(e.k, b, 1)
                    for b in e.benchmarks)
    return models * per_model * e.max_new_tokens


def rl_stage(profile: Profile, shape: ModelShape, hw, card: float, usable: float) -> StagePlan:
    """GRPO as spotlib.rl.grpo runs it: the policy under ZeRO-2, a colocated vLLM engine holding
    rl.vllm_gpu_memory of the card throughout, the KL reference on the GPU only while scoring
    when rl.offload_reference, log-probs by rl.logp_chunk_tokens LM-head chunks."""
    r = profile.rl
    fraction = r.vllm_gpu_memory
    plan = StagePlan("06_rl_init", f"GRPO: policy under ZeRO-2 on {hw.gpus} GPU(s), reference, vLLM rollouts",
                     budget_bytes=usable)
    zero = zero2_terms(profile, shape, hw.gpus)
    seq = hw.prompt_tokens + r.max_new_tokens
    tokens = r.micro_batch * seq
    chunk = min(r.logp_chunk_tokens, tokens)
    vllm = (f"vLLM share {fraction:g} x card (rl.vllm_gpu_memory)", fraction * card)
    reference = ("bf16 reference model 2P", BF16 * shape.params)
    held = [vllm] + ([] if r.offload_reference else [reference])
    check_kv_cache(plan, shape, fraction * card, "rl.vllm_gpu_memory")
    # spotlib.rl.grpo.layout: each rank's share of a mini-batch's groups, in micro-batches
    groups = min(r.mini_batch, r.prompts_per_step) // max(hw.gpus, 1)
    micro_batches = math.ceil(groups * r.rollouts_per_prompt / r.micro_batch)
    phases = backward_phases(shape, zero, held, tokens, chunk, LOGIT_BYTES_TRAIN, r.gradient_checkpointing,
                             micro_batches > 1)
    phases["scoring (old policy, reference; no grad)"] = zero.states + [vllm, reference] + [
        (f"activations: one layer, no grad, {tokens:,} tokens", shape.activation_bytes_per_token_layer() * tokens),
        (f"logits: chunk {chunk:,} tokens x {shape.vocab:,} x {LOGIT_BYTES_NO_GRAD} B",
         chunk * shape.vocab * LOGIT_BYTES_NO_GRAD)]
    set_peak(plan, phases)
    other = activation_terms(shape, tokens, r.gradient_checkpointing)[2]
    plan.notes.append(f"micro-batch rl.micro_batch {r.micro_batch} x ({hw.prompt_tokens:,} prompt + "
                      f"{r.max_new_tokens:,} new) = {tokens:,} tokens, LM head by rl.logp_chunk_tokens "
                      f"{r.logp_chunk_tokens:,}; activations {other}")
    held = sum(b for _, b in zero.states) + fraction * card
    plan.suggestion = (f"use more GPUs or GPUs with more memory: weights, optimizer states and vLLM's share alone "
                       f"take {gib(held)} GiB" if held > usable else
                       "lower rl.micro_batch or rl.logp_chunk_tokens; rl.vllm_gpu_memory trades the trainer's room "
                       "for vLLM's KV cache; rl.offload_reference: true frees the reference while training")
    steps = math.ceil(r.num_prompts / r.prompts_per_step) * r.epochs if r.max_steps is None else r.max_steps
    rollouts = steps * r.prompts_per_step * r.rollouts_per_prompt * len(r.init_methods)
    plan.hours = (generation_hours(rollouts * r.max_new_tokens, hw)
                  + training_hours(shape, rollouts * seq * r.ppo_epochs, hw, r.gradient_checkpointing)
                  + forward_hours(shape, 2 * rollouts * seq, hw))   # old-policy and reference log-probs
    plan.time_note = f"{len(r.init_methods)} start(s) x {steps} steps, {rollouts:,} rollouts at most"
    return plan


def format_plan(plan: MemoryPlan) -> str:
    s = plan.shape
    total_hours = sum(st.hours for st in plan.stages)
    lines = [f"memory plan  {plan.profile}: {s.params / 1e9:.2f}B parameters (hidden {s.hidden}, {s.layers} layers, "
             f"{s.heads} heads / {s.kv_heads} KV heads x {s.head_dim}, intermediate {s.intermediate}, vocab {s.vocab:,}) "
             f"on {plan.gpus} x {plan.gpu_memory_gib:g} GiB",
             f"  activations {s.activation_bytes_per_token_layer():,} B per token per layer "
             f"({s.checkpointed_bytes_per_token_layer():,} B checkpointed); formulas in spotlib/plan/memory.py"]
    for st in plan.stages:
        if not st.budget_bytes:
            lines.append(f"  {st.stage:<20} {st.what}: no GPU memory; {st.time_note}")
            continue
        verdict = "fits" if st.fits else "DOES NOT FIT"
        lines.append(f"  {st.stage:<20} {st.what}: peak {gib(st.peak)} of {gib(st.budget_bytes)} GiB per GPU, "
                     f"{verdict}; about {st.hours:.1f} h ({st.time_note})")
        for label, value in st.terms:
            lines.append(f"      {gib(value):>7} GiB  {label}")
        for note in st.notes:
            lines.append(f"      {note}")
    lines.append(f"  projected GPU time about {total_hours:.1f} h (upper bound)")
    where = f"{plan.gpus} x {plan.gpu_memory_gib:g} GiB"
    refused = [st.stage for st in plan.stages if not st.fits]
    lines.append(f"  plan refused on {where}: {', '.join(refused)} cannot run (see the preflight)" if refused
                 else f"  plan fits on {where}: every stage")
    return "\n".join(lines)
