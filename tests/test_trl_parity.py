"""spotlib's trainer against TRL's `DPOTrainer` (the dev extra's TRL), step by step.

Both sides train the same micro Qwen3 (random weights, fp32, no dropout) on the same
pairs in the same order: batch 2, AdamW (0.9, 0.95) with HF-Trainer weight-decay groups,
linear warmup then cosine decay, gradient clipping at 1.0. TRL tokenizes conversational
pairs itself; TRL 0.20 (the authors' version) then appended eos to each completion, which
TRL 1.x no longer does, so that one token is added here. spotlib trains with
`completion_format: conversational`.

- DPO: TRL `loss_type="sigmoid"` vs spotlib's `dpo`.
- SPoT-BCE: TRL `loss_type="bco_pair"` (no δ in TRL 1.x) vs spotlib's `spot_bce`.
- δ: spotlib's running mean vs TRL 0.20's `RunningMoments` (no longer shipped by TRL 1.x:
  its update rule is copied below from trl/trainer/utils.py at v0.20.0).

Per-step loss, rewards and grad norm, and the final weights, must agree to TOLERANCE;
the same comparison must fail with the clean completion format or with weight decay on
every parameter (so the tolerance is tight enough to see either).
"""
import random

import pytest
import torch

from pairs_helpers import save_untrained_student
from spotlib import world
from spotlib.config import load_profile
from spotlib.train import data as D
from spotlib.train.logps import reference_sums
from spotlib.train.runspec import parse_run
from spotlib.train.trainer import RunInputs, train_run


STEPS, BATCH, N_PAIRS, SEED = 6, 2, 8, 0
LR, WEIGHT_DECAY, WARMUP_RATIO = 1e-3, 0.1, 0.3   # warmup = ceil(0.3 * 6) = 2 steps
# fp32 on both sides; what is left is summation order (one forward for chosen + rejected
# on both sides, but different padding widths and TRL's fused log-prob head).
TOLERANCE = {"loss": 1e-5, "rewards": 3e-5, "grad_norm": 1e-4, "weights": 1e-5, "lr": 1e-12}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A random micro Qwen3 saved as a base model, and N_PAIRS world pairs (y⁻: one result changed)."""
    profile = load_profile("test")
    base = tmp_path_factory.mktemp("parity_base")
    save_untrained_student(base, profile.world)
    rng = random.Random(0)
    pairs = []
    for item in world.make_items("arith", N_PAIRS, "train", world_cfg=profile.world):
        good = world.student_solution(item, rng)
        lines = good.split("\n")
        lines[-1] = lines[-1] + " 7"
        pairs.append({"id": item["id"], "prompt": item["prompt"], "chosen": good, "rejected": "\n".join(lines)})
    return base, pairs, tmp_path_factory.mktemp("parity_runs")


def _spotlib(setup, method: str, completion_format: str = "conversational", tag: str = ""):
    """spotlib's per-step records and final weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from safetensors.torch import load_file

    base, pairs, runs = setup
    profile = load_profile("test", overrides={
        "output_dir": str(runs / "out"), "model.name_or_path": str(base),
        "train.lr": {"default": LR}, "train.weight_decay": WEIGHT_DECAY, "train.warmup_ratio": WARMUP_RATIO,
        "train.per_device_batch": BATCH, "train.grad_accum": 1, "train.max_grad_norm": 1.0,
        "train.adam_betas": [0.9, 0.95], "train.bf16_autocast": False, "train.kl_probe_every": 0,
        "train.completion_format": completion_format, "train.max_len": 384, "train.max_prompt_len": 128})
    run = parse_run(method)
    tok = AutoTokenizer.from_pretrained(base)
    ref = AutoModelForCausalLM.from_pretrained(base).eval()
    data = D.prepare(tok, pairs, 384, 128, with_rejected=True, completion_format=completion_format)
    cpu = torch.device("cpu")
    inputs = RunInputs(data, reference_sums(ref, data.chosen, tok.pad_token_id, cpu)[0],
                       reference_sums(ref, data.rejected, tok.pad_token_id, cpu)[0], str(base))
    run_dir = runs / f"{method}-{completion_format}{tag}"
    train_run(profile.train, profile.model, run, SEED, inputs, run_dir, steps=STEPS, device=profile.device,
              progress=False)
    from spotlib.io import read_jsonl
    records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    return records, load_file(run_dir / "model.safetensors")


def _trl(setup, loss_type: str):
    """TRL's per-step logs and final weights on the same pairs, in spotlib's order."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    base, pairs, runs = setup
    tok = AutoTokenizer.from_pretrained(base)
    order = [i for step in range(STEPS) for i in D.step_rows(len(pairs), SEED, step, BATCH)]
    rows = [{"prompt": [{"role": "user", "content": pairs[i]["prompt"]}],
             "chosen": [{"role": "assistant", "content": pairs[i]["chosen"]}],
             "rejected": [{"role": "assistant", "content": pairs[i]["rejected"]}]} for i in order]

    class Trl020Tokens(DPOTrainer):
        """TRL 1.x tokenization plus the eos TRL 0.20's `tokenize_row` appended to each completion."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            eos = tok.eos_token_id
            return dataset.map(lambda e: {"chosen_ids": e["chosen_ids"] + [eos],
                                          "rejected_ids": e["rejected_ids"] + [eos]})

    args = DPOConfig(
        output_dir=str(runs / f"trl-{loss_type}"), loss_type=[loss_type], beta=0.1, max_length=None,
        per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, max_steps=STEPS,
        learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=2, weight_decay=WEIGHT_DECAY,
        adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8, optim="adamw_torch", max_grad_norm=1.0,
        train_sampling_strategy="sequential", seed=SEED, use_cpu=True, bf16=False, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(base)
    ref = AutoModelForCausalLM.from_pretrained(base)
    trainer = Trl020Tokens(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                           processing_class=tok)
    trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r and "train_runtime" not in r]
    weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    return logs, weights


def _gaps(ours, ours_weights, theirs, their_weights) -> dict[str, float]:
    """Largest absolute difference per quantity over the steps, and over the final weights."""
    assert len(ours) == len(theirs) == STEPS
    gap = {"loss": 0.0, "rewards": 0.0, "grad_norm": 0.0, "lr": 0.0}
    for a, b in zip(ours, theirs):
        gap["lr"] = max(gap["lr"], abs(a["lr"] - b["learning_rate"]))
        gap["loss"] = max(gap["loss"], abs(a["loss"] - b["loss"]))
        gap["rewards"] = max(gap["rewards"], abs(a["rewards/chosen"] - b["rewards/chosen"]),
                             abs(a["rewards/rejected"] - b["rewards/rejected"]))
        gap["grad_norm"] = max(gap["grad_norm"], abs(a["grad_norm"] - b["grad_norm"]))
    gap["weights"] = max(float((ours_weights[k] - their_weights[k]).abs().max()) for k in ours_weights)
    return gap


def _within(gap) -> bool:
    return all(gap[k] <= TOLERANCE[k] for k in TOLERANCE)


@pytest.mark.parametrize("method,loss_type", [("dpo", "sigmoid"), ("spot_bce", "bco_pair")])
def test_spotlib_matches_trl_step_by_step(setup, method, loss_type):
    theirs, their_weights = _trl(setup, loss_type)
    ours, our_weights = _spotlib(setup, method)
    gap = _gaps(ours, our_weights, theirs, their_weights)
    print(f"{method} vs TRL {loss_type}: largest gaps {gap}")
    assert _within(gap), f"{method} vs TRL {loss_type}: {gap} exceeds {TOLERANCE}"
    # The run moved: a parity of two runs that did nothing would prove nothing.
    assert abs(ours[-1]["rewards/chosen"] - ours[-1]["rewards/rejected"]) > 100 * TOLERANCE["rewards"]
    assert any(r["grad_norm"] > 1.0 for r in ours)  # clipping was exercised

    if method == "spot_bce":  # the tolerance sees either regression
        clean, clean_weights = _spotlib(setup, method, completion_format="clean")
        clean_gap = _gaps(clean, clean_weights, theirs, their_weights)
        print(f"clean completion format vs TRL: {clean_gap}")
        assert not _within(clean_gap)
        from spotlib.train import trainer as T
        grouped = T.param_groups
        try:
            T.param_groups = lambda model, wd: [{"params": list(model.parameters()), "weight_decay": wd}]
            flat, flat_weights = _spotlib(setup, method, tag="-flat-decay")
        finally:
            T.param_groups = grouped
        flat_gap = _gaps(flat, flat_weights, theirs, their_weights)
        print(f"weight decay on every parameter vs TRL: {flat_gap}")
        assert flat_gap["weights"] > 10 * TOLERANCE["weights"]


class RunningMoments020:
    """TRL 0.20.0's `RunningMoments` (trl/trainer/utils.py), single process, as its
    `DPOTrainer` used it for `bco_pair`: `update(mean of cat(r⁺, r⁻))`, δ = `.mean`."""

    def __init__(self):
        self.mean, self.std, self.var, self.count = 0, 1, 1, 1e-24

    @torch.no_grad()
    def update(self, xs: torch.Tensor):
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_mean, xs_var = xs_mean.float(), xs_var.float()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        tot_sum = old_sum + new_sum
        self.mean += (delta * xs_count / tot_count).item()
        new_var = tot_sum / tot_count
        self.std = (new_var * tot_count / (tot_count - 1)).float().sqrt().item()
        self.var = new_var.item()
        self.count = tot_count


def test_delta_running_mean_matches_trl_running_moments():
    from spotlib.losses import DeltaTracker

    gen = torch.Generator().manual_seed(0)
    ours, theirs = DeltaTracker("running_mean"), RunningMoments020()
    worst = 0.0
    for step in range(200):
        r_c = torch.randn(4, generator=gen) * 2 + step / 50
        r_r = torch.randn(4, generator=gen) - 1
        delta = ours.update(r_c, r_r)
        theirs.update(torch.cat((r_c, r_r), 0).mean().detach())
        worst = max(worst, abs(delta - theirs.mean))
    assert worst < 1e-6, worst  # measured: 6.5e-9 over 200 updates
    assert abs(ours.value) > 0.1  # δ went somewhere


def test_decay_groups_are_the_hf_trainers(setup):
    """spotlib's no-decay set is transformers' `Trainer.get_decay_parameter_names` on Qwen3."""
    from transformers import AutoModelForCausalLM, Trainer

    from spotlib.train.optim import decay_parameter_names, param_groups

    model = AutoModelForCausalLM.from_pretrained(setup[0])
    named = {n for n, _ in model.named_parameters()}  # the Trainer groups these (tied lm_head is the embedding)
    theirs = set(Trainer.get_decay_parameter_names(None, model)) & named
    assert decay_parameter_names(model) & named == theirs
    undecayed = named - theirs
    assert any(n.endswith("q_norm.weight") for n in undecayed) and "model.norm.weight" in undecayed
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
