"""RLOO: REINFORCE with a leave-one-out baseline (Ahmadian et al., 2024), PPO without a value model.

Each prompt is answered k times. An answer's return is its RM score minus the per-token KL
penalty summed over its tokens (the same −β·log(π/π_SFT) as PPO's); its advantage is that return
minus the mean return of the prompt's other k − 1 answers, given to every one of its tokens. No
value model is trained or even run: that is the whole saving, measured in notebook 08.
"""
from __future__ import annotations

import torch

from .losses import rloo_advantages
from .ppo import PPOTrainer


class RLOOTrainer(PPOTrainer):
    """PPOTrainer's rollout, clipped policy update and KL bookkeeping, with k answers per prompt
    and leave-one-out advantages in place of the value model and GAE."""

    def __init__(self, policy, reference, tokenizer, score_fn, prompt_records: list[dict], config, gold_fn=None):
        k = config.samples_per_prompt
        if k < 2 or config.batch_size % k:
            raise ValueError(f"RLOO needs samples_per_prompt >= 2 dividing batch_size; got {k} and {config.batch_size}")
        super().__init__(policy, reference, None, tokenizer, score_fn, prompt_records, config, gold_fn=gold_fn)

    def _next_records(self) -> list[dict]:
        """batch_size / k prompts, each k times in a row (rows p·k ... p·k + k − 1 share a prompt)."""
        k = self.config.samples_per_prompt
        return [record for _ in range(self.config.batch_size // k) for record in [self._next_prompt()] * k]

    def _values(self, sequences: torch.Tensor, attention_mask: torch.Tensor, width: int) -> torch.Tensor:
        return torch.zeros(sequences.shape[0], sequences.shape[1] - width, device=sequences.device)

    def _advantages(self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
        """Each answer's return (its rewards summed) minus the mean of its prompt's other answers,
        on every token it sampled; returns are unused (no value model), so zeros."""
        returns = rewards.sum(dim=1).view(-1, self.config.samples_per_prompt)
        advantages = rloo_advantages(returns).reshape(-1, 1) * mask
        return advantages, torch.zeros_like(rewards)
