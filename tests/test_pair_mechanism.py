"""Taking the pair objectives apart: the edit mask of y⁻, +edit_only / +rejected_only / +chosen_only."""
import copy
import random

import pytest
import torch
import torch.nn.functional as F

from pairs_helpers import change_one_result
from spotlib import losses as L
from spotlib import world
from spotlib.config import load_profile
from spotlib.io import write_jsonl
from spotlib.train import data as D
from spotlib.train.logps import CompletionLogpsModel, reference_sums
from spotlib.train.runspec import parse_run
from spotlib.train.trainer import RunInputs, _micro_step
from spotlib.world.pretrain import build_model
from spotlib.world.tokenizer import build_tokenizer


@pytest.mark.parametrize("rejected, chosen, mask", [
    ([1, 2, 3, 4, 5], [1, 2, 9, 4, 5], [0, 0, 1, 0, 0]),        # one token replaced
    ([1, 2, 3, 4, 5], [1, 2, 4, 5], [0, 0, 1, 0, 0]),           # y⁻ has a token too many
    ([1, 2, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0]),              # y⁺ inserts: nothing of y⁻ is edited
    ([1, 7, 8, 3, 5, 6], [1, 3, 7, 5, 6], [0, 1, 1, 0, 0, 0]),  # two LCSs of length 4: the later match kept
    ([4, 4, 4], [4, 4], [0, 0, 1]),                            # the common prefix is kept
    ([5, 6], [7, 8], [1, 1]),
    ([], [1], []),
    ([1, 2, 3], [1, 2, 3], [0, 0, 0]),
    ([9, 1, 2, 3, 8, 4, 5, 9], [1, 2, 3, 7, 4, 5], [1, 0, 0, 0, 1, 0, 0, 1]),
])
def test_edit_mask_is_the_lcs_complement(rejected, chosen, mask):
    assert D.edit_mask(rejected, chosen) == mask
    kept = [t for t, m in zip(rejected, mask) if not m]
    it = iter(chosen)
    assert all(t in it for t in kept)  # what stays is a common subsequence...
    lengths = [[0] * (len(chosen) + 1) for _ in range(len(rejected) + 1)]
    for i, a in enumerate(rejected):
        for j, b in enumerate(chosen):
            lengths[i + 1][j + 1] = lengths[i][j] + 1 if a == b else max(lengths[i][j + 1], lengths[i + 1][j])
    assert len(kept) == lengths[-1][-1]  # ...and a longest one


def test_run_options_parse_name_and_refuse_nonsense():
    run = parse_run("spot_bco@direct+rejected_only+edit_only")
    assert run.name == "spot_bco@direct+edit_only+rejected_only"
    assert (run.rejected_scope, run.gradient) == ("edit", "rejected")
    assert parse_run("dpo+chosen_only").gradient == "chosen" and parse_run("dpo").options == ()
    for bad, match in [("sft_plus+edit_only", "pair objectives only"), ("spot_bce+edit", "unknown option"),
                       ("dpo+chosen_only+edit_only", "combines with no other"), ("dpo+edit_only+edit_only", "twice")]:
        with pytest.raises(ValueError, match=match):
            parse_run(bad)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro reference model, a policy that differs from it, and pairs written as stage 03 does."""
    torch.set_num_threads(1)
    profile = load_profile("test")
    tokenizer = build_tokenizer(profile.world)
    ref = build_model(profile.world, tokenizer).eval()
    policy = copy.deepcopy(ref)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    rng = random.Random(0)
    pairs = []
    for it in world.make_items("arith", 4, "train", world_cfg=profile.world):
        good = world.student_solution(it, rng)
        pairs.append({"id": it["id"], "prompt": it["prompt"], "chosen": good, "rejected": change_one_result(good, rng)})
    filter_dir = tmp_path_factory.mktemp("out") / "03_filter"
    write_jsonl(filter_dir / "pairs.jsonl", pairs)
    write_jsonl(filter_dir / "sft_plus.jsonl", pairs)  # Reward-SFT's data: the same y⁺
    return profile, tokenizer, ref, policy, filter_dir


def _inputs(micro, spec):
    profile, tokenizer, ref, _, filter_dir = micro
    run = parse_run(spec)
    examples = D.load_examples(filter_dir, run)
    data = D.prepare(tokenizer, examples, 384, 128, with_rejected=run.info.pairs, completion_format="clean")
    cpu = torch.device("cpu")
    ref_c = reference_sums(ref, data.chosen, tokenizer.pad_token_id, cpu)[0]
    ref_r = reference_sums(ref, data.rejected, tokenizer.pad_token_id, cpu)[0] if run.info.pairs else None
    return run, RunInputs(data, ref_c, ref_r, "unused"), examples


def _token_logps(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[<t]) for t ≥ 1 from a plain full forward (no completion machinery)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return F.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)


def _masked_sum(model, tok, i, mask):
    """Σ over completion tokens kept by `mask` (one 0/1 per completion token)."""
    logps = _token_logps(model, tok.ids[i])[tok.prompt_lens[i] - 1:]
    return float((logps * torch.tensor(mask, dtype=torch.float32)).sum())


def test_edit_only_examples_are_keyed_apart_and_mask_the_rejected(micro):
    _, plain_inputs, plain = _inputs(micro, "spot_bco")
    run, inputs, examples = _inputs(micro, "spot_bco+edit_only")
    assert all(e["rejected_scope"] == "edit" for e in examples) and "rejected_scope" not in plain[0]
    assert D.examples_hash(examples) != D.examples_hash(plain)  # reference caches never mix
    rej, cho = inputs.data.rejected, inputs.data.chosen
    assert plain_inputs.data.rejected.score_masks is None and inputs.data.chosen.score_masks is None
    for i in range(len(rej)):
        mask = rej.score_masks[i]
        assert mask == D.edit_mask(D.completion_ids(rej, i), D.completion_ids(cho, i))
        assert 0 < sum(mask) < len(mask)  # a changed number: some tokens edited, most shared
    batch = D.collate(rej, [1, 0], pad_id=0)
    assert batch["completion_mask"][0].sum() == sum(rej.score_masks[1])
    assert torch.all(inputs.ref_rejected != plain_inputs.ref_rejected)


@pytest.mark.parametrize("spec", ["spot_bco+edit_only", "spot_bce+edit_only", "dpo+edit_only"])
def test_masked_loss_equals_the_hand_computed_one(micro, spec):
    profile, tokenizer, ref, policy, _ = micro
    run, inputs, _ = _inputs(micro, spec)
    rows = [2, 0, 3]
    beta = profile.train.beta
    delta = L.DeltaTracker(run.delta_mode if run.objective == "bco" else "none")
    out = _micro_step(CompletionLogpsModel(policy), None, run, profile.train, inputs, rows, tokenizer.pad_token_id,
                      torch.device("cpu"), False, delta)
    rej, cho = inputs.data.rejected, inputs.data.chosen
    r_pos, r_neg, r_neg_all = [], [], []
    for i in rows:
        full_c = [1] * len(D.completion_ids(cho, i))
        r_pos.append(beta * (_masked_sum(policy, cho, i, full_c) - _masked_sum(ref, cho, i, full_c)))
        mask = D.edit_mask(D.completion_ids(rej, i), D.completion_ids(cho, i))
        r_neg.append(beta * (_masked_sum(policy, rej, i, mask) - _masked_sum(ref, rej, i, mask)))
        full = [1] * len(mask)
        r_neg_all.append(beta * (_masked_sum(policy, rej, i, full) - _masked_sum(ref, rej, i, full)))
    r_pos, r_neg, r_neg_all = map(torch.tensor, (r_pos, r_neg, r_neg_all))
    sig = torch.nn.functional.logsigmoid
    if run.objective == "dpo":
        expected = -sig(r_pos - r_neg).mean()
        unmasked = -sig(r_pos - r_neg_all).mean()
    else:
        d = float(torch.cat([r_pos, r_neg]).mean()) if run.objective == "bco" else 0.0
        expected = (-sig(r_pos - d) - sig(-(r_neg - d))).mean()
        d_all = float(torch.cat([r_pos, r_neg_all]).mean()) if run.objective == "bco" else 0.0
        unmasked = (-sig(r_pos - d_all) - sig(-(r_neg_all - d_all))).mean()
    assert float(out["loss"].detach()) == pytest.approx(float(expected), abs=1e-5)
    assert out["rr"] == pytest.approx(float(r_neg.sum()), abs=1e-5)
    assert abs(float(expected) - float(unmasked)) > 1e-4  # the mask changes the loss


def _grads(micro, spec):
    profile, tokenizer, _, policy, _ = micro
    run, inputs, _ = _inputs(micro, spec)
    model = copy.deepcopy(policy)
    delta = L.DeltaTracker(run.delta_mode if run.objective == "bco" else "none")
    out = _micro_step(CompletionLogpsModel(model), None, run, profile.train, inputs, [0, 1, 2, 3],
                      tokenizer.pad_token_id, torch.device("cpu"), False, delta)
    out["loss"].backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]), out


def test_one_sided_variants_split_the_gradient(micro):
    both, out_both = _grads(micro, "spot_bce")
    chosen, out_c = _grads(micro, "spot_bce+chosen_only")
    rejected, out_r = _grads(micro, "spot_bce+rejected_only")
    reward_sft, _ = _grads(micro, "reward_sft")  # y⁺ of the same pairs (sft_plus data = pairs' y⁺ here)
    assert float(out_c["loss"].detach()) == pytest.approx(float(out_both["loss"].detach()))  # same loss, other gradient
    assert torch.allclose(chosen + rejected, both, atol=1e-6)
    assert torch.allclose(chosen, reward_sft, atol=1e-6)  # chosen term only = Reward-SFT
    assert not torch.allclose(rejected, torch.zeros_like(rejected))
    assert out_c["wr"] == 0.0 and out_r["wc"] == 0.0 and out_both["wc"] > 0 and out_both["wr"] > 0


def test_chosen_edit_regions_split_y_plus_at_the_same_edit():
    from spotlib.train.probes import chosen_edit_regions, first_edit_regions, first_edit_span

    neg, pos = [1, 2, 3, 4, 5], [1, 2, 9, 8, 4, 5]
    assert first_edit_span(neg, pos) == (2, 3, 2, 4)
    assert first_edit_regions(neg, pos) == [0, 0, 1, 2, 2]
    assert chosen_edit_regions(neg, pos) == [0, 0, 1, 1, 2, 2]
    assert chosen_edit_regions([1, 2, 7, 3], [1, 2, 3]) == [0, 0, 2]  # y⁺ deletes: nothing of it is "at"
    assert chosen_edit_regions([1, 2], [1, 2]) == [0, 0]


def test_edit_diagnostic_reports_both_sides_and_the_first_edit_token(micro):
    from spotlib.train.probes import build_edit_diag, edit_diagnostic, first_edit_span

    profile, tokenizer, ref, policy, _ = micro
    _, inputs, _ = _inputs(micro, "spot_bco")
    cho, rej = inputs.data.chosen, inputs.data.rejected
    cpu = torch.device("cpu")
    diag = build_edit_diag(ref, cho, rej, tokenizer.pad_token_id, cpu, autocast=False)
    at_start = edit_diagnostic(ref, diag, tokenizer.pad_token_id, cpu, beta=0.1, autocast=False)
    for key in ("edit/at", "edit/chosen_before", "edit/chosen_at", "edit/chosen_after"):
        assert at_start[key] == pytest.approx(0.0, abs=1e-6), key
    assert at_start["edit/p_correct"] == pytest.approx(at_start["edit/p_correct_ref"])
    moved = edit_diagnostic(policy, diag, tokenizer.pad_token_id, cpu, beta=0.1, autocast=False)
    p_correct, p_wrong, chosen_at = [], [], []
    for i in range(len(cho)):
        neg, pos = D.completion_ids(rej, i), D.completion_ids(cho, i)
        i1, _, j1, j2 = first_edit_span(neg, pos)
        assert rej.ids[i][:rej.prompt_lens[i] + i1] == cho.ids[i][:cho.prompt_lens[i] + j1]  # one shared context
        now, before = (_token_logps(m, cho.ids[i])[cho.prompt_lens[i] - 1:] for m in (policy, ref))
        p_correct.append(float(now[j1].exp()))
        chosen_at += (now[j1:j2] - before[j1:j2]).tolist()
        p_wrong.append(float(_token_logps(policy, rej.ids[i])[rej.prompt_lens[i] - 1 + i1].exp()))
    assert moved["edit/p_correct"] == pytest.approx(sum(p_correct) / len(p_correct), rel=1e-4)
    assert moved["edit/p_wrong"] == pytest.approx(sum(p_wrong) / len(p_wrong), rel=1e-4)
    assert moved["edit/chosen_at"] == pytest.approx(sum(chosen_at) / len(chosen_at), abs=1e-4)
    assert all(c + w <= 1 + 1e-6 for c, w in zip(p_correct, p_wrong))  # two tokens of one distribution
