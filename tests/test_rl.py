"""GRPO: advantages, the clipped loss and the k3 KL against hand computation; a micro run learns."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from rl_helpers import micro_model as _micro_model
from spotlib.config import RLConfig
from spotlib.rl.grpo import clipped_pg_loss, group_advantages, k3_kl, train_grpo
from spotlib.rl.schedule import prompt_schedule


pytestmark = pytest.mark.usefixtures("one_thread")


def test_group_advantages_match_hand_computation():
    rewards = torch.tensor([[1.0, -1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [1.0, -1.0, -1.0, -1.0]])
    adv = group_advantages(rewards, eps=0.0)
    # group 1: mean 0, unbiased std sqrt(4/3) -> ±sqrt(3)/2
    assert torch.allclose(adv[0], torch.tensor([1, -1, -1, 1]) * math.sqrt(3) / 2)
    # all equal: no signal
    assert torch.equal(adv[1], torch.zeros(4))
    # group 3: mean -0.5, std = sqrt((2.25 + 3 * 0.25) / 3) = 1
    assert torch.allclose(adv[2], torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_clipped_loss_matches_hand_computation():
    eps = 0.2
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5, 1.1])
    adv = torch.tensor([2.0, 2.0, -2.0, -2.0, 2.0])
    old = torch.zeros(5)
    loss, clipped = clipped_pg_loss(torch.log(ratio), old, adv, eps)
    # A>0: gain capped at 1+eps; A>0, ratio<1-eps: unclipped (pessimistic); A<0 mirrors it.
    expected = torch.tensor([-2.0 * 1.2, -2.0 * 0.5, 2.0 * 1.5, 2.0 * 0.8, -2.0 * 1.1])
    assert torch.allclose(loss, expected, atol=1e-6)
    assert clipped.tolist() == [True, False, False, True, False]
    # the gradient vanishes exactly where the clip is active
    logp = torch.log(ratio).clone().requires_grad_(True)
    clipped_pg_loss(logp, old, adv, eps)[0].sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([0.0, -2 * 0.5, 2 * 1.5, 0.0, -2 * 1.1]), atol=1e-6)


def test_k3_estimator_matches_exact_kl():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = float((p * (p / q).log()).sum())
    k3 = k3_kl(p.log(), q.log(), clamp=None)
    assert (k3 >= 0).all()
    # unbiased: its expectation under p is KL(p || q) exactly
    assert float((p * k3).sum()) == pytest.approx(exact, rel=1e-5)
    # and a Monte Carlo average over samples of p gets there too
    gen = torch.Generator().manual_seed(0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    mc = float(k3_kl(p.log()[samples], q.log()[samples]).mean())
    assert mc == pytest.approx(exact, rel=0.02)


def test_prompt_schedule_is_seeded_and_covers_epochs():
    a = prompt_schedule(10, 4, 5, seed=3)
    assert a == prompt_schedule(10, 4, 5, seed=3)
    flat = [i for step in a for i in step]
    assert sorted(flat[:10]) == list(range(10)) and len(flat) == 20


# ----------------------------------------------------------------------------- a micro run

def _says_a(records, responses):
    """Toy grader: the response contains the letter 'a' (about 1 in 5 random 6-char responses)."""
    return ["a" in response for response in responses]


def _toy_items(n):
    return [{"id": f"toy-{i}", "family": "toy", "prompt": f"x{i}", "answer": "a", "meta": {}} for i in range(n)]


MICRO = RLConfig(num_prompts=8, rollouts_per_prompt=8, prompts_per_step=8, mini_batch=4, lr=1e-2,
                 kl_coef=0.001, max_new_tokens=6, max_steps=8, eval_every=4, micro_batch=32,
                 bf16_autocast=False, save_every=0, heldout_items=4)


def test_micro_grpo_raises_reward(tmp_path):
    init = _micro_model(tmp_path / "init")
    out = train_grpo(init, tmp_path / "run", _toy_items(8), _says_a, MICRO, heldout=_toy_items(4),
                     device="cpu", max_len=64, progress=False)
    rewards = [m["reward_mean"] for m in out["metrics"]]
    assert len(rewards) == MICRO.max_steps
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert last > first + 0.5, rewards
    assert all(m["kl"] >= 0 and m["entropy"] > 0 for m in out["metrics"])
    assert out["metrics"][-1]["kl"] > 0          # the policy moved away from its start
    assert [h["step"] for h in out["heldout"]] == [0, 4, 8]
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def test_killed_run_resumes_from_checkpoint(tmp_path):
    init = _micro_model(tmp_path / "init")
    cfg = dataclasses.replace(MICRO, max_steps=3, save_every=1, prompts_per_step=2, rollouts_per_prompt=2,
                              mini_batch=2)
    calls = {"n": 0}

    def crashing(records, responses):
        calls["n"] += 1
        if calls["n"] > 2:              # dies while grading step 3's rollouts
            raise RuntimeError("killed")
        return _says_a(records, responses)

    with pytest.raises(RuntimeError, match="killed"):
        train_grpo(init, tmp_path / "run", _toy_items(4), crashing, cfg, device="cpu", max_len=64,
                   progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2
    out = train_grpo(init, tmp_path / "run", _toy_items(4), _says_a, cfg, device="cpu", max_len=64,
                     progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    assert out["steps"] == 3 and not (tmp_path / "run" / "checkpoint").exists()


def test_changed_settings_start_a_clean_run(tmp_path):
    init = _micro_model(tmp_path / "init")
    cfg = dataclasses.replace(MICRO, max_steps=1, prompts_per_step=2, rollouts_per_prompt=2, mini_batch=2)
    train_grpo(init, tmp_path / "run", _toy_items(2), _says_a, cfg, device="cpu", max_len=64, progress=False)
    out = train_grpo(init, tmp_path / "run", _toy_items(2), _says_a, dataclasses.replace(cfg, max_steps=2),
                     device="cpu", max_len=64, progress=False)
    assert out["steps"] == 2


# ----------------------------------------------------------------------------- log-probs and sharding

def test_chunked_logps_equal_full_logits_and_their_gradients(tmp_path):
    """The LM head by chunks (checkpointed) gives the full log-softmax's values and gradients,
    with and without activation checkpointing of the decoder."""
    from transformers import AutoModelForCausalLM

    from spotlib.rl.math import PolicyLogps
    from spotlib.rl.grpo import _checkpoint_activations

    path = _micro_model(tmp_path / "m")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 20, (3, 14), generator=gen)
    attention = torch.ones_like(ids)
    completion = torch.zeros_like(ids)
    completion[0, 4:] = completion[1, 9:] = completion[2, 6:12] = 1
    target = completion[:, 1:].bool()
    results = []
    for chunk, checkpointing in ((3, False), (3, True), (10_000, False)):
        lm = AutoModelForCausalLM.from_pretrained(path)
        if checkpointing:
            _checkpoint_activations(lm)
        logps, entropy = PolicyLogps(lm, chunk_tokens=chunk).train()(ids, attention, completion, with_entropy=True)
        logps.sum().backward()
        results.append((logps.detach(), torch.cat([p.grad.flatten() for p in lm.parameters()])))
        full = torch.log_softmax(lm(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)
        expected = full.gather(-1, ids[:, 1:, None])[..., 0] * target
        assert torch.allclose(logps, expected, atol=1e-5)
        assert (logps[~target] == 0).all() and (entropy[target] > 0).all()
    for logps, grads in results[1:]:
        assert torch.allclose(logps, results[0][0], atol=1e-6)
        assert torch.allclose(grads, results[0][1], atol=1e-6)


def test_every_prompt_group_has_exactly_one_owner():
    from spotlib.rl.schedule import layout, rank_share, split_even

    cfg = RLConfig(prompts_per_step=12, mini_batch=4, rollouts_per_prompt=8, micro_batch=5)
    assert layout(cfg, 2) == (2, 4)                       # 2 groups = 16 sequences per rank, 4 micro-batches
    shares = [rank_share(list(range(12)), 4, 2, r) for r in (0, 1)]
    assert shares == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    assert sorted(shares[0] + shares[1]) == list(range(12))
    assert [len(p) for p in split_even(range(16), 4)] == [4, 4, 4, 4]
    assert [len(p) for p in split_even(range(7), 3)] == [3, 2, 2]
    with pytest.raises(ValueError, match="rl.mini_batch=4: expected a multiple of the 3"):
        layout(cfg, 3)
    with pytest.raises(ValueError, match="rl.prompts_per_step=12: expected a multiple of rl.mini_batch=5"):
        layout(dataclasses.replace(cfg, mini_batch=5), 1)
