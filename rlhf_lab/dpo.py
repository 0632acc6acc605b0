"""DPO (Rafailov et al., 2023): preference learning without a reward model or RL.

The policy's implicit reward for an answer is β·(log π(y|x) − log π_SFT(y|x)), its summed
answer log-probs against the frozen SFT model's. DPO fits that reward to the rankings with the
reward model's own loss: a ranking of K answers is one batch element, each answer forwarded
once, and the loss averages −log σ(r_w − r_l) over its untied pairs. For K = 2 that is the DPO
paper's loss exactly (`losses.dpo_loss`); for K > 2 it is what the paper's Plackett–Luce
section suggests and what our RM does, instead of keeping one pair per ranking and throwing
the other C(K, 2) − 1 comparisons away.
"""
from __future__ import annotations

import torch

from .data import collate
from .losses import token_logprobs
from .models import labelled_logits
from .reward import encode_groups, fit_rankings, pair_metrics
from .sft import set_dropout
from .utils import set_seed


def answer_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) log π(answer | prompt) of right-padded rows: token log-probs summed where labels mark the answer
    (the LM head runs at those tokens only: `models.labelled_logits`)."""
    logits, targets, rows = labelled_logits(model, input_ids, attention_mask, labels)
    logprobs = token_logprobs(logits, targets)
    return logprobs.new_zeros(len(input_ids)).index_add(0, rows, logprobs)


LOGITS_BUDGET = 2**25  # logits per forward (128 MB of float32) when scoring many answers without gradients


@torch.no_grad()
def group_logprobs(model, encoded_groups: list[dict], pad_token_id: int, batch_size: int = 64) -> list[list[float]]:
    """log π(answer | prompt) of every answer of every encoded group (the frozen reference's, once).

    A forward's logits are batch × length × vocabulary floats: 64 answers of 150 tokens are 39 MB for
    the course's 2,048-token vocabulary but 1.9 GB for a real model's 49,152, twice over in log-softmax.
    So the batch shrinks until its logits fit `LOGITS_BUDGET` (the course's models keep batches of 64)."""
    flat = [e for g in encoded_groups for e in g["encoded"]]
    longest = max((len(e["input_ids"]) for e in flat), default=1)
    batch_size = max(1, min(batch_size, LOGITS_BUDGET // (longest * model.config.vocab_size)))
    device = next(model.parameters()).device
    values: list[float] = []
    for start in range(0, len(flat), batch_size):
        batch = collate(flat[start:start + batch_size], pad_token_id, device)
        values += answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"]).tolist()
    out = []
    for g in encoded_groups:
        out.append(values[:len(g["encoded"])])
        values = values[len(g["encoded"]):]
    return out


def implicit_rewards(policy, reference, tokenizer, groups: list[dict], beta: float, max_length: int = 256):
    """β·(log π − log π_ref) of every answer of every group: DPO's reward model, read off the policy."""
    encoded = encode_groups(tokenizer, groups, max_length)
    policy_lp = group_logprobs(policy, encoded, tokenizer.pad_token_id)
    return _log_ratios(beta, policy_lp, group_logprobs(reference, encoded, tokenizer.pad_token_id))


def _log_ratios(beta: float, policy_lp: list[list[float]], reference_lp: list[list[float]]) -> list[list[float]]:
    return [[beta * (p - r) for p, r in zip(ps, rs)] for ps, rs in zip(policy_lp, reference_lp)]


def train_dpo(policy, reference, tokenizer, train_groups: list[dict], valid_groups: list[dict], config,
              callback=None, progress: bool = True):
    """Train `policy` in place on ranking groups against the frozen `reference`; returns (policy, history)
    with the implicit reward's validation log loss and pairwise accuracy, `config.evals_per_epoch` times an epoch."""
    set_seed(config.seed)
    for model in (policy, reference):
        set_dropout(model, 0.0)  # log π and log π_ref must be comparable: no dropout noise in either
        model.eval()
    reference.requires_grad_(False)
    train = encode_groups(tokenizer, train_groups, config.max_length)
    for g, lp in zip(train, group_logprobs(reference, train, tokenizer.pad_token_id)):
        g["reference_logprobs"] = lp  # the frozen reference's log-probs, computed once
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)

    def implicit(batch, groups):
        reference_lp = torch.tensor([lp for g in groups for lp in g["reference_logprobs"]], device=batch["labels"].device)
        return config.beta * (answer_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["labels"])
                              - reference_lp)

    valid = encode_groups(tokenizer, valid_groups, config.max_length)
    valid_reference = group_logprobs(reference, valid, tokenizer.pad_token_id)  # also computed once

    def valid_metrics():
        policy_lp = group_logprobs(policy, valid, tokenizer.pad_token_id)
        return pair_metrics(valid_groups, _log_ratios(config.beta, policy_lp, valid_reference))

    history = fit_rankings(policy, optimizer, train, tokenizer.pad_token_id, config.groups_per_batch, config, implicit,
                           valid_metrics, callback, progress, desc="DPO")
    return policy, history
