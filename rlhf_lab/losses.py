"""Every loss of the course in one readable place.

Each function takes plain tensors and returns a scalar, so a notebook can write the same
formula out by hand on one batch and compare.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target_t | tokens before t) for each position: logits[:, t] predicts targets[:, t]."""
    safe = targets.clamp(min=0)  # ignored positions (-100) are gathered at 0 and masked by callers
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token negative log-likelihood over the labelled (response) tokens.

    logits: (batch, time, vocab) for input_ids; labels: (batch, time), -100 where no loss.
    Position t predicts token t + 1, hence the shift.
    """
    logits, targets = logits[:, :-1], labels[:, 1:]
    mask = targets != IGNORE_INDEX
    if not mask.any():
        raise ValueError("no labelled tokens in this batch: every label is -100")
    return -(token_logprobs(logits, targets) * mask).sum() / mask.sum()


def ranking_loss(rewards: torch.Tensor, winners: torch.Tensor, losers: torch.Tensor,
                 groups: torch.Tensor | None = None) -> torch.Tensor:
    """The reward model's loss: −1/P_k · Σ log σ(r(x, y_w) − r(x, y_l)) over the P_k untied pairs
    of each ranking k, averaged over the rankings that have pairs. P_k is the paper's C(K,2) when
    nothing is tied; tied pairs carry no preference, so they count in neither sum nor divisor.

    rewards: (N,) one score per answer; winners, losers: (P,) indices into it per pair;
    groups: (P,) which ranking each pair comes from (None: every pair weighs the same). A
    ranking without pairs (all tied) is skipped; a batch without any pair raises ValueError,
    like `sft_loss`: there is nothing to learn from, and a silent 0 would still step the optimizer.
    """
    if winners.numel() == 0:
        raise ValueError("no pairs in this batch: it is empty, or every ranking in it is a complete tie")
    nll = -F.logsigmoid(rewards[winners] - rewards[losers])
    if groups is None:
        return nll.mean()
    n_groups = int(groups.max()) + 1
    per_group = torch.zeros(n_groups, dtype=nll.dtype, device=nll.device).index_add(0, groups, nll)
    counts = torch.bincount(groups, minlength=n_groups)
    has_pairs = counts > 0
    return (per_group[has_pairs] / counts[has_pairs]).mean()


# --- PPO ---------------------------------------------------------------------------------
# Tensors are (batch, response tokens); `mask` is 1 on the tokens the policy sampled (up to
# and including the stop token) and 0 on the padding after it.

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the real tokens of the whole batch; padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def kl_estimators(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token estimates of KL(π ‖ π_ref) from the sampled token only (Schulman's k1, k2, k3).

    With log r = log π_ref(y) − log π(y): k1 = −log r (unbiased, can be negative), k2 = (log r)²/2,
    k3 = (r − 1) − log r (unbiased and never negative). They are unbiased only when y was drawn
    from π itself, i.e. sampled at the temperature the log-probs are computed with.
    """
    log_ratio = ref_logprobs - logprobs
    return {"k1": -log_ratio, "k2": 0.5 * log_ratio ** 2, "k3": torch.expm1(log_ratio) - log_ratio}


def exact_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Per-position KL(π ‖ π_ref) summed over the whole vocabulary: what the estimators estimate.

    Tokens of probability 0 under π (−inf logits: masked vocabulary) add 0, where the plain
    product would be 0·(−inf) = NaN; a token π can pick and π_ref excludes makes the KL +inf.
    """
    logp, ref_logp = torch.log_softmax(logits.float(), dim=-1), torch.log_softmax(ref_logits.float(), dim=-1)
    p = logp.exp()
    return (p * (logp - ref_logp).masked_fill(p == 0, 0.0)).sum(dim=-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of softmax(logits), in nats; tokens of probability 0 (−inf logits) add 0."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(dim=-1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over each response (an episode ends at its stop token).

    δ_t = r_t + γ V_{t+1} − V_t (V after the last token is 0), A_t = δ_t + γλ A_{t+1};
    returns are A + V, the value function's targets. Padding gets 0.
    """
    advantages = torch.zeros_like(rewards)
    next_value = next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantages[:, t]
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate: −min(ρA, clip(ρ, 1 ± ε)A), ρ = π/π_old, averaged over tokens.

    Also returns the share of tokens where clipping was active and approx_kl, the k3 estimate
    (ρ − 1) − log ρ of KL(π_old ‖ π): the two numbers that say whether an update went too far.
    The tokens were sampled from π_old, under which ρ − 1 has mean 0, so the mean is
    E_old[−log ρ] = KL(π_old ‖ π); with π_old/π in place of ρ it would not be a KL at all.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped, clipped = -advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        log_ratio = logprobs - old_logprobs
        stats = {"clip_fraction": masked_mean((clipped > unclipped).float(), mask).item(),
                 "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask).item()}
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """½·max((V − R)², (clip(V, V_old ± ε) − R)²) over tokens: the value may not move more than ε."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


# --- Beyond PPO: DPO, RLOO, best-of-N ------------------------------------------------------

def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
             beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO (Rafailov et al., 2023): −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]).

    Each argument is (P,) summed answer log-probs of a pair's winner or loser. β·(log π − log π_ref)
    is the policy's implicit reward; the stats say how often it ranks the pair right and by how much.
    """
    chosen_reward, rejected_reward = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    margin = chosen_reward - rejected_reward
    loss = -F.logsigmoid(margin).mean()
    with torch.no_grad():
        stats = {"reward_accuracy": (margin > 0).float().mean().item(), "reward_margin": margin.mean().item()}
    return loss, stats


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al., 2024): each of a prompt's k samples is judged
    against the mean reward of the other k − 1. rewards: (prompts, k) with k ≥ 2."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt for a leave-one-out baseline, got {k}")
    return rewards - (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n ‖ π) = log n − (n − 1)/n nats for the best of n samples of π (no ties)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n
