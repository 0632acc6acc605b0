"""Stage 1: supervised fine-tuning on labeler demonstrations.

The paper trains 16 epochs with cosine decay and residual dropout 0.2, sees validation
loss overfit after about one epoch, and still picks a late checkpoint because the *score*
of sampled answers keeps improving. So this loop evaluates both every epoch — validation
loss and the mean score of answers sampled for validation prompts — and keeps the
checkpoint with the best score.
"""
from __future__ import annotations

import copy
import random
import warnings

import torch

from .data import collate, encode_demonstrations, length_buckets
from .evaluation import mean_scores, respond, score_all
from .losses import token_logprobs
from .models import labelled_logits
from .pretrain import cosine_schedule, gradient_step
from .utils import progress_bar, set_seed


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Set every dropout probability: GPT-2's `nn.Dropout` layers (residual, embedding and attention weights) and
    the plain `attention_dropout` number of attention modules that have no layer for it (Llama). DPO and PPO set 0
    here: log π and log π_ref must carry no dropout noise.

    The paper names only "residual dropout 0.2". Residual dropout alone gave a better SFT model (validation loss
    0.37 against 0.41, score 0.76-0.79 against 0.73-0.76), but the reward model trained on rankings of its answers
    stayed near chance on two seeds of three (50.8% and 52.8% validation accuracy against 61.4% and 57.5%; sampling
    seed 1's rankings hotter recovered only 56.6%), so every dropout gets p. Llama has no residual dropout: asking for
    p > 0 warns that only its attention gets it."""
    layers = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
            layers += 1
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = p
    if p > 0 and layers == 0:
        warnings.warn(f"{type(model).__name__} has no dropout layers (no residual dropout): dropout={p} applies to "
                      f"its attention only. Set SFTConfig(dropout=0.0) to train without dropout", stacklevel=2)


@torch.no_grad()
def mean_loss(model, examples: list[dict], pad_token_id: int, batch_size: int = 64) -> float:
    """Token-weighted mean SFT loss over `examples`, in eval mode (no dropout)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = collate(examples[i:i + batch_size], pad_token_id, model.device)
        logits, targets, _ = labelled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        nll = -token_logprobs(logits, targets)
        total += float(nll.sum())
        count += len(nll)
    return total / count


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`losses.sft_loss` of the model's logits on a collated batch (mean NLL of the labelled tokens), with the LM
    head run at those tokens only (`models.labelled_logits`): the same loss, a training step 15% faster."""
    logits, targets, _ = labelled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    if not len(targets):
        raise ValueError("no labelled tokens in this batch: every label is -100")
    return -token_logprobs(logits, targets).mean()


def train_sft(model, tokenizer, train_records: list[dict], valid_records: list[dict], config, world,
              score_records: list[dict], callback=None, progress: bool = True):
    """Fine-tune `model` in place; return (model at the best-scoring epoch, history).

    `score_records` are the validation prompts whose sampled answers are scored each epoch.
    """
    set_seed(config.seed)
    rng = random.Random(config.seed)
    pad = tokenizer.pad_token_id
    train = encode_demonstrations(tokenizer, train_records, config.max_length, config.mask_prompt)
    valid = encode_demonstrations(tokenizer, valid_records, config.max_length)  # loss on answers only
    lengths = [len(e["input_ids"]) for e in train]
    steps_per_epoch = -(-len(train) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    set_dropout(model, config.dropout)

    history, best, step = [], None, 0
    bar = progress_bar(total=total_steps, desc="SFT", disable=not progress, mininterval=1.0)
    for epoch in range(1, config.epochs + 1):
        model.train()
        running = []
        for batch_ids in length_buckets(lengths, config.batch_size, rng):
            batch = collate([train[i] for i in batch_ids], pad, model.device)
            for group in optimizer.param_groups:
                group["lr"] = cosine_schedule(step, total_steps, config.warmup_steps, config.lr)
            loss = answer_loss(model, batch)
            gradient_step(model, optimizer, loss, config.grad_clip)
            running.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{running[-1]:.3f}", refresh=False)  # see pretrain.py
        answers = respond(model, tokenizer, score_records, mode="chat", max_new_tokens=config.max_new_tokens,
                          temperature=config.temperature, seed=config.seed)
        scores = mean_scores(score_all(world, score_records, answers))
        history.append({"epoch": epoch, "step": step, "train_loss": sum(running) / len(running),
                        "valid_loss": mean_loss(model, valid, pad), **{f"valid_{k}": v for k, v in scores.items()},
                        "valid_answers": answers})  # kept so a reward model can pick the epoch later (notebook 04)
        if best is None or scores["overall"] > best[0]:
            best = (scores["overall"], epoch, copy.deepcopy(model.state_dict()))
        if callback:
            callback(history)
    bar.close()
    model.load_state_dict(best[2])
    set_dropout(model, 0.0)
    model.eval()
    for h in history:
        h["selected"] = h["epoch"] == best[1]
    return model, history
