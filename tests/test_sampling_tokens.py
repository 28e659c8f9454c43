import pytest
import torch

from spotlib.models import chat_prompt
from spotlib.engines.sampling import generate
from spotlib.tokens import build_completion_batch, sequence_logps, token_logps


@pytest.fixture(scope="module")
def micro():
    from spotlib.config import load_profile
    from spotlib.world.pretrain import build_model
    from spotlib.world.tokenizer import build_tokenizer

    cfg = load_profile("test").world
    torch.manual_seed(0)
    tokenizer = build_tokenizer(cfg)
    model = build_model(cfg, tokenizer).eval()
    return model, tokenizer


def test_completion_batch_masks_prompt_and_ends_with_eos(micro):
    model, tok = micro
    batch = build_completion_batch(tok, ["What is 2 + 3?", "Hi"], ["5", "a longer answer here"], max_len=200)
    ids, mask, att = batch["input_ids"], batch["completion_mask"], batch["attention_mask"]
    for row in range(2):
        n = int(att[row].sum())
        assert ids[row, n - 1].item() == tok.eos_token_id
        prompt_len = len(tok(chat_prompt(tok, ["What is 2 + 3?", "Hi"][row]), add_special_tokens=False)["input_ids"])
        assert mask[row, :prompt_len].sum() == 0 and mask[row, prompt_len:n].all()
        assert mask[row, n:].sum() == 0
    decoded = tok.decode(ids[0][mask[0].bool()], skip_special_tokens=True)
    assert decoded.strip() == "5"


def test_sequence_logps_equal_sum_of_token_logps_and_ignore_padding(micro):
    model, tok = micro
    batch = build_completion_batch(tok, ["p one", "p two"], ["short", "a much longer completion text"], max_len=200)
    total, count = sequence_logps(model, batch)
    single = build_completion_batch(tok, ["p one"], ["short"], max_len=200)
    alone, alone_count = sequence_logps(model, single)
    assert torch.allclose(total[0], alone[0], atol=1e-4)
    assert count[0] == alone_count[0]
    logps = token_logps(model, batch["input_ids"], batch["attention_mask"])
    assert logps.dtype == torch.float32 and (logps <= 0).all()


def test_truncation_keeps_prompt_end_and_limits_length(micro):
    model, tok = micro
    batch = build_completion_batch(tok, ["x " * 200], ["y " * 200], max_len=64, max_prompt_len=20)
    assert batch["input_ids"].shape[1] <= 64
    assert batch["completion_mask"].sum() > 0


def test_generate_is_seeded_and_greedy_is_deterministic(micro):
    model, tok = micro
    prompts = ["What is 2 + 3?", "Name a colour."]
    a = generate(model, tok, prompts, n=2, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=1,
                 backend="transformers", progress=False)
    b = generate(model, tok, prompts, n=2, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=1,
                 backend="transformers", progress=False)
    assert a == b and len(a) == 2 and all(len(x) == 2 for x in a)
    g1 = generate(model, tok, prompts, temperature=0.0, max_new_tokens=12, backend="transformers", progress=False)
    g2 = generate(model, tok, prompts[::-1], temperature=0.0, max_new_tokens=12, backend="transformers",
                  progress=False)
    assert g1 == g2[::-1]  # greedy output does not depend on batch order or padding


def test_unknown_backend(micro):
    model, tok = micro
    with pytest.raises(ValueError, match="unknown generation backend"):
        generate(model, tok, ["x"], backend="tpu")
