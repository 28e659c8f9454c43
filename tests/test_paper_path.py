"""What would stop or spoil the first 8-GPU run, shown on a micro model on the CPU: the edit
diagnostic's logits, memory held between runs, the state dict at save time, the mid-run checkpoint."""
from __future__ import annotations

import gc
import random

import pytest
import torch

from pairs_helpers import change_one_result, save_untrained_student
from spotlib import world
from spotlib.config import load_profile
from spotlib.io import write_jsonl
from spotlib.train import data as D
from spotlib.train.logps import reference_sums
from spotlib.train.runspec import parse_run
from spotlib.train.trainer import RunInputs, train_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base")
    save_untrained_student(path, load_profile("test").world)
    return path


@pytest.fixture(scope="module")
def filter_dir(tmp_path_factory):
    profile = load_profile("test")
    rng = random.Random(0)
    pairs = []
    for it in world.make_items("arith", 8, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        pairs.append({"id": it["id"], "prompt": it["prompt"], "rejected": change_one_result(good, rng),
                      "chosen": good, "answer": it["answer"], "source": "rectified"})
    d = tmp_path_factory.mktemp("outputs") / "03_filter"
    write_jsonl(d / "pairs.jsonl", pairs)
    return d


def _profile(base, filter_dir, **train):
    overrides = {"output_dir": str(filter_dir.parent), "model.name_or_path": str(base),
                 "train.kl_probe_every": 0, "train.edit_diag_pairs": 0, "train.methods": ["spot_bco"],
                 "train.ablations": []}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return load_profile("test", overrides=overrides)


def _inputs(profile, run, base, filter_dir, diag=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    data = D.prepare(tok, D.load_examples(filter_dir, run), profile.train.max_len, profile.train.max_prompt_len,
                     run.info.pairs)
    cpu = torch.device("cpu")
    rc = reference_sums(model, data.chosen, tok.pad_token_id, cpu)[0]
    rr = reference_sums(model, data.rejected, tok.pad_token_id, cpu)[0] if run.info.pairs else None
    return RunInputs(data, rc, rr, str(base), diag=diag)


class _HeadRows:
    """The most rows any LM-head call produced (a [rows, vocab] logits tensor), over every module."""

    def __init__(self, vocab: int):
        self.vocab, self.most = vocab, 0

    def __enter__(self):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.shape[-1] == self.vocab and isinstance(
                    module, torch.nn.Linear):
                self.most = max(self.most, output.reshape(-1, self.vocab).shape[0])
        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *_):
        self.handle.remove()


def test_edit_diagnostic_runs_the_head_in_chunks(tmp_path, base, filter_dir, monkeypatch):
    """Stage 04's edit diagnostic (built on the reference, then measured in training) never makes
    the [N, V] logits of all its pairs: at most `train.logits_chunk_tokens` rows at a time."""
    from spotlib.stages import train_methods as T
    from transformers import AutoConfig

    chunk = 4
    profile = _profile(base, filter_dir, edit_diag_pairs=4, logits_chunk_tokens=chunk, kl_probe_every=1,
                       max_steps=1, per_device_batch=2, grad_accum=1)
    from spotlib.train import probes
    vocab = AutoConfig.from_pretrained(base).vocab_size
    head = _HeadRows(vocab)
    measured = probes._token_logps

    def diag_pass(*args):  # only the diagnostic's passes are measured (training has its own chunks)
        with head:
            return measured(*args)

    monkeypatch.setattr(probes, "_token_logps", diag_pass)
    inputs = T.shared_inputs(profile, T.plan_stage(profile))["spot_bco"]
    assert inputs.diag is not None and len(inputs.diag.ref_rejected_tokens) > 4 * chunk
    train_run(profile.train, profile.model, parse_run("spot_bco"), 0, inputs, tmp_path / "run", steps=1,
              device="cpu", progress=False)
    assert 0 < head.most <= chunk
    records = [r for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"probe"' in r]
    assert records and '"edit/at"' in records[0]


def _live_tensor_bytes() -> int:
    """Bytes of every tensor the garbage collector still tracks (reachable or in uncollected cycles)."""
    seen, total = set(), 0
    for obj in gc.get_objects():
        if type(obj) in (torch.Tensor, torch.nn.Parameter):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def test_runs_in_one_process_do_not_keep_each_others_memory(tmp_path, base, filter_dir, monkeypatch):
    """After each of several runs in one process (as stage 04 trains every method), the tensors
    still alive do not grow with the number of runs: nothing waits for a chance collection.

    ZeRO's parameters point back at their module (reference cycles, which plain reference
    counting never frees); the model here gets the same cycles, so a run left to a chance
    collection shows as growth on the CPU too."""
    from spotlib.train import trainer

    loaded = trainer.load_model

    def load_with_cycles(*args, **kwargs):
        model = loaded(*args, **kwargs)
        for param in model.parameters():
            param.owner = model
        return model

    monkeypatch.setattr(trainer, "load_model", load_with_cycles)
    profile = _profile(base, filter_dir, max_steps=1, per_device_batch=2, grad_accum=1)
    run = parse_run("spot_bco")
    inputs = _inputs(profile, run, base, filter_dir)
    gc.collect()
    before = _live_tensor_bytes()   # what the process holds anyway (the library's own caches)
    held = []
    gc.disable()  # as when the cyclic collector happens not to run between two runs
    try:
        for k in range(3):
            train_run(profile.train, profile.model, run, k, inputs, tmp_path / f"run{k}", steps=1, device="cpu",
                      progress=False)
            held.append(_live_tensor_bytes())
    finally:
        gc.enable()
    model_bytes = sum(p.numel() * p.element_size() for p in loaded(str(base), "float32").parameters())
    assert held[0] - before < model_bytes and held[2] <= held[0] * 1.02, (before, held, model_bytes)


def _dapo_profile(tmp_path, rows: int, **overrides):
    import json
    path = tmp_path / "dapo.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {i}+1?", "solution": str(i + 1),
                                        "extra_info": {"index": i}}) + "\n" for i in range(rows)))
    values = {"output_dir": str(tmp_path / "out"), "sample.dataset": "open-r1/DAPO-Math-17k-Processed",
              "sample.data_files": str(path)}
    values.update(overrides)
    return load_profile("test", overrides=values)


def test_grpo_heldout_problems_are_outside_every_row_the_start_models_saw(tmp_path):
    """Stage 01 samples `sample.num_problems` rows (stages 03 and 04 train on what it keeps);
    GRPO's held-out problems are none of them."""
    from spotlib.stages.sample import load_train_problems
    from spotlib.stages.rl_init import rl_problems

    profile = _dapo_profile(tmp_path, 30, **{"sample.num_problems": 20, "rl.num_prompts": 12,
                                             "rl.heldout_items": 6})
    stage01 = {r["id"] for r in load_train_problems(profile)}
    train, heldout = rl_problems(profile)
    assert len(stage01) == 20 and len(heldout) == 6 and len(train) == 12
    assert not stage01 & {r["id"] for r in heldout}
    assert {r["id"] for r in train} <= stage01  # GRPO trains on prompts of the same data
    with pytest.raises(ValueError, match="lower sample.num_problems to 18"):
        rl_problems(_dapo_profile(tmp_path, 24, **{"sample.num_problems": 20, "rl.num_prompts": 12,
                                                   "rl.heldout_items": 6}))
    paper = load_profile("paper")
    assert paper.sample.num_problems + paper.rl.heldout_items == 17398  # the dataset's rows, all used once


def test_the_rehearsal_writes_the_heldout_rows_after_stage_01s(tmp_path):
    from spotlib.plan.rehearsal import train_rows

    profile = load_profile("rehearsal", overrides={"output_dir": str(tmp_path / "out")})
    assert train_rows(profile) == profile.sample.num_problems + profile.rl.heldout_items


class _CutRollouts:
    """Short texts the engine says it cut at its token budget (vLLM: finish_reason "length"):
    re-tokenised, each is far shorter than `max_new_tokens`."""

    def __init__(self):
        self.finish_reasons = []

    def sample(self, policy, tokenizer, prompts, *, n, **_):
        out = [["ab"] * n for _ in prompts]
        self.finish_reasons = [["length"] * n for _ in prompts]
        return out

    def release(self):
        pass


def test_grpo_takes_truncation_from_the_engines_finish_reason(tmp_path):
    from rl_helpers import micro_model, says_a, toy_items
    from spotlib.config import RLConfig
    from spotlib.rl.grpo import train_grpo

    cfg = RLConfig(num_prompts=2, rollouts_per_prompt=2, prompts_per_step=2, mini_batch=2, max_new_tokens=8,
                   max_steps=1, eval_every=5, micro_batch=4, bf16_autocast=False, save_every=0, heldout_items=0)
    out = train_grpo(micro_model(tmp_path / "init"), tmp_path / "run", toy_items(2), says_a, cfg, device="cpu",
                     max_len=32, progress=False, engine=_CutRollouts())
    assert out["metrics"][0]["truncated_frac"] == 1.0


def test_generation_reports_length_where_no_eos_was_written():
    """The transformers path's finish reasons come from the sampled tokens, not from the text."""
    from spotlib.engines.rows import generate_rows

    class Tok:
        eos_token_id, pad_token_id, padding_side = 9, 0, "right"

        def __call__(self, texts, **_):
            if isinstance(texts, str):
                return {"input_ids": [1] * len(texts)}
            return _Batch({"input_ids": torch.ones(len(texts), 2, dtype=torch.long),
                           "attention_mask": torch.ones(len(texts), 2, dtype=torch.long)})

        def batch_decode(self, rows, **_):
            return ["x" for _ in rows]  # one character however many tokens: text says nothing

    class _Batch(dict):
        def to(self, _):
            return self

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, input_ids, **_):  # row 0 writes eos, row 1 is cut at 3 new tokens
            new = torch.tensor([[5, 9, 0], [5, 6, 7]])
            return torch.cat([input_ids, new], dim=1)

    texts, reasons = generate_rows(Model(), Tok(), ["p", "q"], [1, 2], temperature=0.0, top_p=1.0, top_k=-1,
                                   max_new_tokens=3, batch_size=2, with_finish_reasons=True)
    assert texts == ["x", "x"] and reasons == ["stop", "length"]


def test_only_the_main_rank_builds_the_full_state_dict():
    from spotlib.train.trainer import saved_state_dict

    class Plugin:
        zero_stage = 2

    class Acc:
        def __init__(self, main, stage):
            self.is_main_process, self.calls = main, 0
            Plugin.zero_stage = stage
            self.state = type("S", (), {"deepspeed_plugin": Plugin()})()

        def get_state_dict(self, model):
            self.calls += 1
            return {"w": torch.zeros(1)}

    other, main = Acc(False, 2), Acc(True, 2)
    assert saved_state_dict(other, None) is None and other.calls == 0  # ZeRO-2: no host copy on other ranks
    assert saved_state_dict(main, None) is not None and main.calls == 1
    gathered = Acc(False, 3)
    assert saved_state_dict(gathered, None) is None and gathered.calls == 1  # ZeRO-3 gathers: every rank joins


def test_paper_stage_04_checkpoints_mid_run():
    from spotlib.train.trainer import num_steps

    paper = load_profile("paper")
    steps = num_steps(paper.train, paper.filter.max_examples, paper.train.per_device_batch * paper.train.grad_accum * 8)
    assert 0 < paper.train.save_every < steps


@pytest.mark.slow
def test_stage_04_stopped_mid_run_resumes_to_the_uninterrupted_weights(tmp_path, base, filter_dir, monkeypatch):
    """Stage 04 stopped after step 3 of 6 (checkpoint at 2) and started again ends with the
    weights of a stage that was never stopped."""
    import shutil

    from safetensors.torch import load_file
    from spotlib.stages import train_methods as T

    def stage(out, stop_after=None):
        shutil.copytree(filter_dir, out / "03_filter", dirs_exist_ok=True)
        profile = load_profile("test", overrides={
            "output_dir": str(out), "model.name_or_path": str(base), "train.methods": ["spot_bco"],
            "train.ablations": [], "train.max_steps": 6, "train.save_every": 2, "train.kl_probe_every": 0,
            "train.edit_diag_pairs": 0, "train.per_device_batch": 2, "train.grad_accum": 1,
            "train.lr": {"default": 1e-3}, "train.cpu_workers": 1})
        if stop_after is None:
            return T.run(profile, progress=False)
        real = T.train_run

        def stopped(*args, **kwargs):
            real(*args, stop_after=stop_after, **kwargs)
            raise KeyboardInterrupt  # the stage is stopped here, as by Ctrl-C or a lost node

        monkeypatch.setattr(T, "train_run", stopped)
        with pytest.raises(KeyboardInterrupt):
            T.run(profile, progress=False)
        monkeypatch.setattr(T, "train_run", real)

    stage(tmp_path / "whole")
    stage(tmp_path / "stopped", stop_after=3)
    run_dir = tmp_path / "stopped" / T.STAGE / "spot_bco" / "seed0"
    assert (run_dir / "checkpoint-2").is_dir() and not (run_dir / "summary.json").exists()
    stage(tmp_path / "stopped")
    a = load_file(tmp_path / "whole" / T.STAGE / "spot_bco" / "seed0" / "model.safetensors")
    b = load_file(run_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_the_state_dict_rule_reads_the_stage_of_a_deepspeed_engine_built_without_accelerate():
    """`deepspeed_run.DeepSpeedAccelerator` (the engine the paper and the rehearsal train with) has no
    accelerate state: its own `zero_stage()` decides."""
    from spotlib.train.trainer import saved_state_dict

    class Engine:
        def __init__(self, main, stage):
            self.is_main_process, self.stage, self.calls = main, stage, 0

        def zero_stage(self):
            return self.stage

        def get_state_dict(self, model):
            self.calls += 1
            return {"w": torch.zeros(1)}

    other = Engine(False, 2)
    assert saved_state_dict(other, None) is None and other.calls == 0
    assert saved_state_dict(Engine(True, 2), None) is not None
    gathered = Engine(False, 3)
    assert saved_state_dict(gathered, None) is None and gathered.calls == 1
