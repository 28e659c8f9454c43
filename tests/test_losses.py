"""Every objective against hand-derived numbers; the tether weights against autograd; δ by hand."""
import math

import pytest
import torch

from spotlib import losses as L

BETA = 0.1
# Summed log-probs for two examples; rewards r = β(π − ref) are chosen to be simple numbers.
PC = torch.tensor([-10.0, -20.0])   # policy chosen
RC = torch.tensor([-20.0, -20.0])   # ref chosen      -> r⁺ = [1.0, 0.0]
PR = torch.tensor([-30.0, -5.0])    # policy rejected
RR = torch.tensor([-10.0, -15.0])   # ref rejected    -> r⁻ = [-2.0, 1.0]


def ls(x):  # log σ(x) by hand
    return -math.log1p(math.exp(-x))


def test_rewards_are_beta_log_ratios():
    _, rc, rr = L.bce(PC, PR, RC, RR, beta=BETA)
    assert rc.tolist() == pytest.approx([1.0, 0.0])
    assert rr.tolist() == pytest.approx([-2.0, 1.0])
    assert not rc.requires_grad


def test_sft_is_token_mean_nll():
    losses, rc, rr = L.sft(PC, chosen_counts=torch.tensor([5.0, 4.0]))
    assert losses.tolist() == pytest.approx([2.0, 5.0])
    assert rc is None and rr is None
    _, rc, _ = L.sft(PC, None, RC, None, beta=BETA, chosen_counts=torch.tensor([5.0, 4.0]))
    assert rc.tolist() == pytest.approx([1.0, 0.0])


def test_kl_sft_adds_scaled_token_kl():
    losses, _, _ = L.kl_sft(PC, chosen_counts=torch.tensor([5.0, 4.0]),
                            token_kl_sums=torch.tensor([1.0, 2.0]), kl_coef=0.5)
    assert losses.tolist() == pytest.approx([2.0 + 0.5 * 1.0 / 5, 5.0 + 0.5 * 2.0 / 4])


def test_token_kl_exact_over_vocab():
    p = torch.tensor([[[math.log(0.5), math.log(0.5)], [0.0, 0.0]]])
    q = torch.tensor([[[math.log(0.25), math.log(0.75)], [5.0, 5.0]]])
    mask = torch.tensor([[1, 0]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert L.token_kl(p, q, mask).item() == pytest.approx(expected, rel=1e-5)
    assert L.token_kl(p, p, torch.ones(1, 2)).item() == pytest.approx(0.0, abs=1e-6)


def test_dpo_hand_values():
    losses, _, _ = L.dpo(PC, PR, RC, RR, beta=BETA)
    assert losses.tolist() == pytest.approx([-ls(1.0 - (-2.0)), -ls(0.0 - 1.0)], rel=1e-5)


def test_reward_sft_hand_values():
    losses, _, rr = L.reward_sft(PC, None, RC, None, beta=BETA)
    assert losses.tolist() == pytest.approx([-ls(1.0), -ls(0.0)], rel=1e-5)
    assert rr is None


def test_bce_hand_values():
    losses, _, _ = L.bce(PC, PR, RC, RR, beta=BETA)
    assert losses.tolist() == pytest.approx([-ls(1.0) - ls(2.0), -ls(0.0) - ls(-1.0)], rel=1e-5)


def test_bco_hand_values_and_none_equals_bce():
    delta = 0.5
    losses, _, _ = L.bco(PC, PR, RC, RR, beta=BETA, delta=delta)
    expected = [-ls(1.0 - delta) - ls(-(-2.0 - delta)), -ls(0.0 - delta) - ls(-(1.0 - delta))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)
    tracker = L.DeltaTracker("none")
    d = tracker.update(torch.tensor([3.0]), torch.tensor([1.0]))
    assert d == 0.0
    bco_none, _, _ = L.bco(PC, PR, RC, RR, beta=BETA, delta=d)
    assert torch.equal(bco_none, L.bce(PC, PR, RC, RR, beta=BETA)[0])


def test_running_mean_matches_hand_computation():
    tracker = L.DeltaTracker("running_mean")
    assert tracker.value == 0.0
    batches = [([1.0, 3.0], [0.0, 0.0]),    # mean 1.0
               ([2.0], [-4.0]),             # mean -1.0
               ([6.0, 6.0, 6.0], [0.0, 0.0, 0.0])]  # mean 3.0
    expected = [1.0, (1.0 - 1.0) / 2, (1.0 - 1.0 + 3.0) / 3]
    for (c, r), want in zip(batches, expected):
        got = tracker.update(torch.tensor(c), torch.tensor(r))
        assert got == pytest.approx(want)
    # δ is updated before the batch's loss: the value returned includes that batch.
    state = tracker.state_dict()
    other = L.DeltaTracker("running_mean")
    other.load_state_dict(state)
    assert other.update(torch.tensor([5.0]), torch.tensor([5.0])) == pytest.approx((1 - 1 + 3 + 5) / 4)


def test_ema_hand_computation():
    tracker = L.DeltaTracker("ema", decay=0.9)
    tracker.update(torch.tensor([2.0]), torch.tensor([0.0]))   # mean 1
    assert tracker.value == pytest.approx(0.1)
    tracker.update(torch.tensor([3.0]), torch.tensor([3.0]))   # mean 3
    assert tracker.value == pytest.approx(0.9 * 0.1 + 0.1 * 3)


def test_bad_delta_mode():
    with pytest.raises(ValueError, match="delta mode"):
        L.DeltaTracker("median")


@pytest.mark.parametrize("objective", ["sft", "kl_sft", "reward_sft", "dpo", "bce", "bco"])
def test_gradient_weights_match_autograd(objective):
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    counts = torch.tensor([5.0, 4.0])
    delta = 0.3
    if objective == "sft":
        losses = L.sft(pc, chosen_counts=counts)[0]
    elif objective == "kl_sft":
        losses = L.kl_sft(pc, chosen_counts=counts, token_kl_sums=torch.zeros(2), kl_coef=0.1)[0]
    elif objective == "reward_sft":
        losses = L.reward_sft(pc, None, RC, None, beta=BETA)[0]
    elif objective == "dpo":
        losses = L.dpo(pc, pr, RC, RR, beta=BETA)[0]
    elif objective == "bce":
        losses = L.bce(pc, pr, RC, RR, beta=BETA)[0]
    else:
        losses = L.bco(pc, pr, RC, RR, beta=BETA, delta=delta)[0]
    losses.sum().backward()
    r_pos = BETA * (PC - RC)
    r_neg = BETA * (PR - RR)
    w_pos, w_neg = L.gradient_weights(objective, r_pos, r_neg, beta=BETA, delta=delta, chosen_counts=counts)
    assert (-pc.grad).tolist() == pytest.approx(w_pos.tolist(), rel=1e-5)
    grad_neg = pr.grad if pr.grad is not None else torch.zeros(2)
    assert grad_neg.tolist() == pytest.approx(w_neg.tolist(), rel=1e-5, abs=1e-12)


def test_tether_decays_with_reward():
    w0, _ = L.gradient_weights("reward_sft", torch.tensor([0.0]), beta=1.0)
    w10, _ = L.gradient_weights("reward_sft", torch.tensor([10.0]), beta=1.0)
    assert w0.item() == pytest.approx(0.5)
    assert w10.item() == pytest.approx(4.54e-5, rel=1e-2)
