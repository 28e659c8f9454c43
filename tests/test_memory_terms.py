"""The memory plan's stage-04 terms (spotlib.plan.memory_terms) against live tensor bytes measured on
a CPU (spotlib.plan.live_bytes) for a small bf16 Qwen3 with grouped-query attention, term by term."""
from __future__ import annotations

import pytest
import torch

from spotlib.plan import memory_terms as M
from spotlib.plan.live_bytes import LiveBytes
from spotlib.plan.memory import LOGIT_BYTES_NO_GRAD
from spotlib.plan.model_shape import ModelShape

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = ModelShape(hidden=128, layers=2, heads=8, kv_heads=2, head_dim=32, intermediate=256, vocab=4000,
                   tie_word_embeddings=False, max_position=2048)


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=SHAPE.vocab, hidden_size=SHAPE.hidden, num_hidden_layers=SHAPE.layers,
                         num_attention_heads=SHAPE.heads, num_key_value_heads=SHAPE.kv_heads,
                         head_dim=SHAPE.head_dim, intermediate_size=SHAPE.intermediate,
                         max_position_embeddings=SHAPE.max_position, tie_word_embeddings=False,
                         attn_implementation="sdpa", eos_token_id=1, pad_token_id=0)
    return Qwen3ForCausalLM(config).to(torch.bfloat16)


def _batch(rows: int, length: int, padded: bool) -> dict:
    ids = torch.randint(5, SHAPE.vocab, (rows, length))
    attention = torch.ones(rows, length, dtype=torch.long)
    if padded:  # one row shorter: the batch needs a padding mask
        attention[0, -8:] = 0
    completion = attention.clone()
    completion[:, : length // 4] = 0
    return {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}


def _kept_for_backward(model, batch) -> int:
    with LiveBytes() as live:
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             use_cache=False).last_hidden_state
        kept = live.now()
    del hidden
    return kept


def test_padding_mask_and_repeat_kv_kept_for_backward(model):
    """With padding, every layer keeps SDPA's bf16 copy of the mask and K, V expanded to all heads."""
    rows, length = 2, 512
    measured = _kept_for_backward(model, _batch(rows, length, True)) - _kept_for_backward(model, _batch(rows, length, False))
    planned = sum(b for _, b in M.masked_attention_terms(SHAPE, rows, length, SHAPE.layers, with_bool=False))
    assert measured == pytest.approx(planned, rel=0.02), (measured, planned)


@pytest.mark.slow
def test_no_grad_pass_of_the_edit_diagnostic(model):
    """A diagnostic pass (no grad, head by chunks): its peak against the plan's terms, and the
    logits' bytes per chunk token and vocabulary entry from two chunk sizes."""
    from spotlib.train.logps import completion_logps

    rows, length = 2, 512
    peaks = {}
    for chunk in (256, 768):  # both large enough that the head's chunk, not a decoder layer, sets the peak
        with torch.no_grad(), LiveBytes() as live:
            completion_logps(model, _batch(rows, length, True), head_chunk=chunk)
        peaks[chunk] = live.peak
    per_entry = (peaks[768] - peaks[256]) / (512 * SHAPE.vocab)
    # fp32 copy + log-sum-exp temporary on CUDA (8.02 measured on an H200); the CPU's kernel needs less
    assert 0.6 * LOGIT_BYTES_NO_GRAD <= per_entry <= 1.05 * LOGIT_BYTES_NO_GRAD, per_entry
    # the decoder's part: one layer's activations with the mask, its bf16 copy and repeat_kv
    batch = _batch(rows, length, True)
    with torch.no_grad(), LiveBytes() as live:
        model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    terms = dict(M.no_grad_pass_terms(SHAPE, rows, length, 256, LOGIT_BYTES_NO_GRAD))
    decoder = sum(b for label, b in terms.items() if not label.startswith(("logits", "completion hidden")))
    # (an H200 measured 0.84 of one layer's training set for a no-grad forward; the CPU's kernels 0.54)
    assert 0.5 * decoder <= live.peak <= 1.05 * decoder, (live.peak, decoder)
    # the plan adds the decoder's and the head's peaks (they come one after the other): an upper bound
    assert peaks[256] <= sum(terms.values())


@pytest.mark.slow
def test_generation_kv_cache(model):
    """The probe set's greedy generation keeps a KV cache: bytes per token of every sequence."""
    rows, prompt = 4, 16
    peaks = {}
    for new in (32, 96):
        with torch.no_grad(), LiveBytes() as live:
            model.generate(torch.randint(5, SHAPE.vocab, (rows, prompt)), attention_mask=torch.ones(rows, prompt,
                           dtype=torch.long), max_new_tokens=new, min_new_tokens=new, do_sample=False)
        peaks[new] = live.peak
    per_token = (peaks[96] - peaks[32]) / (64 * rows)
    assert per_token == pytest.approx(SHAPE.kv_bytes_per_token(), rel=0.1), (per_token, SHAPE.kv_bytes_per_token())


def test_whole_gradients_over_the_reduce_bucket(model):
    """Parameters larger than ZeRO's reduce bucket hold their whole bf16 gradient: the embeddings
    and the untied head of this model against a bucket smaller than them."""
    batch = _batch(2, 64, False)
    model.zero_grad(set_to_none=True)
    model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float().mean().backward()
    measured = {"embeddings": model.model.embed_tokens.weight.grad, "LM head": model.lm_head.weight.grad}
    planned = M.oversized_gradients(SHAPE, reduce_bucket=SHAPE.vocab * SHAPE.hidden - 1)
    assert planned == {k: g.numel() * g.element_size() for k, g in measured.items()}
    assert M.oversized_gradients(SHAPE, reduce_bucket=5e8) == {}
    model.zero_grad(set_to_none=True)
