"""Every loss of the course in one readable place.

Each function takes plain tensors and returns a scalar, so a notebook can write the same
formula out by hand on one batch and compare.
"""
from __future__ import annotations

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
