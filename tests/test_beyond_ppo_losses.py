"""DPO loss, RLOO advantages and the best-of-n KL against slow, obvious computations."""
import math
import random

import pytest
import torch

from rlhf_lab.losses import best_of_n_kl, dpo_loss, rloo_advantages


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_by_hand(beta):
    torch.manual_seed(1)
    chosen, rejected, ref_chosen, ref_rejected = (torch.randn(5) * 3 for _ in range(4))
    loss, stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    margins = [beta * ((c - rc) - (r - rr)) for c, r, rc, rr in
               zip(chosen.tolist(), rejected.tolist(), ref_chosen.tolist(), ref_rejected.tolist())]
    expected = sum(math.log(1 + math.exp(-m)) for m in margins) / len(margins)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert stats["reward_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / len(margins))
    assert stats["reward_margin"] == pytest.approx(sum(margins) / len(margins), abs=1e-5)


def test_dpo_loss_is_log_2_at_the_reference_and_pushes_the_winner_up():
    chosen = torch.tensor([-5.0, -7.0], requires_grad=True)
    rejected = torch.tensor([-6.0, -4.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, chosen.detach(), rejected.detach(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))
    loss.backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises y_w, lowers y_l


def test_rloo_advantage_is_the_reward_minus_the_mean_of_the_others():
    rewards = torch.tensor([[1.0, 2.0, 6.0], [0.5, 0.5, -1.0]])
    got = rloo_advantages(rewards)
    for p in range(2):
        for i in range(3):
            others = [rewards[p, j].item() for j in range(3) if j != i]
            assert got[p, i].item() == pytest.approx(rewards[p, i].item() - sum(others) / 2)
    assert torch.allclose(got.sum(-1), torch.zeros(2), atol=1e-6)  # a baseline that adds no bias


def test_rloo_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.ones(3, 1))


@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_best_of_n_kl_matches_a_monte_carlo_estimate(n):
    """Best-of-n of a continuous distribution: the winner's CDF value u is the max of n uniforms and
    log(p_bon/p) = log n + (n − 1) log u; its mean is the KL."""
    rng = random.Random(n)
    draws = 200_000
    estimate = sum(math.log(n) + (n - 1) * math.log(max(rng.random() for _ in range(n))) for _ in range(draws)) / draws
    assert best_of_n_kl(n) == pytest.approx(estimate, abs=0.01)
    assert best_of_n_kl(1) == 0.0
