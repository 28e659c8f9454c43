"""The profile's schema: one dataclass per section, their defaults and what each key means.

A profile is plain values (nanoGPT style); `spotlib.config.load` fills these from YAML.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    restart_first_rate: float = 0.0  # of the restarts, the share that begin at the first step


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
