"""Profiles: one YAML file per study setting, loaded into typed, validated objects.

A profile is plain values (nanoGPT style). Loading checks every key against the
dataclasses below, so a typo or a wrong type fails at once with the file and the
key in the message instead of silently falling back to a default.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = REPO_ROOT / "params"


class ConfigError(ValueError):
    """A profile file is missing, malformed, or holds an unknown key or a wrong type."""


@dataclass
class WorldConfig:
    """The tiny synthetic world and its self-trained base model."""
    seed: int = 0
    n_facts: int = 200
    vocab_size: int = 512
    tokenizer_corpus_per_family: int = 1500   # generated examples per family the BPE is trained on
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 768
    max_position: int = 512
    arith_min_ops: int = 2
    arith_max_ops: int = 3
    operand_min: int = 10
    operand_max: int = 99
    ood_min_ops: int = 3
    ood_max_ops: int = 4
    pretrain_min_ops: int = 1
    pretrain_steps: int = 450
    pretrain_batch: int = 48
    pretrain_lr: float = 2.5e-3
    pretrain_min_lr: float = 1.0e-4
    warmup_steps: int = 20
    weight_decay: float = 0.01
    micro_batch_tokens: int = 4096   # padded tokens per micro-batch (length-sorted)
    # Pre-training mixture; oracle_style = arith problems solved in the oracle's wording.
    mix: dict[str, float] = field(default_factory=lambda: {
        "arith": 0.45, "arith_ood": 0.07, "facts": 0.23, "format": 0.17, "oracle_style": 0.05})
    # Share of the pre-training arithmetic (student wording) written with one slipped step: a carry or
    # borrow of ten dropped, the slip carried through to a wrong final answer, as in a corpus with errors.
    slip_rate: float = 0.0
    # Words put before the prompt of the oracle-worded pre-training examples ("" = none: the student's
    # own prompts). With a prefix the student learns to compute in the oracle's wording in another
    # context (a textbook's worked examples) and still answers a plain prompt in its own wording.
    oracle_style_prefix: str = ""
    # One matrix for the input embeddings and the LM head (Qwen3-0.6B/1.7B) or two (Qwen3-8B): with
    # tied embeddings a push on an output token also moves that token's input embedding everywhere.
    tie_word_embeddings: bool = True
    bf16_autocast: bool = False      # bf16 autocast while pre-training, on any CPU (spotlib.precision)
    num_threads: int = 0             # torch threads while pre-training (0 = leave as is); in the world hash
    cpu_kernels: str = "native"      # native | avx2 | avx512: CPU instruction set of the whole study (spotlib.precision)
    manifest_eval_items: int = 100   # held-out items per family scored into the manifest
    prompt_template: str = "plain"   # plain | paper: arith prompts inside the paper's math template
    eval_max_new_tokens: int = 128


@dataclass
class BaseGateConfig:
    """Stage 01's check of the base model before any study is built on it.

    The world manifest's held-out accuracies (`heldout_scores`, at `temperature`) must lie
    in `targets` (family -> [low, high], fractions in [0, 1]); outside them stage 01 stops
    unless `mode: warn`, which goes on and records the override. Kept apart from `world`
    so that moving a target never changes the world's hash (and never re-trains the model)."""
    temperature: float = 0.7
    targets: dict[str, list[float]] = field(default_factory=dict)  # empty: no gate
    mode: str = "enforce"           # enforce | warn


@dataclass
class ModelConfig:
    """The student. `world` means the profile's own pre-trained tiny base model."""
    name_or_path: str = "world"
    dtype: str = "float32"          # weights dtype when loading (bf16 on GPUs)
    max_len: int = 512              # prompt + completion tokens


@dataclass
class SampleConfig:
    """Stage 01: sample the student once per training problem."""
    backend: str = "auto"           # auto | transformers | vllm | vllm_standin (CPU rehearsal)
    dataset: str = "world"          # world | open-r1/DAPO-Math-17k-Processed
    dataset_config: str = "en"
    dataset_split: str = "train"
    data_files: str | None = None   # local parquet/jsonl in the dataset's format (offline use)
    num_problems: int = 4000
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = -1
    max_new_tokens: int = 160
    batch_size: int = 64
    grading: str = "world"          # world | math_verify | paper_regex
    grading_timeout_s: float = 5.0
    grading_processes: int = 2


@dataclass
class OracleConfig:
    """Stage 02: the Oracle that rectifies wrong answers and writes direct solutions."""
    kind: str = "programmatic"      # programmatic | openai | local_server
    base_url: str | None = None
    model: str = "programmatic"
    api_key_env: str | None = None  # NAME of the environment variable that holds the key
    prompt_variant: str = "with_ground_truth"  # with_ground_truth | without_ground_truth | simplified
    concurrency: int = 64
    timeout_s: float = 600.0
    max_retries: int = 5
    temperature: float | None = None
    max_tokens: int | None = None
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0
    direct_attempts: int = 2        # direct solutions tried per problem (rejection sampling)
    stream: bool = False            # stream replies (long thinking replies outlive idle proxies)
    extra_body: dict[str, Any] = field(default_factory=dict)  # provider-specific request fields
    request_retries: int = 2        # retries for what the SDK does not retry (dropped streams, bad bodies)
    parse_retries: int = 1          # re-asks when a reply lacks the markers
    retry_base_s: float = 1.0       # back-off base of those retries (doubles each time)
    max_cost_usd: float | None = None  # stop sending new requests past this estimated spend
    server_faults: dict[str, float] = field(default_factory=dict)  # local_server: fault rates, latency_s
    server_thinking: str = "inline"  # local_server: how thoughts come back (inline | gemini | field)
    # The programmatic Oracle beyond its minimal edit (spotlib.world.oracle_rewrite), shares of rectifications:
    # restart from an earlier step in its own wording, or re-word correct steps; a fix whose new slip makes
    # the answer wrong (fail), or one wrong intermediate step under a right answer (wrong_step).
    restart_rate: float = 0.0
    reword_rate: float = 0.0
    fail_rate: float = 0.0
    wrong_step_rate: float = 0.0


@dataclass
class FilterConfig:
    """Stage 03: verification, the proximity filter, and equal-size training sets."""
    gamma: float = 0.6
    unit: str = "tokens"            # tokens | chars
    max_examples: int = 4000        # every method's data is capped to the same count
    seed: int = 0
    nll_max_items: int = 512        # pairs scored by the student for the NLL report (0: skip)
    nll_batch_size: int = 16        # at most this many sequences per NLL batch
    nll_batch_tokens: int = 16384   # and at most this many padded tokens (≥ model.max_len; the memory plan)
    report_gammas: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])


@dataclass
class TrainConfig:
    """Stage 04: one trainer for every method."""
    methods: list[str] = field(default_factory=lambda: [
        "sft", "rft", "sft_plus", "dpo", "reward_sft", "spot_bce", "spot_bco", "kl_sft"])
    ablations: list[str] = field(default_factory=list)
    beta: float = 0.1
    delta_mode: str = "running_mean"  # running_mean | ema | none
    delta_ema_decay: float = 0.99
    kl_coef: float = 0.1
    lr: dict[str, float] = field(default_factory=lambda: {"default": 1e-6})
    epochs: float = 2.0
    max_steps: int | None = None
    per_device_batch: int = 2
    grad_accum: int = 2
    warmup_ratio: float = 0.05
    weight_decay: float = 0.01
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    max_grad_norm: float = 1.0
    max_len: int = 8192
    max_prompt_len: int = 4096
    bf16: bool = False
    gradient_checkpointing: bool = False
    packing: bool = False           # padding-free micro-batches: sequences end to end (spotlib.train.packing)
    bf16_autocast: bool = False     # CPU: bf16 autocast over fp32 weights, whatever the CPU (spotlib.precision)
    n_examples: int | None = None   # examples per run; None = the smallest run's data (all equal)
    kl_probe_every: int = 10        # steps between held-out KL probes (0 = off)
    kl_probe_prompts: int = 64
    kl_probe_max_tokens: int = 64   # reference greedy response length on the probe prompts
    kl_probe_file: str | None = None  # jsonl of {prompt, family}; None = the tiny world's probe split
    edit_diag_pairs: int = 32       # fixed training pairs for rewards and the first-edit diagnostic
    save_every: int = 0             # checkpoint every N steps (0 = only the final model)
    accelerate_config: str | None = None  # accelerate launch config (DeepSpeed ZeRO-2 on GPUs)
    launcher: str = "accelerate"    # how stage 04 relaunches itself: accelerate (with accelerate_config) | torchrun
    # DeepSpeed JSON: every training process (stages 04 and 06) builds its engine with deepspeed.initialize,
    # on GPUs and on a CPU alike (spotlib.train.deepspeed_run); None: accelerate's own wrapper (DDP / plugin).
    deepspeed_config: str | None = None
    num_processes: int | None = None  # training processes; None = the visible GPUs (CPU: set it, with torchrun)
    ref_batch_tokens: int = 16384   # padded tokens per reference log-prob batch (rows × longest row; memory plan)
    logits_chunk_tokens: int = 2048  # completion tokens per LM-head chunk in training (one chunk's logits alive)
    cpu_workers: int = 1            # CPU only: single-thread processes side by side for 04's runs, 05's models, the sweep
    lr_grid: list[float] = field(default_factory=list)  # learning rates the sweep tries per method
    # The tether lesson's SPoT-BCO run in stage 04 (spotlib.analysis.tether); None = the top of lr_grid (no grid: the
    # lesson reads the stage's own SPoT-BCO run, nothing extra is trained).
    tether_lr: float | None = None
    sweep_seeds: list[int] = field(default_factory=list)  # the sweep's training seeds ([] = the first of `seeds`)
    sweep_variants: list[str] = field(default_factory=list)  # extra runs on the sweep's frontier, e.g. spot_bco+edit_only
    # Bracketing (spotlib.analysis.frontier): at most this many half-decades added beyond each edge of lr_grid, per run,
    # while its chosen, matched or best point sits there (0: the grid as given); a run whose gains and
    # forgetting are within max(sweep_bracket_tie, eval.tie_sigmas SE) points of zero ties with the base.
    sweep_bracket: int = 0
    sweep_bracket_tie: float = 0.5
    # Which tokens a completion is trained on (docs/training-format.md): `conversational` is what the
    # authors' trainer (TRL 0.20, conversational pairs) saw; `clean` is the raw text and one eos.
    completion_format: str = "conversational"
    # Trackers that show each run's curves live (spotlib.train.tracking): tensorboard, wandb, trackio,
    # mlflow, a list of them, or none. How a run is watched, not what it computes: in no run key.
    report_to: str | list[str] = "tensorboard"


@dataclass
class EvalConfig:
    """Stage 05: benchmarks, sampling settings, avg@k."""
    benchmarks: list[str] = field(default_factory=lambda: ["arith", "arith_ood", "facts", "format"])
    k: dict[str, int] = field(default_factory=lambda: {"default": 1})
    n_items: dict[str, int] = field(default_factory=lambda: {"default": 200})
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    max_new_tokens: int = 160
    batch_size: int = 64
    data_files: dict[str, str] = field(default_factory=dict)  # benchmark -> local file (offline)
    gpqa_shuffle_seed: int = 0
    grading: str = "math_verify"   # math_verify | paper_regex (math benchmarks)
    grading_processes: int = 2
    grading_timeout_s: float = 5.0
    backend: str = "auto"          # auto | transformers | vllm | vllm_standin (CPU rehearsal)
    include_base: bool = True       # evaluate the start model too (the deltas' reference)
    tie_sigmas: float = 2.0         # |difference| below this many standard errors is a tie


@dataclass
class RLConfig:
    """Stage 06: GRPO from the base model and from the SPoT checkpoint."""
    init_methods: list[str] = field(default_factory=lambda: ["base", "spot_bco"])
    num_prompts: int = 4000
    rollouts_per_prompt: int = 8
    prompts_per_step: int = 256
    mini_batch: int = 64
    lr: float = 1e-6
    kl_coef: float = 0.001
    clip_eps: float = 0.2
    temperature: float = 1.0
    max_new_tokens: int = 4096
    epochs: int = 10
    max_steps: int | None = None
    eval_every: int = 10
    # mini_batch counts prompts (verl's ppo_mini_batch_size): one optimiser step per mini-batch.
    top_p: float = 1.0
    top_k: int = -1
    ppo_epochs: int = 1             # passes over each step's rollouts
    micro_batch: int = 16           # sequences per forward/backward (memory only)
    rollout_batch: int = 64         # sequences per generate call (transformers backend)
    max_grad_norm: float = 1.0
    weight_decay: float = 0.01
    bf16_autocast: bool = False     # bf16 autocast over fp32 weights, whatever the CPU (spotlib.precision)
    save_every: int = 10            # checkpoint every k steps (0: only the final model)
    heldout_items: int = 64         # held-out problems for the accuracy curve
    num_processes: int = 1          # GRPO training processes (0: one per visible GPU); >1 relaunches stage 06
    gradient_checkpointing: bool = False
    logp_chunk_tokens: int = 1024   # completion tokens per LM-head chunk (fp32 logits of one chunk at a time)
    vllm_gpu_memory: float = 0.3    # vLLM's share of each GPU, colocated with the policy being trained
    offload_reference: bool = True  # GPU: keep the KL reference on the CPU between steps
    backend: str = "auto"           # auto | transformers | vllm (rollouts)


@dataclass
class EngineConfig:
    """vLLM's engine settings for stages 01, 05 and 06 (`sample/eval/rl.backend: vllm`), as recorded
    profile settings: the same keys on a GPU and on vLLM's CPU build (`spotlib.engines.settings`)."""
    workers: int = 0                # engine workers (0: one per visible GPU; a CPU profile sets it)
    dtype: str = "bfloat16"
    gpu_memory_utilization: float = 0.85  # share of each GPU's memory (of the machine's RAM on vLLM's CPU build)
    enforce_eager: bool = False     # True: no CUDA graphs / no torch.compile (seconds instead of a minute on CPU)
    enable_chunked_prefill: bool | None = None  # None: vLLM's default (CPU: False, seeded sampling needs it)
    max_model_len: int | None = None  # None: the model's own
    threads_per_worker: int = 0     # CPU build: cores each engine binds (0: vLLM's default)


@dataclass
class HardwareConfig:
    """What the memory and time plan (spotlib.plan.memory) and the preflight assume and check."""
    gpus: int = 0                   # CUDA GPUs the profile runs on (0: a CPU profile, not planned)
    nodes: int = 1                  # machines; `gpus` is per node (spotlib.launch.relaunch, docs/multi-node.md)
    gpu_memory_gib: float = 80.0    # memory per GPU
    gpu_tflops: float = 989.0       # dense bf16 peak per GPU (H100/H800 SXM)
    mfu: float = 0.35               # model FLOPs utilisation expected of training
    generation_tokens_per_s: float = 2500.0  # vLLM decode throughput per GPU, batched
    reserve_gib: float = 3.0        # CUDA context, NCCL and allocator fragmentation per GPU
    prompt_tokens: int = 1024       # longest prompt assumed for RL rollouts


@dataclass
class Profile:
    name: str
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    output_dir: str = ""
    device: str = "auto"            # auto | cpu | cuda
    world: WorldConfig = field(default_factory=WorldConfig)
    base_gate: BaseGateConfig = field(default_factory=BaseGateConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    assets: str = ""                # "rehearsal": stage 01 first builds a small model and public-format files
    source: str = ""                # the YAML file this profile came from

    @property
    def out(self) -> Path:
        return Path(self.output_dir)

    def stage_dir(self, stage: str) -> Path:
        path = self.out / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def base_model_path(self) -> Path:
        """Where the student starts from: the tiny world's base model or an HF id/path."""
        if self.model.name_or_path == "world":
            return self.out / "base_model"
        return Path(self.model.name_or_path)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)


def resolve_profile_path(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if not path.is_file():
            raise ConfigError(f"{path}: profile file not found")
        return path
    candidate = PARAMS_DIR / f"{text}.yaml"
    if not candidate.is_file():
        # accelerate_*.yaml sit beside the profiles but are launcher configs, not profiles
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml") if not p.stem.startswith("accelerate"))
        raise ConfigError(f"unknown profile {text!r}: no {candidate} (known: {', '.join(known)})")
    return candidate


def load_profile(name_or_path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> Profile:
    """Load and validate a profile. `overrides` uses dotted keys: {"train.beta": 0.2}."""
    path = resolve_profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:  # all defaults is never what an empty (or truncated) file meant
        raise ConfigError(f"{path}: the profile file is empty (expected settings, e.g. as in {PARAMS_DIR / 'tiny.yaml'})")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    profile = _build(Profile, raw, path, prefix="")
    if not profile.output_dir:
        profile.output_dir = str(REPO_ROOT / "outputs" / profile.name)
    _expand_output_dir(profile)
    profile.source = str(path)
    _check_choices(profile, path)
    check_values(profile, path)
    return profile


OUTPUT_DIR_TOKEN = "{output_dir}"


def _expand_output_dir(profile: "Profile") -> None:
    """Paths may start with `{output_dir}` (inputs a profile builds itself, e.g. the rehearsal's)."""
    def expand(value):
        return value.replace(OUTPUT_DIR_TOKEN, profile.output_dir) if isinstance(value, str) else value

    profile.model.name_or_path = expand(profile.model.name_or_path)
    profile.sample.data_files = expand(profile.sample.data_files)
    profile.eval.data_files = {k: expand(v) for k, v in profile.eval.data_files.items()}
    profile.train.kl_probe_file = expand(profile.train.kl_probe_file)


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _build(cls, raw: Any, path: Path, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key {prefix.rstrip('.') or '<top>'}: expected a mapping, "
                          f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{path}: unknown key {prefix}{key!r} "
                              f"(expected one of: {', '.join(sorted(names))})")
    kwargs = {}
    for key, value in raw.items():
        kwargs[key] = _coerce(hints[key], value, path, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(tp, value, path: Path, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{path}: key {key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(path, key, "a list", value)
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, path, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(path, key, "a mapping", value)
        key_tp, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, path, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(path, key, "true or false", value)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(path, key, "an integer", value)
        return value
    if tp is float:
        # YAML reads 1e-6 (no dot) as a string; accept numeric strings for floats only.
        if isinstance(value, bool):
            raise _type_error(path, key, "a number", value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(path, key, "a number", value)
    if tp is str:
        if not isinstance(value, str):
            raise _type_error(path, key, "a string", value)
        return value
    raise ConfigError(f"{path}: key {key}: unsupported type {tp}")


def _type_error(path: Path, key: str, expected: str, value) -> ConfigError:
    return ConfigError(f"{path}: key {key}: expected {expected}, got {value!r} "
                       f"({type(value).__name__})")


_CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "assets": ("", "rehearsal"),
    "world.prompt_template": ("plain", "paper"),
    "base_gate.mode": ("enforce", "warn"),
    "sample.backend": ("auto", "transformers", "vllm", "vllm_standin"),
    "sample.grading": ("world", "math_verify", "paper_regex"),
    "eval.grading": ("math_verify", "paper_regex"),
    "eval.backend": ("auto", "transformers", "vllm", "vllm_standin"),
    "oracle.kind": ("programmatic", "openai", "local_server"),
    "oracle.prompt_variant": ("with_ground_truth", "without_ground_truth", "simplified"),
    "oracle.server_thinking": ("inline", "gemini", "field"),
    "filter.unit": ("tokens", "chars"),
    "train.delta_mode": ("running_mean", "ema", "none"),
    "train.completion_format": ("conversational", "clean"),
    "train.launcher": ("accelerate", "torchrun"),
    "world.cpu_kernels": ("native", "avx2", "avx512"),
}


def _check_choices(profile: Profile, path: Path) -> None:
    for dotted, allowed in _CHOICES.items():
        node: Any = profile
        for part in dotted.split("."):
            node = getattr(node, part)
        if node not in allowed:
            raise ConfigError(f"{path}: key {dotted}: {node!r} is not one of {', '.join(allowed)}")
    if not 0.0 < profile.filter.gamma <= 1.0:
        raise ConfigError(f"{path}: key filter.gamma: expected a value in (0, 1], got {profile.filter.gamma}")


# Names `spotlib.models.torch_dtype` accepts (kept equal by a test; no torch import here).
DTYPE_NAMES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")

# Settings that must be > 0 (counts, sizes, rates); `None` is allowed where the type allows it.
_POSITIVE = (
    "sample.num_problems", "sample.n", "sample.max_new_tokens", "sample.batch_size",
    "oracle.concurrency", "oracle.direct_attempts", "oracle.timeout_s",
    "filter.max_examples",
    "train.epochs", "train.max_steps", "train.per_device_batch", "train.grad_accum", "train.max_len",
    "train.max_prompt_len", "train.n_examples", "train.cpu_workers", "train.logits_chunk_tokens",
    "eval.max_new_tokens", "eval.batch_size",
    "rl.num_prompts", "rl.rollouts_per_prompt", "rl.prompts_per_step", "rl.mini_batch", "rl.lr",
    "rl.max_new_tokens", "rl.epochs", "rl.max_steps", "rl.micro_batch", "rl.rollout_batch", "rl.ppo_epochs",
    "world.pretrain_steps", "world.pretrain_batch", "world.pretrain_lr",
    "model.max_len",
)
# Mappings whose every value must be > 0.
_POSITIVE_MAPS = ("train.lr", "eval.k", "eval.n_items")


def _get(profile: Profile, dotted: str) -> Any:
    node: Any = profile
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


ORACLE_BEHAVIOUR_KEYS = ("restart_rate", "reword_rate", "fail_rate", "wrong_step_rate")

# What `train.report_to` may name (spotlib.train.tracking): one of these, a list of them, or none.
TRACKERS = ("tensorboard", "wandb", "trackio", "mlflow")


def report_to_problem(report_to: str | list[str]) -> str | None:
    """Why a `train.report_to` value is not a valid setting (None when it is)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    unknown = [n for n in names if n not in TRACKERS + ("none",)]
    if unknown:
        return f"{unknown[0]!r} is not one of {', '.join(TRACKERS + ('none',))}"
    if "none" in names and len(names) > 1:
        return f"'none' cannot be combined with trackers ({', '.join(names)})"
    return None


def check_values(profile: Profile, path: Path | str) -> None:
    """Values that no run can use: zero or negative counts and rates, no seeds, unknown dtypes."""
    if not profile.seeds:
        raise ConfigError(f"{path}: key seeds: expected at least one seed, got []")
    for dotted in _POSITIVE:
        value = _get(profile, dotted)
        if value is not None and value <= 0:
            raise ConfigError(f"{path}: key {dotted}: expected a value > 0, got {value}")
    for dotted in _POSITIVE_MAPS:
        for name, value in _get(profile, dotted).items():
            if value <= 0:
                raise ConfigError(f"{path}: key {dotted}.{name}: expected a value > 0, got {value}")
    for family, bounds in profile.base_gate.targets.items():
        if len(bounds) != 2 or not 0.0 <= bounds[0] <= bounds[1] <= 1.0:
            raise ConfigError(f"{path}: key base_gate.targets.{family}: expected [low, high] with "
                              f"0 <= low <= high <= 1 (accuracy as a fraction), got {bounds}")
    if not 0.0 <= profile.world.slip_rate < 1.0:
        raise ConfigError(f"{path}: key world.slip_rate: expected a share in [0, 1), got {profile.world.slip_rate}")
    if len(set(profile.train.sweep_seeds)) != len(profile.train.sweep_seeds):
        raise ConfigError(f"{path}: key train.sweep_seeds: each seed once, got {profile.train.sweep_seeds}")
    for i, lr in enumerate(profile.train.lr_grid):
        if lr <= 0:
            raise ConfigError(f"{path}: key train.lr_grid[{i}]: expected a learning rate > 0, got {lr}")
    behaviour = {k: getattr(profile.oracle, k) for k in ORACLE_BEHAVIOUR_KEYS}
    for key, value in behaviour.items():
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{path}: key oracle.{key}: expected a share in [0, 1], got {value}")
    for a, b in (("restart_rate", "reword_rate"), ("fail_rate", "wrong_step_rate")):
        if behaviour[a] + behaviour[b] > 1.0:
            raise ConfigError(f"{path}: keys oracle.{a} + oracle.{b}: shares of one draw, expected a sum <= 1, "
                              f"got {behaviour[a] + behaviour[b]:g}")
    if any(behaviour.values()) and profile.oracle.kind == "openai":
        raise ConfigError(f"{path}: key oracle.{next(k for k, v in behaviour.items() if v)}: the programmatic "
                          "Oracle's behaviour (oracle.kind programmatic or local_server), not an endpoint's")
    for key in ("sweep_bracket", "sweep_bracket_tie"):
        if getattr(profile.train, key) < 0:
            raise ConfigError(f"{path}: key train.{key}: expected a value >= 0, got {getattr(profile.train, key)}")
    if profile.train.tether_lr is not None and profile.train.tether_lr <= 0:
        raise ConfigError(f"{path}: key train.tether_lr: expected a learning rate > 0 (or null: the top of "
                          f"train.lr_grid), got {profile.train.tether_lr}")
    problem = report_to_problem(profile.train.report_to)
    if problem:
        raise ConfigError(f"{path}: key train.report_to: {problem}")
    if profile.model.dtype not in DTYPE_NAMES:
        raise ConfigError(f"{path}: key model.dtype: {profile.model.dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    if not profile.train.methods:
        raise ConfigError(f"{path}: key train.methods: expected at least one method, got []")
    if not profile.eval.benchmarks:
        raise ConfigError(f"{path}: key eval.benchmarks: expected at least one benchmark, got []")
    check_ranges(profile, path)   # every other range and relation, one rule each (spotlib.config.checks)


def check_ranges(profile, path, extra_rules=()) -> None:
    """Raise ConfigError naming the first problem's key. `extra_rules`: rules that read the registries of
    the layers above (spotlib.plan.names), run by `spotlib.plan.validate`."""
    from spotlib.config.checks import problems

    found = problems(profile, extra_rules)
    if found:
        key, message = found[0]
        more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
        raise ConfigError(f"{path}: key {key}: {message}{more}")


def secret_from_env(var_name: str | None, what: str = "API key") -> str | None:
    """Read a secret from the environment variable named in the profile (never from the profile)."""
    if not var_name:
        return None
    value = os.environ.get(var_name)
    if not value:
        raise ConfigError(f"{what}: environment variable {var_name} is not set")
    return value
