"""Stage 3: PPO with a per-token KL penalty, and PPO-ptx. Plain PyTorch, every knob visible.

One step = a rollout and an update. The rollout samples answers from the policy with the KV
cache, scores them with the reward model, and spreads the reward over tokens: −β·log(π/π_SFT)
on every token, plus the RM score on the last one. GAE turns rewards and the value model's
estimates into advantages; PPO then takes a few clipped gradient steps on them. The value
model starts as a copy of the reward model, the policy and the KL reference as the SFT model.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch

from . import unpadded
from .generation import decode_responses, drop_padding_columns, encode_prompts, generate_ids
from .losses import (entropy, exact_kl, gae, kl_estimators, masked_mean, masked_whiten, ppo_policy_loss,
                     ppo_value_loss, token_logprobs)
from .models import context_length, left_padded_positions, stop_token_ids
from .pretrain import gradient_step
from .reward import last_token_index, token_scores
from .sft import set_dropout
from .tokenizer import format_prompt
from .utils import progress_bar


@dataclass
class Rollout:
    """One batch of answers with everything the update needs; response tensors are (B, T)."""

    records: list[dict]
    texts: list[str]
    sequences: torch.Tensor  # (B, P + T) left-padded prompt, then the answer, then padding
    attention_mask: torch.Tensor
    prompt_width: int  # P
    response_ids: torch.Tensor
    mask: torch.Tensor  # 1.0 on sampled tokens up to and including the stop
    logprobs: torch.Tensor  # log π_old(token) at the sampling temperature
    ref_logprobs: torch.Tensor  # log π_SFT(token), same temperature
    values: torch.Tensor  # V(state before each token)
    scores: torch.Tensor  # (B,) RM score, after the missing-EOS penalty
    rewards: torch.Tensor  # per token: −β·k1, plus the score on the last token
    advantages: torch.Tensor
    returns: torch.Tensor


class AdaptiveKL:
    """β that tracks a target KL: raised when the policy drifts further, lowered when it stays
    closer (proportional control, clipped to ±20% error, as in Ziegler et al., 2019)."""

    def __init__(self, beta: float, target: float | None, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_answers: int) -> None:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.beta *= 1 + error * n_answers / self.horizon


class RunningStd:
    """Running standard deviation of the RM scores (Welford), for optional reward normalization."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, values: list[float]) -> None:
        for v in values:
            self.n += 1
            delta = v - self.mean
            self.mean += delta / self.n
            self.m2 += delta * (v - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 1.0


def response_logits(model, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                    temperature: float) -> torch.Tensor:
    """(B, T, V) logits / temperature at the positions that predict the answer's tokens. Rows are
    forwarded in groups without their padding (`unpadded`), and the LM head runs only at those
    positions (`logits_to_keep`): over the prompt it would be wasted work. Zeros after an answer's
    group ends (padding, which callers mask)."""
    def forward(ids, mask, n):
        return model(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask),
                     logits_to_keep=n).logits

    logits = unpadded.per_position(forward, sequences, attention_mask, first_column=prompt_width - 1)
    return logits[:, :-1].float() / temperature


def response_values(value_model, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int):
    """(B, T) V of the state before each answer token (the value head read at the previous position)."""
    return token_scores(value_model, sequences, attention_mask, unpadded.GROUP_SIZE)[:, prompt_width - 1:-1]


class PPOTrainer:
    """policy and value_model are trained; reference is frozen. `score_fn(sequences,
    attention_mask, texts)` gives one reward per answer (the RM, or any function in tests);
    `gold_fn(records, texts)`, if given, is logged beside it and never trained on."""

    def __init__(self, policy, reference, value_model, tokenizer, score_fn, prompt_records: list[dict], config,
                 gold_fn=None, ptx_blocks: torch.Tensor | None = None):
        self.policy, self.reference, self.value_model = policy, reference, value_model
        self.tokenizer, self.score_fn, self.gold_fn, self.config = tokenizer, score_fn, gold_fn, config
        self.records = prompt_records
        self.ptx_blocks = ptx_blocks
        if not config.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {config.temperature}; PPO needs a stochastic policy: "
                             f"its ratio and KL penalty are log-probabilities at that temperature of sampled "
                             f"tokens, and greedy decoding (0) has none")
        if config.ptx_coef > 0 and ptx_blocks is None:
            raise ValueError("ptx_coef > 0 needs pretraining text: pass ptx_blocks (see pretrain.pack_documents)")
        for model in (m for m in (policy, reference, value_model) if m is not None):
            set_dropout(model, 0.0)
            model.eval()  # no dropout anywhere: the ratio π/π_old must be 1 before the first update
        reference.requires_grad_(False)
        policy.requires_grad_(True)
        if value_model is not None:
            value_model.requires_grad_(True)  # a copy of the frozen RM starts frozen too
            self.value_optimizer = torch.optim.AdamW(value_model.parameters(), lr=config.value_lr, weight_decay=0.0)
        self.device = next(policy.parameters()).device
        self.stop_ids = stop_token_ids(tokenizer, policy)
        self.policy_optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
        self.kl_controller = AdaptiveKL(config.kl_coef, config.target_kl, config.kl_horizon)
        self.score_std = RunningStd()
        self.rng = random.Random(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        # PPO-ptx draws its corpus blocks from a stream of its own: turning it on leaves the
        # prompts, samples and minibatches of a seed as they were, so PPO and PPO-ptx compare.
        self.ptx_generator = torch.Generator().manual_seed(random.Random(f"ptx-{config.seed}").randrange(2 ** 63))
        self.order: list[int] = []
        self.step_count = 0
        self.evaluations: list[dict] = []

    def _next_prompt(self) -> dict:
        """The next prompt of a walk through reshuffled copies of the prompt set."""
        if not self.order:
            self.order = list(range(len(self.records)))
            self.rng.shuffle(self.order)
        return self.records[self.order.pop()]

    def _next_records(self) -> list[dict]:
        """batch_size prompts."""
        return [self._next_prompt() for _ in range(self.config.batch_size)]

    @torch.no_grad()
    def generate(self, records: list[dict], temperature: float | None = None, generator: torch.Generator | None = None):
        """Policy answers to `records` (KV cache, left-padded prompts): (generation, prompt width, seconds)."""
        c = self.config
        prompts = [format_prompt(self.tokenizer, r["prompt"]) for r in records]
        ids, prompt_mask = encode_prompts(self.tokenizer, prompts, context_length(self.policy) - c.max_new_tokens)
        ids, prompt_mask = (t.to(self.device) for t in drop_padding_columns(ids, prompt_mask))
        start = time.perf_counter()
        gen = generate_ids(self.policy, ids, prompt_mask, c.max_new_tokens, stop_ids=self.stop_ids,
                           pad_token_id=self.tokenizer.pad_token_id,
                           temperature=c.temperature if temperature is None else temperature,
                           generator=generator or self.generator)
        return gen, ids.shape[1], time.perf_counter() - start

    @torch.no_grad()
    def rollout(self, records: list[dict]) -> tuple[Rollout, dict]:
        c = self.config
        gen, width, sample_time = self.generate(records)
        seq, attn = gen.sequences, gen.attention_mask
        mask = gen.response_mask.float()
        logits, ref_logits, logprobs, ref_logprobs = self._logprobs(gen, width)
        values = self._values(seq, attn, width) * mask
        texts = [t.strip() for t in decode_responses(self.tokenizer, gen, self.stop_ids)]

        raw = self.score_fn(seq, attn, texts).float().to(self.device)
        last = last_token_index(gen.response_mask)
        finished = torch.isin(gen.response_ids[torch.arange(len(seq)), last], torch.tensor(self.stop_ids, device=self.device))
        scores = raw.clone()
        if c.missing_eos_penalty is not None:
            scores -= c.missing_eos_penalty * (~finished).float()
        if c.normalize_rewards:
            self.score_std.update(scores.tolist())
            scores = scores / self.score_std.std
        kl = {name: (v * mask).sum(dim=1) for name, v in kl_estimators(logprobs, ref_logprobs).items()}
        beta = self.kl_controller.beta
        rewards = -beta * (logprobs - ref_logprobs) * mask
        rewards[torch.arange(len(seq)), last] += scores
        advantages, returns = self._advantages(rewards, values, mask)
        if c.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        n_tokens = int(mask.sum())
        stats = {"reward": raw.mean().item(), "score": scores.mean().item(), "beta": beta,
                 "kl_k1": kl["k1"].mean().item(), "kl_k3": kl["k3"].mean().item(),
                 "kl_exact": (exact_kl(logits, ref_logits) * mask).sum(dim=1).mean().item(),
                 "entropy": masked_mean(entropy(logits), mask).item(), "length": mask.sum(dim=1).mean().item(),
                 "finished": finished.float().mean().item(), "sample_tokens_per_s": n_tokens / sample_time}
        if self.gold_fn is not None:
            stats["gold"] = sum(self.gold_fn(records, texts)) / len(texts)
        rollout = Rollout(records, texts, seq, attn, width, gen.response_ids, mask, logprobs, ref_logprobs, values,
                          scores, rewards, advantages, returns)
        return rollout, stats

    def _values(self, sequences: torch.Tensor, attention_mask: torch.Tensor, width: int) -> torch.Tensor:
        return response_values(self.value_model, sequences, attention_mask, width)

    def _advantages(self, rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
        """(advantages, returns): GAE on the per-token rewards and the value model's estimates."""
        return gae(rewards, values, mask, self.config.gamma, self.config.lam)

    def _logprobs(self, gen, width: int):
        """Policy and reference logits over the answers, and the sampled tokens' log-probs (0 on padding)."""
        seq, attn, mask = gen.sequences, gen.attention_mask, gen.response_mask.float()
        logits = response_logits(self.policy, seq, attn, width, self.config.temperature)
        ref_logits = response_logits(self.reference, seq, attn, width, self.config.temperature)
        return (logits, ref_logits, token_logprobs(logits, gen.response_ids) * mask,
                token_logprobs(ref_logits, gen.response_ids) * mask)

    @torch.no_grad()
    def evaluate(self, records: list[dict]) -> dict:
        """Mean RM reward, gold score and KL (k1) of answers to a fixed prompt set, sampled with a fixed
        seed: curves without the batch-to-batch noise of the training prompts (for over-optimization)."""
        gen, width, _ = self.generate(records, generator=torch.Generator(device=self.device).manual_seed(self.config.seed))
        _, _, logprobs, ref_logprobs = self._logprobs(gen, width)
        texts = [t.strip() for t in decode_responses(self.tokenizer, gen, self.stop_ids)]
        result = {"eval_reward": self.score_fn(gen.sequences, gen.attention_mask, texts).float().mean().item(),
                  "eval_kl": (logprobs - ref_logprobs).sum(dim=1).mean().item()}
        if self.gold_fn is not None:
            result["eval_gold"] = sum(self.gold_fn(records, texts)) / len(texts)
        return result

    def _ptx_loss(self) -> torch.Tensor:
        """Mean next-token NLL on random corpus blocks: −E_pretrain[log π(x)] of PPO-ptx."""
        rows = torch.randint(len(self.ptx_blocks), (self.config.ptx_batch_size,), generator=self.ptx_generator)
        blocks = self.ptx_blocks[rows].to(self.device)
        return self.policy(input_ids=blocks, labels=blocks).loss

    def _step(self, optimizer, model, loss: torch.Tensor, what: str) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"PPO step {self.step_count}: the {what} loss is {loss.item()}; lower the learning rate "
                f"(lr={self.config.lr}, value_lr={self.config.value_lr}) or raise kl_coef")
        gradient_step(model, optimizer, loss, self.config.grad_clip)

    def update(self, r: Rollout) -> dict:
        """ppo_epochs passes of minibatch steps on one rollout; returns the mean diagnostics."""
        c = self.config
        totals: dict[str, float] = {}
        n = 0
        for _ in range(c.ppo_epochs):
            order = list(range(len(r.texts)))
            self.rng.shuffle(order)
            for start in range(0, len(order), c.minibatch_size):
                mb = torch.tensor(order[start:start + c.minibatch_size], device=self.device)
                seq, attn, mask = r.sequences[mb], r.attention_mask[mb], r.mask[mb]
                logits = response_logits(self.policy, seq, attn, r.prompt_width, c.temperature)
                logprobs = token_logprobs(logits, r.response_ids[mb])
                policy_loss, stats = ppo_policy_loss(logprobs, r.logprobs[mb], r.advantages[mb], mask, c.clip)
                loss = policy_loss
                if c.ptx_coef > 0:
                    ptx = self._ptx_loss()
                    loss = loss + c.ptx_coef * ptx
                    stats["ptx_loss"] = ptx.item()
                self._step(self.policy_optimizer, self.policy, loss, "policy")
                stats["policy_loss"] = policy_loss.item()
                if self.value_model is not None:
                    values = response_values(self.value_model, seq, attn, r.prompt_width)
                    value_loss = ppo_value_loss(values, r.values[mb], r.returns[mb], mask, c.value_clip)
                    self._step(self.value_optimizer, self.value_model, value_loss, "value")
                    stats["value_loss"] = value_loss.item()
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0.0) + v
                n += 1
        return {k: v / n for k, v in totals.items()}

    def step(self) -> dict:
        """One rollout and one update; returns the step's statistics."""
        start = time.perf_counter()
        rollout, stats = self.rollout(self._next_records())
        rollout_time = time.perf_counter() - start
        start = time.perf_counter()
        stats.update(self.update(rollout))
        self.kl_controller.update(stats["kl_k1"], len(rollout.texts))
        self.step_count += 1
        stats.update(step=self.step_count, rollout_s=rollout_time, update_s=time.perf_counter() - start)
        self.last_rollout = rollout
        return stats

    def train(self, callback=None, progress: bool = True, eval_records: list[dict] | None = None,
              eval_every: int = 5) -> list[dict]:
        """config.steps steps; `callback(history)` after each (live plots). With `eval_records`,
        `evaluate` runs before the first step and every `eval_every` steps; its results, with the
        step, are appended to `self.evaluations`."""
        history = []
        if eval_records:
            self.evaluations.append({"step": self.step_count, **self.evaluate(eval_records)})
        name = type(self).__name__.removesuffix("Trainer")  # PPO, RLOO
        bar = progress_bar(range(self.config.steps), desc=name, disable=not progress, mininterval=1.0)
        for _ in bar:
            history.append(self.step())
            if eval_records and self.step_count % eval_every == 0:
                self.evaluations.append({"step": self.step_count, **self.evaluate(eval_records)})
            bar.set_postfix(reward=f"{history[-1]['reward']:.2f}", kl=f"{history[-1]['kl_k1']:.2f}", refresh=False)
            if callback:
                callback(history)
        return history
