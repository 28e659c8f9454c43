"""The tiny world's model side: a micro model learns, the base model is cached."""
import dataclasses
import json

import pytest
import torch

from spotlib.config import load_profile
from spotlib.world import ensure_base_model
from spotlib.world.pretrain import build_model, encode_examples, micro_batches, torch_threads, world_hash
from spotlib.world.tokenizer import build_tokenizer


def test_micro_model_learns_a_toy_task_in_seconds():
    world = load_profile("test").world
    tok = build_tokenizer(world)
    torch.manual_seed(0)
    model = build_model(world, tok)
    examples = [(f"Repeat {w}.", f"{w} {w}") for w in ("apple", "river", "stone", "cloud")] * 4
    encoded = encode_examples(tok, examples)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    with torch.random.fork_rng(), torch_threads(1):     # a micro model: threads only add overhead
        for _ in range(25):
            total = 0.0
            n_target = sum(len(s) - p for s, p in encoded)
            for ids, mask, labels in micro_batches(encoded, tok.pad_token_id, 4096):
                logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                         labels[:, 1:].reshape(-1), reduction="sum") / n_target
                loss.backward()
                total += loss.item()
            optim.step()
            optim.zero_grad()
            losses.append(total)
    assert losses[-1] < 0.3 * losses[0], losses


def test_micro_batches_mask_the_prompt_and_padding():
    world = load_profile("test").world
    tok = build_tokenizer(world)
    encoded = encode_examples(tok, [("Hi", "yes"), ("A longer prompt here", "no no no")])
    batches = list(micro_batches(encoded, tok.pad_token_id, 10_000))
    assert len(batches) == 1
    ids, mask, labels = batches[0]
    for row in range(2):
        kept = labels[row][labels[row] != -100].tolist()
        seq, plen = next((s, p) for s, p in encoded if len(s) == int(mask[row].sum()))
        assert kept == seq[plen:] and kept[-1] == tok.eos_token_id


def test_ensure_base_model_trains_once_then_reuses(tmp_path, monkeypatch):
    profile = load_profile("test", overrides={"output_dir": str(tmp_path)})
    path = ensure_base_model(profile)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["world_hash"] == world_hash(profile.world)
    assert set(manifest["heldout_scores"]["T=0.0"]) == {"arith", "arith_ood", "facts", "format"}
    assert manifest["stats"]["loss_last"] < manifest["stats"]["loss_first"]
    from spotlib.models import load_model
    model, tok = load_model(path, device="cpu")
    assert model.config.head_dim == profile.world.hidden_size // profile.world.num_heads
    assert tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<|im_start|>assistant\n")

    import spotlib.world.pretrain as pretrain_module

    def fail(*args, **kwargs):
        raise AssertionError("retrained although the manifest matches")
    monkeypatch.setattr(pretrain_module, "pretrain", fail)
    assert ensure_base_model(profile) == path
    changed = profile.replace(world=dataclasses.replace(profile.world, seed=1))
    try:
        ensure_base_model(changed)
        raise RuntimeError("a changed world must retrain")
    except AssertionError:
        pass


@pytest.mark.slow
@pytest.mark.parametrize("bf16", [False, True])
def test_test_world_learns_in_either_precision(bf16):
    """Whichever precision a profile names, pre-training reaches the test world's loss target
    (fp32 ends near 2.2 nats from 5.3; the target leaves room for bf16 rounding)."""
    from spotlib.world.pretrain import pretrain
    world = dataclasses.replace(load_profile("test").world, bf16_autocast=bf16)
    _, _, stats = pretrain(world, progress=False)
    assert stats["precision"] == ("bf16-autocast" if bf16 else "fp32")
    assert stats["loss_last"] < 0.5 * stats["loss_first"] and stats["loss_last"] < 2.6, stats
