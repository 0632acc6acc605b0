"""RLOO: k answers per prompt in a row, leave-one-out advantages from the KL-shaped returns, no
value model anywhere, and a short run that learns."""
import copy

import pytest
import torch

from rlhf_lab import ppo
from rlhf_lab.config import RLOOConfig
from rlhf_lab.rloo import RLOOTrainer
from test_ppo import perturbed_copy

ANIMALS = ["cat", "dog", "owl", "frog", "horse", "whale", "ant", "bee"]
RECORDS = [{"prompt": [{"role": "user", "content": f"Tell me about the {a}." + " Please." * (i % 3)}],
            "prompt_id": f"p{i}", "family": "animal"} for i, a in enumerate(ANIMALS)]


def rloo(tiny_model, tiny_tokenizer, score_fn, config, reference=None):
    return RLOOTrainer(copy.deepcopy(tiny_model), reference or copy.deepcopy(tiny_model), tiny_tokenizer, score_fn,
                       RECORDS, config)


def test_rollout_repeats_each_prompt_k_times_and_judges_each_answer_against_the_others(tiny_model, tiny_tokenizer):
    reference = perturbed_copy(tiny_model)
    config = RLOOConfig(batch_size=8, minibatch_size=4, samples_per_prompt=4, max_new_tokens=6, kl_coef=0.3,
                        whiten_advantages=False, missing_eos_penalty=None, seed=1)
    trainer = rloo(tiny_model, tiny_tokenizer, lambda seq, mask, texts: torch.arange(len(texts)).float(), config,
                   reference)
    records = trainer._next_records()
    assert [r["prompt_id"] for r in records[:4]] == [records[0]["prompt_id"]] * 4 != [records[4]["prompt_id"]] * 4
    r, _ = trainer.rollout(records)
    returns = [(torch.arange(8.0)[i] - 0.3 * (r.logprobs[i] - r.ref_logprobs[i]).sum()).item() for i in range(8)]
    for i in range(8):
        group = range(4 * (i // 4), 4 * (i // 4) + 4)
        baseline = sum(returns[j] for j in group if j != i) / 3
        expected = (returns[i] - baseline) * r.mask[i]
        assert torch.allclose(r.advantages[i], expected, atol=1e-5)
    assert (r.values == 0).all() and trainer.value_model is None


def test_samples_per_prompt_must_divide_the_batch(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="samples_per_prompt"):
        rloo(tiny_model, tiny_tokenizer, None, RLOOConfig(batch_size=6, samples_per_prompt=4))


def test_short_rloo_run_raises_a_trivially_learnable_reward(tiny_model, tiny_tokenizer, monkeypatch):
    """The reward of the short PPO run in test_ppo: the share of even token ids in the answer."""
    seen, real = [], ppo.generate_ids
    monkeypatch.setattr(ppo, "generate_ids", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])

    def even_share(sequences, attention_mask, texts):
        even = (seen[-1].response_ids % 2 == 0).float() * seen[-1].response_mask
        return even.sum(1) / seen[-1].response_mask.sum(1)

    config = RLOOConfig(seed=0, steps=30, batch_size=16, minibatch_size=8, samples_per_prompt=4, ppo_epochs=2,
                        lr=3e-3, kl_coef=0.01, max_new_tokens=8, missing_eos_penalty=None)
    history = rloo(tiny_model, tiny_tokenizer, even_share, config).train(progress=False)
    rewards = [h["reward"] for h in history]
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.2, rewards
    assert "value_loss" not in history[-1] and history[-1]["step"] == config.steps
