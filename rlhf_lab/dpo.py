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

import math
import random

import torch
from tqdm.auto import tqdm

from .data import IGNORE_INDEX, collate
from .losses import ranking_loss, sequence_logprobs
from .pretrain import cosine_schedule, gradient_step
from .reward import encode_groups, group_batch, pair_metrics, ranking_batches
from .sft import set_dropout
from .utils import set_seed


def answer_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) log π(answer | prompt) of right-padded rows: token log-probs summed where labels mark the answer."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = labels[:, 1:]
    return sequence_logprobs(logits, targets, (targets != IGNORE_INDEX).float())


@torch.no_grad()
def group_logprobs(model, encoded_groups: list[dict], pad_token_id: int, batch_size: int = 64) -> list[list[float]]:
    """log π(answer | prompt) of every answer of every encoded group (the frozen reference's, once)."""
    flat = [e for g in encoded_groups for e in g["encoded"]]
    device = next(model.parameters()).device
    values: list[float] = []
    for start in range(0, len(flat), batch_size):
        batch = {k: t.to(device) for k, t in collate(flat[start:start + batch_size], pad_token_id).items()}
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
    reference_lp = group_logprobs(reference, encoded, tokenizer.pad_token_id)
    return [[beta * (p - r) for p, r in zip(ps, rs)] for ps, rs in zip(policy_lp, reference_lp)]


def train_dpo(policy, reference, tokenizer, train_groups: list[dict], valid_groups: list[dict], config,
              callback=None, progress: bool = True):
    """Train `policy` in place on ranking groups against the frozen `reference`; returns (policy, history)
    with the implicit reward's validation log loss and pairwise accuracy, `config.evals_per_epoch` times an epoch."""
    set_seed(config.seed)
    rng = random.Random(config.seed)
    device = next(policy.parameters()).device
    for model in (policy, reference):
        set_dropout(model, 0.0)  # log π and log π_ref must be comparable: no dropout noise in either
        model.eval()
    reference.requires_grad_(False)
    train = encode_groups(tokenizer, train_groups, config.max_length)
    for g, lp in zip(train, group_logprobs(reference, train, tokenizer.pad_token_id)):
        g["reference_logprobs"] = lp
    steps_per_epoch = math.ceil(len(train) / config.groups_per_batch)
    total = config.epochs * steps_per_epoch
    eval_at = {round(steps_per_epoch * k / config.evals_per_epoch) for k in range(1, config.evals_per_epoch + 1)}
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)

    def evaluate(step, losses):
        rewards = implicit_rewards(policy, reference, tokenizer, valid_groups, config.beta, config.max_length)
        metrics = pair_metrics(valid_groups, rewards)
        history.append({"step": step, "epoch": step / steps_per_epoch,
                        "train_loss": sum(losses) / len(losses) if losses else None,
                        "valid_loss": metrics["log_loss"], "valid_accuracy": metrics["accuracy"]})
        if callback:
            callback(history)

    history, step = [], 0
    evaluate(0, [])
    bar = tqdm(total=total, desc="DPO", disable=not progress, mininterval=1.0)
    for _ in range(config.epochs):
        losses = []
        for k, batch_groups in enumerate(ranking_batches(train, config.groups_per_batch, rng), start=1):
            batch = {key: t.to(device) for key, t in group_batch(batch_groups, tokenizer.pad_token_id).items()}
            reference_lp = torch.tensor([lp for g in batch_groups for lp in g["reference_logprobs"]], device=device)
            optimizer.param_groups[0]["lr"] = cosine_schedule(step, total, config.warmup_steps, config.lr)
            policy_lp = answer_logprobs(policy, batch["input_ids"], batch["attention_mask"], batch["labels"])
            loss = ranking_loss(config.beta * (policy_lp - reference_lp), batch["winners"], batch["losers"],
                                batch["groups"])
            gradient_step(policy, optimizer, loss, config.grad_clip)
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if k in eval_at:
                evaluate(step, losses)
                losses = []
    bar.close()
    return policy, history
