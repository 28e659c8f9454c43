"""Ranges and relations of a profile's settings that can be known before any compute.

Each rule reads the profile and returns `(key, what is wrong)` pairs; `check_ranges`
raises a `ConfigError` for the first, naming the file and the key. A new setting's
check is one more rule: a function decorated with `@rule` (or one more row in a table).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

Problem = tuple[str, str]
RULES: list[Callable[[Any], Iterator[Problem]]] = []

# (key, low, high, low inclusive, high inclusive); None: no bound. A None value (an unset option) passes.
INTERVALS = [
    ("sample.temperature", 0.0, None, True, True),
    ("sample.top_p", 0.0, 1.0, False, True),
    ("sample.grading_timeout_s", 0.0, None, False, True),
    ("sample.grading_processes", 1, None, True, True),
    ("eval.temperature", 0.0, None, True, True),
    ("eval.top_p", 0.0, 1.0, False, True),
    ("eval.grading_timeout_s", 0.0, None, False, True),
    ("eval.grading_processes", 1, None, True, True),
    ("eval.tie_sigmas", 0.0, None, False, True),
    ("rl.temperature", 0.0, None, False, True),   # GRPO samples: 0 would make every rollout alike
    ("rl.top_p", 0.0, 1.0, False, True),
    ("rl.kl_coef", 0.0, None, True, True),
    ("rl.clip_eps", 0.0, 1.0, False, False),
    ("rl.max_grad_norm", 0.0, None, False, True),
    ("rl.weight_decay", 0.0, None, True, True),
    ("rl.vllm_gpu_memory", 0.0, 1.0, False, False),
    ("rl.save_every", 0, None, True, True),
    ("rl.eval_every", 0, None, True, True),
    ("rl.heldout_items", 0, None, True, True),
    ("rl.num_processes", 0, None, True, True),
    ("rl.logp_chunk_tokens", 1, None, True, True),
    ("oracle.temperature", 0.0, None, True, True),
    ("oracle.max_tokens", 1, None, True, True),
    ("oracle.max_retries", 0, None, True, True),
    ("oracle.request_retries", 0, None, True, True),
    ("oracle.parse_retries", 0, None, True, True),
    ("oracle.retry_base_s", 0.0, None, True, True),
    ("oracle.price_input_per_mtok", 0.0, None, True, True),
    ("oracle.price_output_per_mtok", 0.0, None, True, True),
    ("oracle.max_cost_usd", 0.0, None, False, True),
    ("filter.nll_max_items", 0, None, True, True),
    ("filter.nll_batch_size", 1, None, True, True),
    ("filter.nll_batch_tokens", 1, None, True, True),
    ("train.beta", 0.0, None, False, True),
    ("train.kl_coef", 0.0, None, True, True),
    ("train.delta_ema_decay", 0.0, 1.0, True, False),
    ("train.warmup_ratio", 0.0, 1.0, True, False),
    ("train.weight_decay", 0.0, None, True, True),
    ("train.max_grad_norm", 0.0, None, False, True),
    ("train.kl_probe_every", 0, None, True, True),
    ("train.kl_probe_prompts", 1, None, True, True),
    ("train.kl_probe_max_tokens", 1, None, True, True),
    ("train.edit_diag_pairs", 0, None, True, True),
    ("train.save_every", 0, None, True, True),
    ("train.num_processes", 1, None, True, True),
    ("train.ref_batch_tokens", 1, None, True, True),
    ("world.n_facts", 1, None, True, True),
    ("world.tokenizer_corpus_per_family", 1, None, True, True),
    ("world.hidden_size", 1, None, True, True),
    ("world.num_layers", 1, None, True, True),
    ("world.num_heads", 1, None, True, True),
    ("world.num_kv_heads", 1, None, True, True),
    ("world.intermediate_size", 1, None, True, True),
    ("world.max_position", 1, None, True, True),
    ("world.arith_min_ops", 1, None, True, True),
    ("world.ood_min_ops", 1, None, True, True),
    ("world.pretrain_min_ops", 1, None, True, True),
    ("world.pretrain_min_lr", 0.0, None, True, True),
    ("world.warmup_steps", 0, None, True, True),
    ("world.weight_decay", 0.0, None, True, True),
    ("world.micro_batch_tokens", 1, None, True, True),
    ("world.num_threads", 0, None, True, True),
    ("world.manifest_eval_items", 0, None, True, True),
    ("world.eval_max_new_tokens", 1, None, True, True),
    ("base_gate.temperature", 0.0, None, True, True),
    ("hardware.gpus", 0, None, True, True),
    ("hardware.gpu_memory_gib", 0.0, None, False, True),
    ("hardware.gpu_tflops", 0.0, None, False, True),
    ("hardware.mfu", 0.0, 1.0, False, True),
    ("hardware.generation_tokens_per_s", 0.0, None, False, True),
    ("hardware.reserve_gib", 0.0, None, True, True),
    ("hardware.prompt_tokens", 1, None, True, True),
]

# The world tokenizer's byte-level alphabet and its 3 special tokens (spotlib.world.tokenizer.SPECIALS;
# kept equal by a test: importing the world here would slow every profile load).
SMALLEST_VOCAB = 256 + 3

# Lists whose entries name one thing each: the same entry twice is a slip, never a wish.
UNIQUE_LISTS = ("seeds", "train.methods", "train.ablations", "train.sweep_variants", "eval.benchmarks",
                "rl.init_methods", "filter.report_gammas", "train.lr_grid")


def get(profile, dotted: str) -> Any:
    node: Any = profile
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def rule(fn: Callable[[Any], Iterator[Problem]]) -> Callable[[Any], Iterator[Problem]]:
    RULES.append(fn)
    return fn


def _interval_text(low, high, low_in, high_in) -> str:
    if high is None:
        return f"a value {'>=' if low_in else '>'} {low:g}"
    return f"a value in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


@rule
def intervals(profile) -> Iterator[Problem]:
    for key, low, high, low_in, high_in in INTERVALS:
        value = get(profile, key)
        if value is None:
            continue
        below = value < low if low_in else value <= low
        above = high is not None and (value > high if high_in else value >= high)
        if below or above or (isinstance(value, float) and math.isnan(value)):
            yield key, f"expected {_interval_text(low, high, low_in, high_in)}, got {value}"


@rule
def top_k(profile) -> Iterator[Problem]:
    for section in ("sample", "eval", "rl"):
        value = get(profile, f"{section}.top_k")
        if value == 0 or value < -1:
            yield f"{section}.top_k", f"expected -1 (off) or a count >= 1, got {value}"


@rule
def unique_lists(profile) -> Iterator[Problem]:
    for key in UNIQUE_LISTS:
        values = get(profile, key)
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            yield key, f"each entry once, got {', '.join(repeated)} more than once in {values}"


@rule
def lengths(profile) -> Iterator[Problem]:
    t = profile.train
    if t.max_prompt_len >= t.max_len:
        yield "train.max_prompt_len", (f"expected less than train.max_len ({t.max_len}): no room is left for the "
                                       f"completion, got {t.max_prompt_len}")
    if len(t.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in t.adam_betas):
        yield "train.adam_betas", f"expected [beta1, beta2], each in [0, 1), got {t.adam_betas}"
    if profile.filter.nll_batch_tokens < profile.model.max_len:
        yield "filter.nll_batch_tokens", (f"expected at least model.max_len ({profile.model.max_len}): one "
                                          f"sequence must fit a batch, got {profile.filter.nll_batch_tokens}")
    for i, g in enumerate(profile.filter.report_gammas):
        if not 0.0 < g <= 1.0:
            yield f"filter.report_gammas[{i}]", f"expected a value in (0, 1], got {g}"


@rule
def world_shape(profile) -> Iterator[Problem]:
    w = profile.world
    if w.num_heads > 0 and w.hidden_size % w.num_heads:
        yield "world.hidden_size", f"expected a multiple of world.num_heads ({w.num_heads}), got {w.hidden_size}"
    elif w.num_heads > 0 and (w.hidden_size // w.num_heads) % 2:
        yield "world.hidden_size", (f"hidden_size / num_heads = {w.hidden_size // w.num_heads}: rotary position "
                                    f"embeddings need an even head size")
    if w.num_kv_heads > 0 and w.num_heads % w.num_kv_heads:
        yield "world.num_kv_heads", f"expected a divisor of world.num_heads ({w.num_heads}), got {w.num_kv_heads}"
    if w.vocab_size < SMALLEST_VOCAB:
        yield "world.vocab_size", (f"expected at least {SMALLEST_VOCAB} (the 256 byte tokens and the special "
                                   f"tokens), got {w.vocab_size}")
    for low, high in (("arith_min_ops", "arith_max_ops"), ("ood_min_ops", "ood_max_ops"),
                      ("operand_min", "operand_max"), ("pretrain_min_lr", "pretrain_lr")):
        if getattr(w, low) > getattr(w, high):
            yield f"world.{low}", f"expected at most world.{high} ({getattr(w, high)}), got {getattr(w, low)}"
    if w.warmup_steps >= w.pretrain_steps:
        yield "world.warmup_steps", f"expected fewer than world.pretrain_steps ({w.pretrain_steps}), got {w.warmup_steps}"
    negative = [k for k, v in w.mix.items() if v < 0]
    if negative or not w.mix or sum(w.mix.values()) <= 0:
        yield f"world.mix{'.' + negative[0] if negative else ''}", f"expected shares >= 0 that add up to more than 0, got {w.mix}"
    if profile.model.name_or_path == "world" and w.max_position < profile.model.max_len:
        yield "model.max_len", (f"expected at most world.max_position ({w.max_position}), the longest sequence "
                                f"the world's model can place, got {profile.model.max_len}")


@rule
def oracle_endpoint(profile) -> Iterator[Problem]:
    o = profile.oracle
    if o.base_url is not None:
        url = urlparse(o.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            yield "oracle.base_url", f"expected an http(s) URL such as https://host/v1, got {o.base_url!r}"
    for name, rate in o.server_faults.items():
        if name == "latency_s":
            if rate < 0:
                yield "oracle.server_faults.latency_s", f"expected seconds >= 0, got {rate}"
        elif not 0.0 <= rate <= 1.0:
            yield f"oracle.server_faults.{name}", f"expected a rate in [0, 1], got {rate}"


@rule
def rl_batches(profile) -> Iterator[Problem]:
    r = profile.rl
    if r.rollouts_per_prompt < 2:
        yield "rl.rollouts_per_prompt", f"GRPO compares rollouts of a prompt: expected at least 2, got {r.rollouts_per_prompt}"


@rule
def seeds(profile) -> Iterator[Problem]:
    for key in ("seed", "world.seed", "filter.seed", "eval.gpqa_shuffle_seed"):
        if get(profile, key) < 0:
            yield key, f"expected a seed >= 0, got {get(profile, key)}"
    for i, s in enumerate(profile.seeds):
        if s < 0:
            yield f"seeds[{i}]", f"expected a seed >= 0, got {s}"


@rule
def engine(profile) -> Iterator[Problem]:
    from spotlib.engines.settings import problems as engine_problems

    yield from engine_problems(profile)


def problems(profile, extra_rules=()) -> list[Problem]:
    return [p for check in [*RULES, *extra_rules] for p in check(profile)]

