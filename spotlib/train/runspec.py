"""Run specs: which objective trains on which data with which δ.

A run is named `method[@data][:delta][+option...]`:

- `method` — one of METHODS below (the paper's baselines and SPoT's two forms);
- `@data` — the data × objective cross (docs/method.md): `direct` (the Oracle's direct solutions),
  `rectified` (the minimally edited y⁺), `unfiltered` (rectified pairs without the proximity
  filter, γ = 1, as many as the filtered ones: the γ ablation), or `rft` (the student's own
  correct samples).
  For pair objectives `@direct` keeps each pair's y⁻ and swaps y⁺ for the Oracle's
  direct solution of the same problem. Without `@data`, a method uses its own data.
- `:delta` — δ mode for `spot_bco` (`running_mean`, `ema`, `none`); without it the
  profile's `train.delta_mode`.
- `+option` — pair objectives only, to take their loss apart (OPTIONS below):
  `+edit_only` scores y⁻ on its edited tokens only (those outside the longest common
  subsequence with y⁺; the reference log-probs use the same tokens); `+rejected_only` and
  `+chosen_only` let the gradient through one side only (the other side's log-probs are
  detached, so the loss keeps its value and δ its inputs). `spot_bce+chosen_only` trains
  exactly as `reward_sft`.

Examples: `sft`, `spot_bco`, `spot_bco@direct`, `sft_plus@direct` (= `sft`),
`spot_bco:ema`, `spot_bco@direct:none`, `spot_bco+edit_only`, `dpo+edit_only+rejected_only`. The run's folder name is the spec with `:`
written as `~` (`spot_bco~ema`), which every filesystem accepts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from spotlib.losses import DELTA_MODES


@dataclass(frozen=True)
class Method:
    objective: str          # a function name in spotlib.losses
    data: str               # default data: direct | rectified | rft
    pairs: bool             # trains on (y⁺, y⁻) pairs
    needs_reference: bool   # the objective (not just the metrics) uses π_ref


METHODS: dict[str, Method] = {
    "sft": Method("sft", "direct", pairs=False, needs_reference=False),
    "rft": Method("sft", "rft", pairs=False, needs_reference=False),
    "sft_plus": Method("sft", "rectified", pairs=False, needs_reference=False),
    "kl_sft": Method("kl_sft", "rectified", pairs=False, needs_reference=True),
    "reward_sft": Method("reward_sft", "rectified", pairs=False, needs_reference=True),
    "dpo": Method("dpo", "rectified", pairs=True, needs_reference=True),
    "spot_bce": Method("bce", "rectified", pairs=True, needs_reference=True),
    "spot_bco": Method("bco", "rectified", pairs=True, needs_reference=True),
}
DATA_KINDS = ("direct", "rectified", "unfiltered", "rft")
# Stage 03's files: SFT-type data uses `chosen`; pairs hold both y⁻ and y⁺.
DATA_FILES = {"direct": "sft_direct.jsonl", "rectified": "sft_plus.jsonl", "unfiltered": "sft_plus_unfiltered.jsonl",
              "rft": "rft.jsonl"}
PAIRS_FILE = "pairs.jsonl"
UNFILTERED_PAIRS_FILE = "pairs_unfiltered.jsonl"


def pairs_file(run: "RunSpec") -> str:
    """The stage-03 pairs a pair run reads: γ = 1 pairs for `@unfiltered`, else the filtered ones."""
    return UNFILTERED_PAIRS_FILE if run.data == "unfiltered" else PAIRS_FILE

OPTIONS = ("edit_only", "rejected_only", "chosen_only")

_SPEC = re.compile(r"^(?P<method>[a-z_]+)(@(?P<data>[a-z_]+))?(:(?P<delta>[a-z_]+))?(?P<options>(\+[a-z_]+)*)$")


@dataclass(frozen=True)
class RunSpec:
    method: str
    data: str
    delta_mode: str
    options: tuple[str, ...] = ()   # in OPTIONS order

    @property
    def info(self) -> Method:
        return METHODS[self.method]

    @property
    def objective(self) -> str:
        return self.info.objective

    @property
    def name(self) -> str:
        """Canonical spec: data and δ written only where they differ from the defaults."""
        text = self.method
        if self.data != self.info.data:
            text += f"@{self.data}"
        if self.objective == "bco" and self._explicit_delta:
            text += f":{self.delta_mode}"
        return text + "".join(f"+{o}" for o in self.options)

    @property
    def rejected_scope(self) -> str:
        """Which tokens of y⁻ its log-prob sums: `all`, or `edit` (outside the LCS with y⁺)."""
        return "edit" if "edit_only" in self.options else "all"

    @property
    def gradient(self) -> str:
        """Which side the gradient flows through: `both`, `chosen` or `rejected`."""
        if "chosen_only" in self.options:
            return "chosen"
        return "rejected" if "rejected_only" in self.options else "both"

    @property
    def dirname(self) -> str:
        return self.name.replace(":", "~")

    _explicit_delta: bool = False


def parse_run(spec: str, default_delta: str = "running_mean") -> RunSpec:
    """`method[@data][:delta]` -> RunSpec; a clear error for anything else."""
    match = _SPEC.match(spec.strip())
    if not match:
        raise ValueError(f"train run {spec!r}: expected method[@data][:delta][+option], e.g. spot_bco@direct:ema "
                         "or spot_bco+edit_only")
    method, data, delta = match["method"], match["data"], match["delta"]
    options = [o for o in match["options"].split("+") if o]
    if method not in METHODS:
        raise ValueError(f"train run {spec!r}: unknown method {method!r} (expected one of {', '.join(METHODS)})")
    info = METHODS[method]
    data = data or info.data
    if data not in DATA_KINDS:
        raise ValueError(f"train run {spec!r}: unknown data {data!r} (expected one of {', '.join(DATA_KINDS)})")
    if info.pairs and data == "rft":
        raise ValueError(f"train run {spec!r}: pair objectives need a y⁻; use @rectified or @direct")
    if delta is not None and info.objective != "bco":
        raise ValueError(f"train run {spec!r}: a δ mode applies to spot_bco only")
    if delta is not None and delta not in DELTA_MODES:
        raise ValueError(f"train run {spec!r}: unknown δ mode {delta!r} (expected one of {', '.join(DELTA_MODES)})")
    for option in options:
        if option not in OPTIONS:
            raise ValueError(f"train run {spec!r}: unknown option +{option} (expected some of "
                             f"{', '.join('+' + o for o in OPTIONS)})")
    if options and not info.pairs:
        raise ValueError(f"train run {spec!r}: +{options[0]} applies to pair objectives only "
                         "(dpo, spot_bce, spot_bco)")
    if len(set(options)) != len(options):
        raise ValueError(f"train run {spec!r}: an option given twice")
    if "chosen_only" in options and len(options) > 1:
        raise ValueError(f"train run {spec!r}: +chosen_only drops the rejected term's gradient; "
                         "it combines with no other option")
    explicit = delta is not None and delta != default_delta
    ordered = tuple(o for o in OPTIONS if o in options)
    return RunSpec(method, data, delta or default_delta, ordered, _explicit_delta=explicit)


def plan_runs(train_cfg) -> list[RunSpec]:
    """The profile's methods then ablations, parsed, without duplicates (by canonical name)."""
    runs, seen = [], set()
    for spec in list(train_cfg.methods) + list(train_cfg.ablations):
        run = parse_run(spec, train_cfg.delta_mode)
        if run.name not in seen:
            seen.add(run.name)
            runs.append(run)
    return runs


# Train settings that say how runs are scheduled, not what they compute.
EXECUTION_ONLY = ("cpu_workers", "launcher", "ref_batch_tokens", "logits_chunk_tokens", "report_to")
# ... and, for one run, also which other runs exist and their LRs (its own LR is keyed apart).
NOT_IN_RUN_KEY = ("methods", "ablations", "lr", "lr_grid", "sweep_seeds", "sweep_variants",
                  "tether_lr", "sweep_bracket", "sweep_bracket_tie") + EXECUTION_ONLY


def lr_for(train_cfg, method: str) -> float:
    lrs = train_cfg.lr
    if method in lrs:
        return float(lrs[method])
    if "default" not in lrs:
        raise ValueError(f"train.lr: no entry for {method!r} and no 'default'")
    return float(lrs["default"])
