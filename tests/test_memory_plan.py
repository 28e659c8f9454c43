"""The memory/time plan: hand-computed figures for a small Qwen3 shape, the paper model's
count, what fits on 80 GB vs 24 GB cards, and a measured CPU training step."""
import json
import subprocess
import sys
import textwrap

import pytest

from spotlib.config import REPO_ROOT, load_profile
from spotlib.plan.memory import GIB, build_plan, zero2_terms
from spotlib.plan.model_shape import KNOWN_SHAPES, ModelShape, model_shape

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
              "train.max_len": 1000, "train.max_prompt_len": 500, "train.gradient_checkpointing": False,
              "train.ref_batch_tokens": 100}
    values.update(overrides)
    return load_profile("paper", overrides=values)


def test_shape_from_local_config(tmp_path):
    assert model_shape(small_profile(tmp_path)) == SMALL


def test_zero2_terms_as_deepspeed_allocates_them(tmp_path):
    zero = zero2_terms(small_profile(tmp_path), SMALL, 4)
    p = 86912
    assert dict(zero.states) == {"bf16 weights (replicated) 2P": 2 * p, "fp32 master weights 4P/4": 4 * p / 4,
                                 "Adam m, v (fp32) 8P/4": 8 * p / 4}
    assert zero.grads == ("bf16 gradient partition 2P/4", 2 * p / 4)
    # params/deepspeed_zero2.json: reduce_bucket_size 5e8 in bf16, two buffers with overlap_comm
    assert zero.buckets[1] == 2 * 5e8 * 2
    assert [b for _, b in zero.step] == [2 * p / 4, 4 * p / 4]   # flattened, then cast to fp32


def test_training_phases_by_hand(tmp_path):
    p = 86912
    states, grads, buckets = 2 * p + 12 * p / 4, 2 * p / 4, 2 * 5e8 * 2
    # sft: 2 sequences x 1000 tokens, no checkpointing: 3008 B x 2 layers x 2000 tokens; final norm 8h B;
    # completion hidden states and their gradient 4h B; logits of one chunk (train.logits_chunk_tokens 500)
    stage = build_plan(small_profile(tmp_path, **{"train.logits_chunk_tokens": 500})).stages[3]
    acts, final, hidden = 3008 * 2 * 2000, 8 * 64 * 2000, 4 * 64 * 2000
    # a padded batch (spotlib.plan.memory_terms): SDPA's bf16 copy of the [2, 1, 1000, 1000] mask in each of the
    # 2 layers, repeat_kv's 2 (hq - hkv) x 2 B = 128 B per token and layer (the bool mask: freed after the forward)
    masked = 2 * 2 * 1000 ** 2 * 2 + 128 * 2000 * 2
    one_row = 1000 ** 2 + 2 * 1000 ** 2 + 128 * 1000     # one 1,000-token row, one layer
    assert stage.phases == {
        "LM-head backward": states + grads + acts + final + hidden + 500 * 100 * 16 + masked,  # grad_accum 2
        "decoder backward": states + grads + grads + buckets + acts + final + masked,
        "optimizer step": states + grads + 2 * p / 4 + 4 * p / 4,
        # before training, the reference alone: one layer of a 100-token batch, a head chunk of 100 tokens
        "reference log-probs (before training)": 2 * p + 3008 * 100 + 2 * 64 * 100 + 100 * 100 * 8 + one_row,
        # the edit diagnostic on the main rank: one row per pass (ref_batch_tokens // max_len), chunked head
        "edit diagnostic (main rank, between steps)": states + 3008 * 1000 + one_row + 2 * 64 * 1000
        + 500 * 100 * 8}
    assert stage.peak == max(stage.phases.values()) == stage.phases["decoder backward"]
    assert dict(stage.terms)["activations (no checkpointing)"] == acts
    checkpointed = build_plan(small_profile(tmp_path, **{"train.gradient_checkpointing": True,
                                                         "train.grad_accum": 1})).stages[3]
    kept = 128 * 2 * 2000 + final
    mask = 2 * 1000 ** 2   # checkpointed layers keep the bool mask as an input; the recomputed one its bf16 copy
    assert checkpointed.phases["LM-head backward"] == states + kept + hidden + 2000 * 100 * 16 + mask
    assert checkpointed.phases["decoder backward"] == states + grads + buckets + kept + 3008 * 2000 \
        + mask + 2 * mask + 128 * 2000


def test_pairs_double_the_forward_and_kl_sft_adds_its_reference(tmp_path):
    p = 86912
    pairs = build_plan(small_profile(tmp_path, **{"train.methods": ["spot_bco"]})).stages[3]
    assert "micro-batch 4 sequence(s) x train.max_len 1,000 = 4,000 tokens" in "\n".join(pairs.notes)
    sft = build_plan(small_profile(tmp_path)).stages[3]
    assert pairs.phases["optimizer step"] == sft.phases["optimizer step"]
    # twice the padded rows: twice the mask, its bf16 copies and repeat_kv's expansion too
    masked = 2 * 2 * 1000 ** 2 * 2 + 128 * 2000 * 2
    assert pairs.phases["decoder backward"] - sft.phases["decoder backward"] == (3008 * 2 + 8 * 64) * 2000 + masked
    kl = build_plan(small_profile(tmp_path, **{"train.methods": ["kl_sft"]})).stages[3]
    # the same unpaired forward plus the reference model; its chunk's logits and token KL at 36 B
    assert kl.phases["kl_sft LM-head backward"] - kl.phases["LM-head backward"] == 2 * p + 2000 * 100 * (36 - 16)


def test_grpo_reads_its_keys(tmp_path):
    p = 86912
    keys = {"rl.vllm_gpu_memory": 0.5, "rl.micro_batch": 2, "rl.logp_chunk_tokens": 300,
            "hardware.prompt_tokens": 100, "rl.max_new_tokens": 400}
    offloaded = build_plan(small_profile(tmp_path, **keys, **{"rl.offload_reference": True})).stages[-1]
    resident = build_plan(small_profile(tmp_path, **keys, **{"rl.offload_reference": False})).stages[-1]
    vllm, states = 0.5 * GIB, 2 * p + 12 * p / 4
    # 2 rollouts x (100 + 400) tokens, checkpointed (rl.gradient_checkpointing); a mini-batch is several
    # micro-batches per rank, so an earlier one's gradient partition is alive; one 300-token chunk's logits
    tokens = 2 * 500
    lm_head = states + vllm + 2 * p / 4 + 128 * 2 * tokens + 8 * 64 * tokens + 4 * 64 * tokens + 300 * 100 * 16
    assert offloaded.phases["LM-head backward"] == lm_head
    assert resident.phases["LM-head backward"] == lm_head + 2 * p            # the reference stays on the GPU
    scoring = states + vllm + 2 * p + 3008 * tokens + 300 * 100 * 8           # it is on the GPU to score either way
    assert offloaded.phases["scoring (old policy, reference; no grad)"] == scoring
    assert resident.phases["scoring (old policy, reference; no grad)"] == scoring


def test_paper_fits_on_80gb_and_is_refused_on_24gb(monkeypatch):
    monkeypatch.delenv("SPOT_VLLM_MEM", raising=False)
    profile = load_profile("paper")   # its own settings: batch 2 x accumulation 2 x 8 GPUs = 32
    assert profile.train.per_device_batch * profile.train.grad_accum * profile.hardware.gpus == 32
    big = build_plan(profile, gpus=8, gpu_memory_gib=79.6)
    assert big.fits, big.failures()
    assert {s.stage for s in big.stages if s.budget_bytes} == {"01_sample", "03_filter", "04_train_spot",
                                                               "05_eval_forgetting", "06_rl_init"}
    small = build_plan(profile, gpus=8, gpu_memory_gib=24)
    failures = "\n".join(small.failures())
    assert "stage 04_train_spot does not fit: needs" in failures and "8 x 24 GiB" in failures
    assert "stage 06_rl_init does not fit: needs" in failures
    assert "stage 01_sample does not fit: vLLM's KV cache holds" in failures
    assert not small.fits


def test_measured_trainer_peak_on_an_h200(tmp_path):
    """The planner against a recorded measurement of the real trainer: stage 04 relaunched under
    accelerate + DeepSpeed ZeRO-2 on one H200 (bf16, fp32 master weights), a Qwen3-0.6B-shaped model
    (tied embeddings), spot_bco, per_device_batch 1 x grad_accum 2, pairs of 2,176 tokens, gradient
    checkpointing: peak torch.cuda.max_memory_allocated 18.97 GiB, measured by
    `python benchmarks/gpu_trainer_check.py --out DIR` (profile built here as that script builds it).
    That run's LM head took the whole micro-batch at once (before train.logits_chunk_tokens), which
    the plan models as one chunk of at least the micro-batch's tokens."""
    import yaml

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    from gpu_train_check import QWEN3_0_6B

    seq = 2048
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text(json.dumps(dict(QWEN3_0_6B, max_position_embeddings=2 * seq + 256)))
    raw = yaml.safe_load((REPO_ROOT / "params" / "paper.yaml").read_text())
    raw.update(name="gpu_trainer_check", device="cuda", seeds=[0], output_dir=str(tmp_path / "stage"))
    raw["model"] = dict(raw["model"], name_or_path=str(tmp_path / "base"), max_len=seq + 128)
    raw["train"].update(methods=["spot_bco"], ablations=[], num_processes=1, max_steps=6, per_device_batch=1,
                        grad_accum=2, max_len=seq + 128, max_prompt_len=64, kl_probe_every=0, edit_diag_pairs=0,
                        save_every=0, logits_chunk_tokens=2 * (seq + 128))
    raw["hardware"] = dict(raw["hardware"], gpus=1, gpu_memory_gib=139.8)
    (tmp_path / "check.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    profile = load_profile(str(tmp_path / "check.yaml"))
    stage = next(s for s in build_plan(profile, gpus=1, gpu_memory_gib=139.8).stages if s.stage == "04_train_spot")
    measured = 18.97 * GIB
    assert stage.peak == pytest.approx(measured, rel=0.25), stage.peak / GIB   # planned 19.02 GiB
    assert max(stage.phases, key=stage.phases.get) == "LM-head backward"
    # with the paper's 2,048-token chunks the same step plans 5.2 GiB less (to be measured on a GPU)
    raw["train"]["logits_chunk_tokens"] = 2048
    (tmp_path / "check.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    chunked = build_plan(load_profile(str(tmp_path / "check.yaml")), gpus=1, gpu_memory_gib=139.8).stages[3]
    assert stage.peak - chunked.peak == (2 * (seq + 128) - 2048) * 151936 * 16


def test_suggestions_name_the_setting(tmp_path):
    tight = small_profile(tmp_path, **{"hardware.gpu_memory_gib": 0.5, "train.per_device_batch": 1000})
    line = next(f for f in build_plan(tight).failures() if "04_train_spot" in f)
    assert "train.gradient_checkpointing: true" in line


def test_dry_run_refuses_24gb_naming_the_stages(capsys):
    from spotlib.reproduce import main

    assert main(["--profile", "paper", "--dry-run", "--gpu-memory-gib", "24"]) == 0
    out = capsys.readouterr().out
    assert "memory plan  paper: 8.19B parameters" in out and "on 8 x 24 GiB" in out
    assert "plan refused on 8 x 24 GiB: 01_sample, 04_train_spot, 05_eval_forgetting, 06_rl_init" in out
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

    from spotlib.plan.memory import KL_EXTRA_LOGIT_BYTES, LOGIT_BYTES_NO_GRAD, LOGIT_BYTES_TRAIN
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
