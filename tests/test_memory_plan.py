"""The memory/time plan: hand-computed figures for a small Qwen3 shape, the paper model's
count, what fits on 80 GB vs 24 GB cards, and a measured CPU training step."""
import json
import subprocess
import sys
import textwrap

import pytest

from spotlib.config import REPO_ROOT, load_profile
from spotlib.memory_plan import GIB, KNOWN_SHAPES, ModelShape, build_plan, model_shape, zero2_terms

SMALL = ModelShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128, vocab=100,
                   tie_word_embeddings=False, max_position=256)
SMALL_CONFIG = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                "intermediate_size": 128, "vocab_size": 100, "tie_word_embeddings": False,
                "max_position_embeddings": 256}


def test_small_shape_by_hand():
    # embeddings 100*64 = 6400; per layer: q 64*64 + k, v 2*64*32 + o 64*64 + q/k norms 2*16 = 12320,
    # SwiGLU 3*64*128 = 24576, two norms 128 -> 37024; 2 layers 74048; final norm 64; untied head 6400.
    assert SMALL.params == 6400 + 2 * 37024 + 64 + 6400 == 86912
    # bf16: 2*(4h + 3hq + 3hkv + 4I) = 2*(256 + 192 + 96 + 512) = 2112; fp32 norm copies 4*(2h + hq + hkv) = 896
    assert SMALL.activation_bytes_per_token_layer() == 2112 + 896 == 3008
    assert SMALL.checkpointed_bytes_per_token_layer() == 128
    assert SMALL.kv_bytes_per_token() == 2 * 2 * 16 * 2 * 2 == 256


def test_param_count_matches_transformers_qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    model = Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in SMALL_CONFIG.items() if k != "architectures"}))
    assert sum(p.numel() for p in model.parameters()) == SMALL.params


def test_known_qwen3_counts():
    # Qwen3-8B: 151936*4096 embeddings and head, 36 x 192,946,432 per layer, final norm 4096.
    assert KNOWN_SHAPES["Qwen/Qwen3-8B"].params == 2 * 151936 * 4096 + 36 * 192_946_432 + 4096 == 8_190_735_360
    assert KNOWN_SHAPES["Qwen/Qwen3-0.6B"].params == 596_049_920   # tied head


def small_profile(tmp_path, **overrides):
    (tmp_path / "config.json").write_text(json.dumps(SMALL_CONFIG))
    values = {"model.name_or_path": str(tmp_path), "hardware.gpus": 4, "hardware.gpu_memory_gib": 1.0,
              "hardware.reserve_gib": 0.0, "train.methods": ["sft"], "train.per_device_batch": 2,
              "train.max_len": 1000, "train.gradient_checkpointing": False, "train.ref_batch_tokens": 100}
    values.update(overrides)
    return load_profile("paper", overrides=values)


def test_shape_from_local_config(tmp_path):
    assert model_shape(small_profile(tmp_path)) == SMALL


def test_training_stage_by_hand(tmp_path):
    profile = small_profile(tmp_path)
    stage = {s.stage: s for s in build_plan(profile).stages}["04_train_spot"]
    terms = dict(stage.terms)
    p = 86912
    assert terms["bf16 weights (replicated) 2P"] == 2 * p
    assert terms["bf16 gradients (ZeRO-2) 2P/4"] == 2 * p / 4
    assert terms["fp32 master + Adam m, v 12P/4"] == 12 * p / 4
    assert terms["DeepSpeed gradient buckets"] == 5e8 * 2 * 2 + 5e8 * 2   # params/deepspeed_zero2.json
    # sft: 2 sequences x 1000 tokens, no checkpointing: 3008 B x 2 layers x 2000 tokens; logits 2000 x 100 x 10 B
    assert terms["activations (no checkpointing)"] == 3008 * 2 * 2000
    assert terms["activations: final norm"] == 8 * 64 * 2000          # fp32 4h + bf16 2h + output 2h
    assert terms["logits: 2,000 tokens x 100 x 16 B"] == 2000 * 100 * 16
    checkpointed = dict(build_plan(small_profile(tmp_path, **{"train.gradient_checkpointing": True})).stages[3].terms)
    assert checkpointed["activations: layer inputs (checkpointed)"] == 128 * 2 * 2000
    assert checkpointed["activations: one layer recomputed"] == 3008 * 2000


def test_pairs_double_the_forward(tmp_path):
    stage = build_plan(small_profile(tmp_path, **{"train.methods": ["spot_bco"]})).stages[3]
    assert dict(stage.terms)["logits: 4,000 tokens x 100 x 16 B"] == 4000 * 100 * 16


def test_paper_fits_on_80gb_and_is_refused_on_24gb():
    # One sequence pair per GPU and step (the paper's batch of 32 needs grad_accum 4 on 8 GPUs).
    profile = load_profile("paper", overrides={"train.per_device_batch": 1, "train.grad_accum": 4,
                                               "train.methods": ["sft", "sft_plus", "rft", "dpo", "spot_bco"]})
    big = build_plan(profile, gpus=8, gpu_memory_gib=80)
    by_stage = {s.stage: s for s in big.stages}
    for name in ("01_sample", "02_rectify", "03_filter", "04_train_spot", "05_eval_forgetting"):
        assert by_stage[name].fits, (name, big.failures())
    small = build_plan(profile, gpus=8, gpu_memory_gib=24)
    failures = "\n".join(small.failures())
    assert "stage 04_train_spot does not fit: needs" in failures and "8 x 24 GiB" in failures
    assert "stage 01_sample does not fit: vLLM's KV cache holds" in failures
    assert not small.fits


def test_suggestions_name_the_setting(tmp_path):
    tight = small_profile(tmp_path, **{"hardware.gpu_memory_gib": 0.5, "train.per_device_batch": 1000})
    line = next(f for f in build_plan(tight).failures() if "04_train_spot" in f)
    assert "train.gradient_checkpointing: true" in line


def test_dry_run_refuses_24gb_naming_the_stages(capsys):
    from spotlib.reproduce import main

    assert main(["--profile", "paper", "--dry-run", "--gpu-memory-gib", "24"]) == 0
    out = capsys.readouterr().out
    assert "memory plan  paper: 8.19B parameters" in out and "on 8 x 24 GiB" in out
    assert "plan refused on 8 x 24 GiB: 01_sample, 03_filter, 04_train_spot, 05_eval_forgetting, 06_rl_init" in out
    assert "  - stage 04_train_spot does not fit: needs" in out


MEASURE = textwrap.dedent("""
    import json, sys, psutil, torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0); torch.set_num_threads(1)
    rss = lambda: psutil.Process().memory_info().rss
    def step(config):
        model = Qwen3ForCausalLM(config)          # fp32 weights
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
        ids = torch.randint(0, config.vocab_size, (1, 8))
        model(input_ids=ids, labels=ids).loss.backward()   # fp32 gradients
        opt.step()                                          # Adam m, v
        return model, opt
    # a throw-away step first: lazy imports and kernels load outside the measurement
    warm = step(Qwen3Config(**{**json.loads(sys.argv[1]), "hidden_size": 64, "head_dim": 16,
                               "intermediate_size": 64, "vocab_size": 64}))
    del warm
    config = Qwen3Config(**json.loads(sys.argv[1]))
    before = rss()
    model, opt = step(config)
    print(json.dumps({"rss_delta": rss() - before, "params": sum(p.numel() for p in model.parameters())}))
""")


@pytest.mark.slow   # ~25 s on a busy 2-core machine, most of it importing transformers afresh
def test_measured_cpu_training_step_matches_the_plan():
    """One fp32 AdamW step of a ~8M-parameter Qwen3 in one process: weights + gradients + m + v = 16 B
    per parameter; the resident-memory growth of a fresh process must match within 5%
    (measured: 0.998-1.000 of the prediction)
    (the tokens are few, so activations and logits are under 1% of it)."""
    config = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 64, "intermediate_size": 1024, "vocab_size": 8000, "tie_word_embeddings": False}
    shape = ModelShape(hidden=256, layers=4, heads=4, kv_heads=2, head_dim=64, intermediate=1024, vocab=8000,
                       tie_word_embeddings=False)
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(config)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["params"] == shape.params
    predicted = 16 * shape.params    # fp32 weights 4 + gradients 4 + Adam m 4 + v 4
    assert measured["rss_delta"] == pytest.approx(predicted, rel=0.05), (measured, predicted / GIB)


def _saved_bytes_per_token(run, tokens_a: int, tokens_b: int) -> float:
    """Growth of CUDA memory held after `run(tokens)` per extra token (slope: constants cancel)."""
    import torch

    held = []
    for tokens in (tokens_a, tokens_b):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        keep = run(tokens)
        torch.cuda.synchronize()
        held.append(torch.cuda.memory_allocated() - start)
        del keep
    return (held[1] - held[0]) / (tokens_b - tokens_a)


@pytest.mark.gpu
def test_activation_and_logit_bytes_on_cuda():
    """A Qwen3-0.6B-shaped model (8 of its 28 layers) in bf16 on CUDA: the activations kept for
    backward, with and without gradient checkpointing, and the logits of the log-prob path, per
    token, against the plan's formulas."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from spotlib.memory_plan import KL_EXTRA_LOGIT_BYTES, LOGIT_BYTES_NO_GRAD, LOGIT_BYTES_TRAIN
    from spotlib.train.logps import completion_logps

    shape = KNOWN_SHAPES["Qwen/Qwen3-0.6B"]
    layers = 8
    config = Qwen3Config(hidden_size=shape.hidden, num_hidden_layers=layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
                         intermediate_size=shape.intermediate, vocab_size=shape.vocab, tie_word_embeddings=True)
    model = Qwen3ForCausalLM(config).to("cuda", torch.bfloat16).train()
    ids = lambda t: torch.randint(0, shape.vocab, (1, t), device="cuda")  # noqa: E731

    def decoder(tokens):
        return model.model(input_ids=ids(tokens)).last_hidden_state

    final = shape.final_norm_bytes_per_token()   # held once, not per layer
    full = (_saved_bytes_per_token(decoder, 2048, 4096) - final) / layers
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checkpointed = (_saved_bytes_per_token(decoder, 2048, 4096) - final) / layers
    model.gradient_checkpointing_disable()

    def head(tokens):
        batch = {"input_ids": ids(tokens), "attention_mask": torch.ones(1, tokens, dtype=torch.long, device="cuda"),
                 "completion_mask": torch.ones(1, tokens, dtype=torch.long, device="cuda")}
        with torch.no_grad():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            completion_logps(model, batch)
            return torch.cuda.max_memory_allocated() - base

    def train_peak(tokens):
        batch = {"input_ids": ids(tokens), "attention_mask": torch.ones(1, tokens, dtype=torch.long, device="cuda"),
                 "completion_mask": torch.ones(1, tokens, dtype=torch.long, device="cuda")}
        model.zero_grad(set_to_none=False)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        completion_logps(model, batch).sums.sum().backward()
        return torch.cuda.max_memory_allocated() - base

    train_peak(512)   # gradients allocated once, outside the slope
    peaks = [train_peak(t) for t in (1024, 2048)]
    train_slope = (peaks[1] - peaks[0]) / 1024
    planned_train = (layers * shape.activation_bytes_per_token_layer() + final
                     + shape.vocab * LOGIT_BYTES_TRAIN)
    def kl_peak(tokens):   # kl_sft's path: policy logits with gradients, reference logits, token KL
        x = ids(tokens)
        hidden = model.model.norm(torch.randn(tokens, shape.hidden, device="cuda", dtype=torch.bfloat16,
                                              requires_grad=True))
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        policy = model.lm_head(hidden).float()
        with torch.no_grad():
            log_q = torch.log_softmax(model.lm_head(hidden.detach()).float(), -1)
        log_p = torch.log_softmax(policy, -1)
        token_kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        logps = policy.gather(-1, x.reshape(-1, 1)) - torch.logsumexp(policy, -1, keepdim=True)
        (logps.sum() + token_kl.sum()).backward()
        return torch.cuda.max_memory_allocated() - base

    def body_peak(tokens):
        with torch.no_grad():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            model.model(input_ids=ids(tokens))
            return torch.cuda.max_memory_allocated() - base

    kl_peak(256)
    kl_bytes = (kl_peak(2048) - kl_peak(1024)) / 1024 / shape.vocab
    body = (body_peak(4096) - body_peak(2048)) / 2048
    no_grad_peak = [head(t) for t in (1024, 2048)]
    logits_no_grad = (no_grad_peak[1] - no_grad_peak[0]) / 1024 / shape.vocab
    print(f"\nactivations per token per layer: measured {full:,.0f} B, planned "
          f"{shape.activation_bytes_per_token_layer():,} B; checkpointed measured {checkpointed:,.0f} B, planned "
          f"{shape.checkpointed_bytes_per_token_layer():,} B; no-grad logits {logits_no_grad:.2f} B x vocab per token, "
          f"planned {LOGIT_BYTES_NO_GRAD}; training step peak {train_slope:,.0f} B per token, planned "
          f"{planned_train:,} B")
    # an H200 gave 73,961 / 71,680, 2,114 / 2,048, 8.02 / 8 and (15.9 / 16 for the logits part)
    assert full == pytest.approx(shape.activation_bytes_per_token_layer(), rel=0.1)
    assert checkpointed == pytest.approx(shape.checkpointed_bytes_per_token_layer(), rel=0.1)
    assert logits_no_grad == pytest.approx(LOGIT_BYTES_NO_GRAD, rel=0.1)
    assert train_slope == pytest.approx(planned_train, rel=0.1)
    # 36.0 B planned and measured; a no-grad forward peaked at 0.84 of one layer's training set
    assert kl_bytes == pytest.approx(LOGIT_BYTES_TRAIN + KL_EXTRA_LOGIT_BYTES, rel=0.1)
    assert 0.5 * shape.activation_bytes_per_token_layer() < body <= shape.activation_bytes_per_token_layer()


def test_shape_from_the_hub_cache(tmp_path, monkeypatch):
    """A Hub id whose config.json is in the local cache is read from there, without the network."""
    snapshot = tmp_path / "hub" / "models--acme--tiny-qwen3" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(SMALL_CONFIG))
    (tmp_path / "hub" / "models--acme--tiny-qwen3" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny-qwen3" / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    profile = load_profile("paper", overrides={"model.name_or_path": "acme/tiny-qwen3"})
    assert model_shape(profile) == SMALL
    with pytest.raises(Exception, match="acme/unknown.*known shapes"):
        model_shape(load_profile("paper", overrides={"model.name_or_path": "acme/unknown"}))
