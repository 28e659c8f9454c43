"""Memory terms of stage 04 beyond the trainer's weights, activations and logits
(spotlib.plan.memory adds them to its phases); each checked on a CPU against measured live
tensor bytes of a small bf16 Qwen3 (tests/test_memory_terms.py, spotlib.plan.live_bytes).

* A padding mask (pairs padded to the longer, rows of different lengths): transformers then
  builds a boolean [B, 1, s, s] mask (1 B per entry) kept as an input of every checkpointed
  layer, and SDPA converts it to the query's dtype, [B, 1, s, s] × 2 B, kept for backward by
  each layer that saves activations (measured on CPU: one bf16 copy per layer).
* SDPA with a mask does not take grouped-query attention natively (transformers
  `use_gqa_in_sdpa`: only without a mask), so `repeat_kv` expands K and V to every query head:
  2 × (hq − hkv) × 2 B more per token and layer, saved for backward like the rest.
* ZeRO-2 reduces a gradient through its IPG bucket unless the parameter alone exceeds
  `reduce_bucket_size`: then its whole bf16 gradient exists until it is reduced (the
  embeddings at vocab × h, and an untied LM head): 2 B × its elements.
* The edit diagnostic (`train.edit_diag_pairs`, spotlib.train.probes): on the main rank after
  every `train.kl_probe_every` steps, beside the training states: no-grad passes of
  `diag_settings` rows at `train.max_len`, the LM head by `train.logits_chunk_tokens`.
* The held-out KL probe (when probes exist: the tiny world or `train.kl_probe_file`): the
  reference's greedy responses are generated once with a KV cache (2 × kv_heads × head_dim ×
  layers × 2 B per token of every sequence in the batch), and the probe keeps whole logits.
"""
from __future__ import annotations

from spotlib.plan.model_shape import BF16, FP32

BOOL = 1
PROBE_GENERATE_BATCH = 32          # spotlib.train.probes.build_probe_set's batch_size
PROBE_LOGIT_BYTES = BF16 + 3 * FP32  # logits, fp32 log-softmax, its exp, the product summed over the vocabulary

Terms = list[tuple[str, float]]


def repeat_kv_bytes_per_token_layer(shape) -> int:
    """What SDPA's expanded K and V add per token and layer under a padding mask."""
    return 2 * (shape.q_width - shape.kv_width) * BF16


def padding_mask_terms(sequences: int, length: int, saving_layers: int, with_bool: bool = True) -> Terms:
    """The boolean mask of a padded batch (`with_bool`: alive in this phase, as a forward's or a
    checkpointed layer's input) and the bf16 copies the saving layers keep."""
    entries = sequences * length * length
    terms = [(f"padding mask: bool [{sequences}, 1, s, s], s = {length:,}", BOOL * entries)] if with_bool else []
    if saving_layers:
        terms.append((f"padding mask: SDPA's bf16 copy in {saving_layers} layer(s)", BF16 * entries * saving_layers))
    return terms


def masked_attention_terms(shape, sequences: int, length: int, saving_layers: int, with_bool: bool = True) -> Terms:
    """Padding mask and repeat_kv for a batch of `sequences` × `length` tokens, `saving_layers`
    of whose layers keep their activations at once (1 under checkpointing or without grad)."""
    tokens = sequences * length
    extra = repeat_kv_bytes_per_token_layer(shape) * tokens * saving_layers
    terms = padding_mask_terms(sequences, length, saving_layers, with_bool)
    if extra:
        terms.append((f"SDPA repeat_kv under the mask: 2(hq-hkv) x 2 B/token in {saving_layers} layer(s)", extra))
    return terms


def oversized_gradients(shape, reduce_bucket: float) -> dict[str, float]:
    """Whole bf16 gradients of the parameters larger than ZeRO's reduce bucket."""
    grads = {}
    if shape.vocab * shape.hidden > reduce_bucket:
        grads["embeddings"] = BF16 * shape.vocab * shape.hidden
        if not shape.tie_word_embeddings:
            grads["LM head"] = BF16 * shape.vocab * shape.hidden
    return grads


def diag_rows(train_cfg) -> int:
    """Rows per edit-diagnostic pass (spotlib.train.probes.diag_settings), at most the pairs."""
    from spotlib.train.probes import diag_settings

    return min(diag_settings(train_cfg)["batch_size"], max(train_cfg.edit_diag_pairs, 1))


def no_grad_pass_terms(shape, sequences: int, length: int, head_chunk: int, logit_bytes: int) -> Terms:
    """One no-grad scoring pass: one layer's activations, the masked attention's extras, the
    completion hidden states and one LM-head chunk's logits."""
    tokens = sequences * length
    chunk = min(head_chunk, tokens)
    return ([(f"activations: one layer, no grad, {tokens:,} tokens", shape.activation_bytes_per_token_layer() * tokens)]
            + masked_attention_terms(shape, sequences, length, 1)
            + [("completion hidden states 2h B/token", BF16 * shape.hidden * tokens),
               (f"logits: head chunk {chunk:,} tokens x {shape.vocab:,} x {logit_bytes} B",
                chunk * shape.vocab * logit_bytes)])


def probes_on(profile) -> bool:
    t = profile.train
    return bool(t.kl_probe_every and t.kl_probe_prompts
                and (t.kl_probe_file or profile.model.name_or_path == "world"))


def probe_terms(profile, shape) -> tuple[Terms, Terms]:
    """(building the probe set: the reference's generation KV cache; measuring it: whole logits)."""
    t = profile.train
    rows = min(PROBE_GENERATE_BATCH, t.kl_probe_prompts)
    length = (t.max_prompt_len or t.max_len) + t.kl_probe_max_tokens
    build = [(f"probe generation KV cache: {rows} x {length:,} tokens x {shape.kv_bytes_per_token():,} B",
              shape.kv_bytes_per_token() * rows * length)]
    tokens = min(PROBE_GENERATE_BATCH, t.kl_probe_prompts) * t.kl_probe_max_tokens
    measure = [(f"probe logits: {tokens:,} tokens x {shape.vocab:,} x {PROBE_LOGIT_BYTES} B",
                tokens * shape.vocab * PROBE_LOGIT_BYTES)]
    return build, measure
