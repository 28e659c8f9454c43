"""Padding-free micro-batches (spotlib.train.packing): a packed row gives the padded batch's
log-prob sums, losses, rewards, δ and gradients (fp32) for every objective; a micro-step reads
nothing from the device."""
import copy
import dataclasses
import types

import pytest
import torch

from spotlib import losses as L
from spotlib.train import packing as P
from spotlib.train.data import Tokenized, TrainData
from spotlib.train.logps import CompletionLogpsModel, completion_logps
from spotlib.train.runspec import parse_run
from spotlib.train.trainer import RunInputs, _micro_step

VOCAB = 97


def micro_qwen3(seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                         tie_word_embeddings=True, use_cache=False)
    return Qwen3ForCausalLM(config).float()


def tokenized(lengths, prompt_lens, seed, score_masks=None) -> Tokenized:
    g = torch.Generator().manual_seed(seed)
    return Tokenized([torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths], list(prompt_lens),
                     score_masks)


@pytest.fixture(scope="module")
def pairs():
    """Five pairs of unequal lengths (y⁻ longer or shorter than y⁺), y⁻ scored on a mask."""
    chosen = tokenized([12, 20, 7, 16, 9], [4, 6, 3, 5, 2], seed=1)
    rej_lens, rej_prompts = [15, 11, 9, 16, 21], [4, 6, 3, 5, 2]
    masks = [[(i + t) % 3 != 0 for t in range(n - p)] for i, (n, p) in enumerate(zip(rej_lens, rej_prompts))]
    rejected = tokenized(rej_lens, rej_prompts, seed=2, score_masks=[[int(m) for m in row] for row in masks])
    data = TrainData([{}] * 5, chosen, rejected)
    return data, torch.randn(5, generator=torch.Generator().manual_seed(3)) - 30.0, \
        torch.randn(5, generator=torch.Generator().manual_seed(4)) - 30.0


def test_packed_layout_has_no_padding_and_restarts_positions(pairs):
    data, _, _ = pairs
    parts = [(data.chosen, [1, 3]), (data.rejected, [1, 3])]
    padded, packed = P.padded_layout(parts, 0), P.packed_layout(parts, 0)
    assert packed.input_ids.shape == (1, 20 + 16 + 11 + 16)
    assert packed.segments == (20, 16, 11, 16)
    assert packed.tokens_real == packed.tokens_computed == padded.tokens_real == 63
    assert padded.tokens_computed == 4 * 20
    assert packed.position_ids[0, :22].tolist() == list(range(20)) + [0, 1]
    torch.testing.assert_close(packed.counts, padded.counts)
    assert packed.counts.tolist() == [14, 11, sum(data.rejected.score_masks[1]), sum(data.rejected.score_masks[3])]
    assert torch.equal(packed.targets, padded.targets) and torch.equal(packed.rows, padded.rows)


def test_packing_refuses_a_sequence_without_prompt():
    with pytest.raises(ValueError, match="no prompt token"):
        P.packed_layout([(tokenized([5], [0], seed=0), [0])], 0)


def test_packed_batch_needs_attention_by_segments(pairs):
    data, _, _ = pairs
    with pytest.raises(ValueError, match="use_varlen"):
        completion_logps(micro_qwen3(0), P.packed_layout([(data.chosen, [0, 1])], 0))


def _step(lm, ref, spec, packing, data, ref_c, ref_r, rows_per_step, chunk=5):
    """Micro-steps of `spec` (one per entry of rows_per_step); the losses, metrics, δ after each
    and the summed gradient."""
    run = parse_run(spec)
    lm = copy.deepcopy(lm)
    if spec == "dpo":  # recomputation in backward sees the same segments
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.train()
    if packing:
        P.use_varlen(lm)
        if ref is not None:
            ref = copy.deepcopy(ref)
            P.use_varlen(ref)
    cfg = types.SimpleNamespace(beta=0.1, kl_coef=0.5, logits_chunk_tokens=chunk, packing=packing)
    inputs = RunInputs(data, ref_c, ref_r if run.info.pairs else None, "")
    delta = L.DeltaTracker(run.delta_mode if run.objective == "bco" else "none")
    outs = []
    for rows in rows_per_step:
        out = _micro_step(CompletionLogpsModel(lm), ref, run, cfg, inputs, rows, 0, torch.device("cpu"), False, delta)
        out["loss"].backward()
        delta.settle()
        outs.append({k: (float(v.detach()) if isinstance(v, torch.Tensor) else v) for k, v in out.items()} | {"delta": delta.value})
    return outs, torch.cat([p.grad.reshape(-1) for p in lm.parameters()])


@pytest.mark.parametrize("spec", ["sft", "dpo", "spot_bco", "kl_sft"])
def test_packed_equals_padded(pairs, spec):
    data, ref_c, ref_r = pairs
    lm = micro_qwen3(0)
    ref = None
    if spec == "kl_sft":
        ref = micro_qwen3(0).eval().requires_grad_(False)
        with torch.no_grad():  # a reference that differs from the policy
            for p in ref.parameters():
                p.add_(0.05 * torch.randn_like(p))
    steps = [[4, 0, 2], [1, 3]]   # two micro-steps: δ carries from one to the next
    padded, g_padded = _step(lm, ref, spec, False, data, ref_c, ref_r, steps)
    packed, g_packed = _step(lm, ref, spec, True, data, ref_c, ref_r, steps)
    for a, b in zip(padded, packed):
        assert a["tokens"] == b["tokens"] == b["tokens_computed"]
        assert a["tokens_computed"] > a["tokens"]  # the padded batch ran padding
        for key in ("loss", "rc", "rr", "acc", "wc", "wr", "lc", "lr_", "delta"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-5), key
    if spec == "spot_bco":
        assert padded[1]["delta"] != 0.0
    assert float(g_padded.abs().max()) > 0
    torch.testing.assert_close(g_packed, g_padded, rtol=1e-4, atol=1e-6)


def test_micro_step_reads_nothing_from_the_device(pairs):
    """On the meta device any read of a value (item, float, a boolean-mask index, nonzero)
    raises: a packed micro-step and its backward run there whole. (A padded batch reads the
    device once, in transformers' mask building.)"""
    data, ref_c, ref_r = pairs
    for packing in (True,):
        lm = micro_qwen3(0)
        P.use_varlen(lm)
        lm = lm.to("meta")
        run = parse_run("spot_bco")
        cfg = types.SimpleNamespace(beta=0.1, kl_coef=0.5, logits_chunk_tokens=4, packing=packing)
        delta = L.DeltaTracker("running_mean")
        inputs = RunInputs(data, ref_c, ref_r, "")
        for rows in ([0, 1, 2], [3, 4]):
            out = _micro_step(CompletionLogpsModel(lm), None, run, cfg, inputs, rows, 0, torch.device("meta"),
                              False, delta)
            out["loss"].backward()
            assert all(v.device.type == "meta" for k, v in out.items() if isinstance(v, torch.Tensor))
        assert delta._pending is not None and delta._pending.device.type == "meta"


def test_delta_on_device_equals_the_float_update():
    rng = torch.Generator().manual_seed(0)
    batches = [(torch.randn(3, generator=rng), torch.randn(3, generator=rng)) for _ in range(4)]
    for mode in ("running_mean", "ema"):
        floats, device = L.DeltaTracker(mode, decay=0.9), L.DeltaTracker(mode, decay=0.9)
        for c, r in batches:
            want = floats.update(c, r)
            got = device.update_on_device(c, r)
            assert float(got) == pytest.approx(want, rel=1e-6)
        device.settle()
        assert device.value == floats.value and device.count == floats.count   # the same float arithmetic
        assert device.state_dict() == floats.state_dict()


def test_varlen_attention_without_segments_is_sdpa():
    lm = micro_qwen3(0)
    ids = torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(5))
    want = lm(input_ids=ids).logits
    P.use_varlen(lm)
    torch.testing.assert_close(lm(input_ids=ids).logits, want)


@pytest.mark.slow
def test_train_run_packed_matches_padded_and_records_tokens(tmp_path):
    """Stage 04's trainer, spot_bco on world pairs, packed against padded: the same losses,
    rewards and δ step by step; the summary counts the data's tokens and the positions run;
    packing is in the run key (a packed run never passes for a padded one) and the saved
    model's config names no custom attention."""
    import json
    import random

    from pairs_helpers import change_one_result, save_untrained_student
    from spotlib import world
    from spotlib.config import load_profile
    from spotlib.train import data as D
    from spotlib.train.logps import reference_sums
    from spotlib.train.trainer import run_key, train_run

    torch.set_num_threads(1)
    profile = load_profile("test", overrides={"train.max_steps": 3, "train.per_device_batch": 3, "train.grad_accum": 2,
                                              "train.kl_probe_every": 0, "train.lr": {"default": 1e-3}})
    base = tmp_path / "base"
    save_untrained_student(base, profile.world)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(base)
    rng = random.Random(0)
    examples = []
    for it in world.make_items("arith", 12, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        examples.append({"id": it["id"], "prompt": it["prompt"], "chosen": good, "rejected": change_one_result(good, rng)})
    t = profile.train
    data = D.prepare(tok, examples, t.max_len, t.max_prompt_len, True, completion_format=t.completion_format)
    ref = AutoModelForCausalLM.from_pretrained(base).eval()
    rc = reference_sums(ref, data.chosen, tok.pad_token_id, torch.device("cpu"))[0]
    rr = reference_sums(ref, data.rejected, tok.pad_token_id, torch.device("cpu"))[0]
    inputs = RunInputs(data, rc, rr, str(base), data_key="k")
    run = parse_run("spot_bco")
    records, summaries = {}, {}
    for packing in (False, True):
        cfg = dataclasses.replace(t, packing=packing)
        run_dir = tmp_path / f"run-{packing}"
        summaries[packing] = train_run(cfg, profile.model, run, 0, inputs, run_dir, steps=3, device="cpu",
                                       progress=False)
        records[packing] = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()
                            if json.loads(x)["kind"] == "train"]
        assert "spot_varlen" not in (run_dir / "config.json").read_text()
    for a, b in zip(records[False], records[True]):
        for key in ("loss", "rewards/chosen", "rewards/rejected", "delta", "logps/chosen"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    padded, packed = summaries[False], summaries[True]
    assert packed["tokens_real"] == packed["tokens_computed"] == padded["tokens_real"] < padded["tokens_computed"]
    assert records[False][-1]["delta"] != 0.0
    keys = {p: run_key(dataclasses.replace(t, packing=p), profile.model, run, 0, inputs, 3) for p in (False, True)}
    assert keys[False] != keys[True]
