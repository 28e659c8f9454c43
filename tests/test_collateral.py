"""The collateral probe on a hand-made model whose push is known: one token's logit lowered by c everywhere."""
import dataclasses
import math

import pytest
import torch

from spotlib.config import load_profile
from spotlib.train.collateral import build_collateral_set, collateral_probe, pushed_token_ids
from spotlib.train.data import Tokenized

C = 1.5


@pytest.fixture(scope="module")
def model_and_tokenizer(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spotlib.world.pretrain import save_untrained
    path = tmp_path_factory.mktemp("untied")
    save_untrained(dataclasses.replace(load_profile("test").world, tie_word_embeddings=False), path)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _pushed_down(model, token: int, c: float):
    """A copy of `model` whose LM head adds −c to one token's logit at every position."""
    import copy
    pushed = copy.deepcopy(model)
    old = pushed.lm_head
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        head.bias[token] = -c
    pushed.lm_head = head
    return pushed


def _tok(tokenizer, prompt, completion):
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    return p + c, len(p)


def test_pushed_tokens_are_those_of_the_first_edited_span(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    rows = [_tok(tokenizer, "Q: ", t) for t in ("12 + 30 = 47", "12 + 30 = 42")]
    rejected, chosen = (Tokenized([ids], [start]) for ids, start in rows)
    assert pushed_token_ids(rejected, chosen) == tokenizer("7", add_special_tokens=False)["input_ids"]


def test_the_probe_reads_the_known_change_of_the_pushed_token_and_of_the_others(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    digit = tokenizer("2", add_special_tokens=False)["input_ids"][0]
    seqs = [_tok(tokenizer, "Compute 12 + 30.", " 12 + 30 = 42\nThe answer is 42."),
            _tok(tokenizer, "Compute 22 - 10.", " 22 - 10 = 12")]
    tok = Tokenized([s for s, _ in seqs], [n for _, n in seqs])
    cset = build_collateral_set(model, tok, [digit], tokenizer.pad_token_id, "cpu", autocast=False)
    targets = [t for ids, n in zip(tok.ids, tok.prompt_lens) for t in ids[n:]]
    assert int(cset.pushed.sum()) == targets.count(digit) > 0
    result = collateral_probe(_pushed_down(model, digit, C), cset, tokenizer.pad_token_id, "cpu", autocast=False)
    # exactly: with p the start model's probability of the pushed token at a position,
    # Δlog π(pushed) = −c − log(1 − p(1 − e^−c)); Δlog π(other) = −log(1 − p(1 − e^−c))
    with torch.no_grad():
        logits = model(torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in tok.ids], batch_first=True)).logits
    p_pushed = []
    for row, (ids, n) in enumerate(zip(tok.ids, tok.prompt_lens)):
        probs = logits[row, n - 1:len(ids) - 1].softmax(-1)[:, digit]
        p_pushed += probs.tolist()
    shift = [-math.log(1 - p * (1 - math.exp(-C))) for p in p_pushed]
    is_pushed = [t == digit for t in targets]
    want_pushed = sum(-C + s for s, k in zip(shift, is_pushed) if k) / sum(is_pushed)
    want_other = sum(s for s, k in zip(shift, is_pushed) if not k) / (len(targets) - sum(is_pushed))
    assert result["collateral/pushed"] == pytest.approx(want_pushed, abs=1e-4)
    assert result["collateral/other"] == pytest.approx(want_other, abs=1e-4)
    assert result["collateral/pushed"] < -1.0 < 0 < result["collateral/other"]
    assert result["collateral/p_pushed"] < result["collateral/p_pushed_ref"]
    # the start model itself: no change anywhere
    same = collateral_probe(model, cset, tokenizer.pad_token_id, "cpu", autocast=False)
    assert same["collateral/pushed"] == pytest.approx(0.0, abs=1e-6) and same["collateral/other"] == pytest.approx(0.0, abs=1e-6)


def test_edit_diagnostic_carries_the_collateral_probe(model_and_tokenizer):
    from spotlib.train.probes import build_edit_diag, edit_diagnostic

    model, tokenizer = model_and_tokenizer
    rows = [_tok(tokenizer, "Q: ", t) for t in ("12 + 30 = 47", "12 + 30 = 42")]
    rejected, chosen = (Tokenized([ids], [start]) for ids, start in rows)
    diag = build_edit_diag(model, chosen, rejected, tokenizer.pad_token_id, "cpu", autocast=False)
    assert "collateral/pushed" not in edit_diagnostic(model, diag, tokenizer.pad_token_id, "cpu", beta=0.1,
                                                      autocast=False)
    seven = pushed_token_ids(rejected, chosen)
    ids, start = _tok(tokenizer, "Compute 40 + 7.", " 40 + 7 = 47")
    held = Tokenized([ids], [start])
    diag.collateral = build_collateral_set(model, held, seven, tokenizer.pad_token_id, "cpu", autocast=False)
    out = edit_diagnostic(_pushed_down(model, seven[0], C), diag, tokenizer.pad_token_id, "cpu", beta=0.1,
                          autocast=False)
    assert out["collateral/pushed"] < -1.0 and out["collateral/n_pushed"] == 2
