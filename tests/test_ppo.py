"""PPO: every loss against a slow hand computation (GAE, clipped surrogate, clipped value loss,
KL estimators, whitening), the rollout's per-token rewards and log-probs under left padding
against direct per-row forwards, the adaptive β, the NaN guard, and a short run that learns."""
import copy
import math

import pytest
import torch

from rlhf_lab import ppo
from rlhf_lab.config import PPOConfig
from rlhf_lab.losses import (entropy, exact_kl, gae, kl_estimators, masked_mean, masked_whiten, ppo_policy_loss,
                             ppo_value_loss)
from rlhf_lab.models import save_model
from rlhf_lab.ppo import AdaptiveKL, PPOTrainer
from rlhf_lab.reward import reward_model_from_policy, token_scores


# --- GAE ---------------------------------------------------------------------------------

def slow_gae(rewards, values, lengths, gamma, lam):
    """Per row, backwards over its real tokens only: δ_t = r_t + γV_{t+1} − V_t (V = 0 after the
    last token), A_t = δ_t + γλA_{t+1}, returns = A + V; padding left at 0."""
    advantages, returns = torch.zeros_like(rewards), torch.zeros_like(rewards)
    for row, n in enumerate(lengths):
        next_value = next_advantage = 0.0
        for t in reversed(range(n)):
            delta = rewards[row, t].item() + gamma * next_value - values[row, t].item()
            next_advantage = delta + gamma * lam * next_advantage
            next_value = values[row, t].item()
            advantages[row, t] = next_advantage
            returns[row, t] = next_advantage + values[row, t].item()
    return advantages, returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5)])
def test_gae_matches_a_hand_unrolled_loop_per_row(gamma, lam):
    torch.manual_seed(0)
    lengths = [7, 1, 4, 5]
    rewards, values = torch.randn(4, 7), torch.randn(4, 7)  # padding holds garbage on purpose
    mask = (torch.arange(7)[None] < torch.tensor(lengths)[:, None]).float()
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    slow_adv, slow_ret = slow_gae(rewards, values, lengths, gamma, lam)
    assert torch.allclose(advantages, slow_adv, atol=1e-5)
    assert torch.allclose(returns, slow_ret, atol=1e-5)
    assert (advantages[mask == 0] == 0).all() and (returns[mask == 0] == 0).all()
    # a one-token episode: A = r − V, return = r
    assert advantages[1, 0].item() == pytest.approx((rewards[1, 0] - values[1, 0]).item(), abs=1e-6)


# --- clipped surrogate and value loss ----------------------------------------------------

def test_policy_loss_clipping_by_hand():
    """ε = 0.2. Row 0: ρ=1.5,A=+1 (clipped) | ρ=1.5,A=−1 | ρ=0.5,A=+1. Row 1: ρ=0.5,A=−1 (clipped)
    | ρ=1.1,A=+2 | padding with a wild ratio and advantage that must not count."""
    ratio = torch.tensor([[1.5, 1.5, 0.5], [0.5, 1.1, 3.0]])
    advantages = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    old = torch.log(torch.tensor([[0.2, 0.3, 0.4], [0.1, 0.5, 0.05]]))
    new = (old + ratio.log()).requires_grad_(True)
    loss, stats = ppo_policy_loss(new, old, advantages, mask, clip=0.2)
    # per token max(−ρA, −clip(ρ)A): −1.2, 1.5, −0.5 | 0.8, −2.2
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8 - 2.2) / 5, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(2 / 5)
    k3 = [r - 1 - math.log(r) for r in (1.5, 1.5, 0.5, 0.5, 1.1)]  # (ρ − 1) − log ρ
    assert stats["approx_kl"] == pytest.approx(sum(k3) / 5, rel=1e-5)
    loss.backward()
    # d/d log π of −ρA/5 = −ρA/5 on unclipped tokens; exactly zero on clipped ones and padding
    expected = torch.tensor([[0.0, 1.5 / 5, -0.5 / 5], [0.0, -2.2 / 5, 0.0]])
    assert torch.allclose(new.grad, expected, atol=1e-6)
    assert (new.grad[0, 0] == 0) and (new.grad[1, 0] == 0) and (new.grad[1, 2] == 0)


def test_policy_loss_is_minus_mean_advantage_when_nothing_moved():
    torch.manual_seed(0)
    logprobs, advantages = -torch.rand(3, 5), torch.randn(3, 5)
    mask = torch.ones(3, 5)
    mask[0, 3:] = 0
    loss, stats = ppo_policy_loss(logprobs, logprobs.clone(), advantages, mask)
    assert loss.item() == pytest.approx(-(advantages * mask).sum().item() / mask.sum().item(), abs=1e-6)
    assert stats["clip_fraction"] == 0 and stats["approx_kl"] == pytest.approx(0, abs=1e-7)


def test_approx_kl_estimates_kl_from_the_rollout_policy_to_the_new_one():
    """Tokens sampled from π_old, as in a rollout; a large move to π: the mean of approx_kl is
    KL(π_old ‖ π) = Σ p_old log(p_old / p), summed by hand, and not the reverse KL."""
    p_old, p_new = [0.7, 0.2, 0.1], [0.05, 0.15, 0.8]
    forward = sum(a * math.log(a / b) for a, b in zip(p_old, p_new))
    reverse = sum(b * math.log(b / a) for a, b in zip(p_old, p_new))
    assert forward - reverse > 0.2  # the two directions really differ here
    tokens = torch.multinomial(torch.tensor(p_old), 100_000, replacement=True,
                               generator=torch.Generator().manual_seed(0))[None]
    old, new = torch.tensor(p_old).log()[tokens], torch.tensor(p_new).log()[tokens]
    _, stats = ppo_policy_loss(new, old, torch.zeros_like(old), torch.ones_like(old))
    # per-token standard deviation of k3 here is 1.26, so the standard error is 0.004
    assert stats["approx_kl"] == pytest.approx(forward, abs=0.02)
    assert abs(stats["approx_kl"] - reverse) > 0.15


def test_value_loss_by_hand_clipped_and_unclipped():
    """ε = 0.2: ½·max((V−R)², (V_old + clip(V−V_old, ±ε) − R)²), mean over real tokens."""
    old = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    new = torch.tensor([[0.5, 0.5, 1.1], [-1.0, 9.0, 0.0]], requires_grad=True)
    returns = torch.tensor([[1.0, 0.0, 0.0], [0.5, -9.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    loss = ppo_value_loss(new, old, returns, mask, clip=0.2)
    # token a: max(0.25, (0.2−1)²=0.64) clipped wins; b: max(0.25, 0.04); c: inside the clip, 1.21;
    # d: max(2.25, (−0.2−0.5)²=0.49); the padding (a huge error) does not count
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.25 + 1.21 + 2.25) / 4, abs=1e-6)
    loss.backward()
    # the clipped branch is flat in V: no gradient on token a; (V − R)/4 on the others
    expected = torch.tensor([[0.0, 0.5 / 4, 1.1 / 4], [-1.5 / 4, 0.0, 0.0]])
    assert torch.allclose(new.grad, expected, atol=1e-6)


# --- KL ----------------------------------------------------------------------------------

def test_exact_kl_and_entropy_against_direct_sums():
    torch.manual_seed(0)
    logits, ref_logits = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    p, q = logits.softmax(-1), ref_logits.softmax(-1)
    assert torch.allclose(exact_kl(logits, ref_logits), (p * (p / q).log()).sum(-1), atol=1e-6)
    assert torch.allclose(exact_kl(logits, logits), torch.zeros(2, 3), atol=1e-6)
    assert torch.allclose(entropy(logits), -(p * p.log()).sum(-1), atol=1e-6)


def test_exact_kl_and_entropy_with_masked_vocabulary_entries():
    """−inf logits (tokens masked out) have probability 0 and add 0·log 0 = 0, not NaN.
    π = (1/4, 3/4, 0, 0), π_ref = (1/3, 1/3, 1/3, 0)."""
    inf = float("inf")
    logits = torch.tensor([0.0, math.log(3), -inf, -inf], requires_grad=True)
    ref_logits = torch.tensor([0.0, 0.0, 0.0, -inf])
    kl, h = exact_kl(logits, ref_logits), entropy(logits)
    assert kl.item() == pytest.approx(0.25 * math.log(0.25 * 3) + 0.75 * math.log(0.75 * 3), abs=1e-6)
    assert h.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    (kl + h).backward()
    assert torch.isfinite(logits.grad).all()
    # π_ref excludes a token π picks: the KL is infinite, not NaN
    assert exact_kl(ref_logits, logits.detach()).item() == inf


def _sample_estimators(logits, ref_logits, n, sample_temperature=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.multinomial((logits / sample_temperature).softmax(-1), n, replacement=True, generator=generator)
    logp, ref_logp = logits.log_softmax(-1)[tokens], ref_logits.log_softmax(-1)[tokens]
    return kl_estimators(logp, ref_logp)


def _within(samples, target, n_se=4.0):
    se = samples.std().item() / math.sqrt(len(samples))
    return abs(samples.mean().item() - target) < n_se * se, se


def test_k1_and_k3_are_unbiased_and_k3_never_negative_on_samples_from_the_policy():
    torch.manual_seed(1)
    logits, ref_logits = torch.randn(6) * 1.5, torch.randn(6) * 1.5
    kl = exact_kl(logits, ref_logits).item()
    assert kl > 0.1  # the two distributions really differ
    est = _sample_estimators(logits, ref_logits, 40_000)
    for name in ("k1", "k3"):
        ok, se = _within(est[name], kl)
        assert ok, (name, est[name].mean().item(), kl, se)
    assert (est["k3"] >= 0).all() and (est["k2"] >= 0).all()
    assert (est["k1"] < 0).any()  # single-sample k1 can be negative; its mean is not


def test_k1_is_biased_when_samples_come_from_another_temperature():
    """Samples from softmax(logits / 5) scored with log-probs at temperature 1: E[k1] is no longer
    KL(π ‖ π_ref). With π peaked and π_ref uniform, near-uniform samples make it negative."""
    logits, ref_logits = torch.tensor([4.0, 0.0, 0.0, 0.0, 0.0, 0.0]), torch.zeros(6)
    kl = exact_kl(logits, ref_logits).item()
    est = _sample_estimators(logits, ref_logits, 40_000, sample_temperature=5.0)
    p_t = (logits / 5).softmax(-1)
    expected = (p_t * (logits.log_softmax(-1) - ref_logits.log_softmax(-1))).sum().item()
    ok, se = _within(est["k1"], expected)
    assert ok  # the samples estimate E_{π_T}[log π − log π_ref], not the KL ...
    assert kl > 1.0 and expected < 0 and est["k1"].mean().item() < kl - 20 * se  # ... which is far off
    # and at the matching temperature the same estimator is right again
    assert _within(_sample_estimators(logits, ref_logits, 40_000)["k1"], kl)[0]


# --- whitening ---------------------------------------------------------------------------

def test_masked_whiten_over_real_tokens_only():
    torch.manual_seed(0)
    x = torch.randn(3, 6) * 4 + 3
    mask = torch.ones(3, 6)
    mask[1, 2:], mask[2, 5:] = 0, 0
    real = x[mask.bool()]
    assert masked_mean(x, mask).item() == pytest.approx(real.mean().item(), abs=1e-5)
    w = masked_whiten(x, mask)
    assert w[mask.bool()].mean().item() == pytest.approx(0, abs=1e-5)
    assert w[mask.bool()].var(unbiased=False).item() == pytest.approx(1, abs=1e-4)
    assert (w[mask == 0] == 0).all()
    assert torch.allclose(w[mask.bool()], (real - real.mean()) / real.std(unbiased=False), atol=1e-4)
    kept = masked_whiten(x, mask, shift_mean=False)
    assert kept[mask.bool()].mean().item() == pytest.approx(real.mean().item(), abs=1e-4)
    assert (kept[mask == 0] == 0).all()


# --- adaptive β --------------------------------------------------------------------------

def test_adaptive_kl_moves_beta_towards_the_target_with_clipped_error():
    kl = AdaptiveKL(0.1, target=6.0, horizon=100)
    kl.update(12.0, n_answers=10)  # error +1 clipped to +0.2: ×(1 + 0.2·10/100)
    assert kl.beta == pytest.approx(0.1 * 1.02)
    kl.update(3.0, n_answers=10)  # error −0.5 clipped to −0.2
    assert kl.beta == pytest.approx(0.1 * 1.02 * 0.98)
    kl.update(6.6, n_answers=10)  # error +0.1, inside the clip
    assert kl.beta == pytest.approx(0.1 * 1.02 * 0.98 * 1.01)
    before = kl.beta
    kl.update(6.0, n_answers=10)
    assert kl.beta == pytest.approx(before)
    fixed = AdaptiveKL(0.1, target=None, horizon=100)
    fixed.update(100.0, n_answers=10)
    assert fixed.beta == 0.1


# --- the rollout -------------------------------------------------------------------------

RECORDS = [
    {"prompt": [{"role": "user", "content": "Hi"}], "prompt_id": "p0", "family": "short"},
    {"prompt": [{"role": "user", "content": "Where does the green frog live, and how many legs has it?"}],
     "prompt_id": "p1", "family": "long"},
    {"prompt": [{"role": "user", "content": "Tell me about the owl."}], "prompt_id": "p2", "family": "mid"},
    {"prompt": [{"role": "user", "content": "Q: Where does the cat live?"}], "prompt_id": "p3", "family": "mid"},
]


@pytest.fixture(scope="module")
def policy_path(tiny_model, tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("ppo_policy")
    save_model(tiny_model, tiny_tokenizer, path)
    return path


@pytest.fixture
def generations(monkeypatch):
    """Every Generation the trainer samples, as generate_ids returned it."""
    seen, real = [], ppo.generate_ids

    def recording(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]
    monkeypatch.setattr(ppo, "generate_ids", recording)
    return seen


def make_trainer(tiny_model, tiny_tokenizer, policy_path, score_fn, config, records=RECORDS, reference=None,
                 value_head_std=0.5, ptx_blocks=None):
    """Policy and reference are copies of the tiny model; the value model is the RM made from it, with a
    seeded random head by default (non-zero values, so their placement is tested)."""
    policy = copy.deepcopy(tiny_model)
    value_model = reward_model_from_policy(policy_path, device="cpu")
    with torch.no_grad():
        head = value_model.score.weight
        head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(0)) * value_head_std)
    return PPOTrainer(policy, reference if reference is not None else copy.deepcopy(tiny_model), value_model,
                      tiny_tokenizer, score_fn, records, config, ptx_blocks=ptx_blocks)


def perturbed_copy(model, std=0.05):
    """A seeded, slightly perturbed copy of `model`: a reference the policy really disagrees with."""
    torch.manual_seed(0)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * std)
    return reference


def constant_scores(sequences, attention_mask, texts):
    return torch.arange(len(texts)).float() + 1.0  # row i scores i + 1


def test_rollout_puts_the_score_on_the_last_real_token_only(tiny_model, tiny_tokenizer, policy_path, generations):
    config = PPOConfig.smoke()
    config.kl_coef, config.missing_eos_penalty, config.seed = 0.0, None, 3
    trainer = make_trainer(tiny_model, tiny_tokenizer, policy_path, constant_scores, config)
    rollout, stats = trainer.rollout(RECORDS)
    prompt_mask = rollout.attention_mask[:, :rollout.prompt_width]
    assert len(set(prompt_mask.sum(1).tolist())) > 1 and (prompt_mask[:, -1] == 1).all()  # left-padded
    assert prompt_mask[:, 0].sum() < len(RECORDS)
    lengths = rollout.mask.sum(1).long()
    expected = torch.zeros_like(rollout.rewards)
    expected[torch.arange(len(RECORDS)), lengths - 1] = torch.arange(len(RECORDS)).float() + 1.0
    assert torch.equal(rollout.rewards, expected)
    assert torch.equal(rollout.scores, torch.arange(len(RECORDS)).float() + 1.0)
    # the advantages and returns are GAE of exactly these rewards and values (then whitened)
    adv, ret = gae(rollout.rewards, rollout.values, rollout.mask, config.gamma, config.lam)
    assert torch.allclose(rollout.returns, ret, atol=1e-5)
    assert torch.allclose(rollout.advantages, masked_whiten(adv, rollout.mask), atol=1e-5)
    # policy == reference: no KL at all, and the re-forward reproduces the sampling log-probs
    assert torch.allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-5)
    for name in ("kl_k1", "kl_k3", "kl_exact"):
        assert abs(stats[name]) < 1e-4, name
    (gen,) = generations
    assert torch.equal(gen.response_mask.float(), rollout.mask)
    assert torch.allclose(rollout.logprobs, gen.logprobs, atol=1e-4)
    assert (rollout.logprobs[rollout.mask == 0] == 0).all() and (rollout.values[rollout.mask == 0] == 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_shapes_kl_into_the_rewards_and_matches_unpadded_forwards(tiny_model, tiny_tokenizer, policy_path,
                                                                          temperature):
    """Log-probs (policy and reference) are those of softmax(logits / T) at the sampling temperature T."""
    reference = perturbed_copy(tiny_model)
    config = PPOConfig.smoke()
    config.kl_coef, config.missing_eos_penalty, config.seed, config.temperature = 0.3, None, 3, temperature
    trainer = make_trainer(tiny_model, tiny_tokenizer, policy_path, constant_scores, config, reference=reference)
    r, stats = trainer.rollout(RECORDS)
    mask, lengths = r.mask, r.mask.sum(1).long()
    assert (r.logprobs - r.ref_logprobs).abs().max() > 0.05  # the two models really disagree
    expected = -0.3 * (r.logprobs - r.ref_logprobs) * mask
    expected[torch.arange(len(RECORDS)), lengths - 1] += torch.arange(len(RECORDS)).float() + 1.0
    assert torch.allclose(r.rewards, expected, atol=1e-6)
    assert (r.rewards[mask == 0] == 0).all()
    k1 = ((r.logprobs - r.ref_logprobs) * mask).sum(1).mean().item()
    assert stats["kl_k1"] == pytest.approx(k1, abs=1e-5) and stats["beta"] == 0.3
    # slow reference: each row alone, no padding, positions 0..n-1
    for row in range(len(RECORDS)):
        ids = r.sequences[row][r.attention_mask[row] == 1][None]
        n_prompt, n = int(r.attention_mask[row, :r.prompt_width].sum()), int(lengths[row])
        tokens = ids[0, n_prompt:n_prompt + n]
        assert torch.equal(tokens, r.response_ids[row, :n])
        with torch.no_grad():
            for model, got in ((trainer.policy, r.logprobs), (reference, r.ref_logprobs)):
                logits = model(input_ids=ids).logits[0, n_prompt - 1:n_prompt + n - 1]
                logp = (logits / temperature).log_softmax(-1)
                assert torch.allclose(got[row, :n], logp.gather(-1, tokens[:, None])[:, 0], atol=1e-4)
            values = token_scores(trainer.value_model, ids, torch.ones_like(ids))[0, n_prompt - 1:n_prompt + n - 1]
        assert torch.allclose(r.values[row, :n], values, atol=1e-4)
        assert values.abs().max() > 1e-3


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_a_temperature_that_is_not_positive_is_refused(tiny_model, tiny_tokenizer, policy_path, temperature):
    config = PPOConfig.smoke()
    config.temperature = temperature
    with pytest.raises(ValueError, match="temperature must be > 0.*stochastic policy"):
        make_trainer(tiny_model, tiny_tokenizer, policy_path, constant_scores, config)


def test_a_nan_loss_raises_naming_the_step(tiny_model, tiny_tokenizer, policy_path):
    config = PPOConfig.smoke()
    config.missing_eos_penalty = None
    trainer = make_trainer(tiny_model, tiny_tokenizer, policy_path, constant_scores, config)
    rollout, _ = trainer.rollout(RECORDS)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    rollout.advantages = torch.full_like(rollout.advantages, float("nan"))
    with pytest.raises(FloatingPointError, match="PPO step 0: the policy loss is nan"):
        trainer.update(rollout)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))  # nothing was applied


def test_ptx_leaves_the_ppo_random_streams_alone(tiny_model, tiny_tokenizer, policy_path, generations):
    """Same seed with ptx_coef 0 and > 0: the same prompts, samples and minibatch shuffles. lr = 0 keeps
    the policy fixed, so any difference in the second rollout could only come from the random streams."""
    blocks = torch.randint(len(tiny_tokenizer), (6, 16), generator=torch.Generator().manual_seed(0))
    runs = []
    for ptx_coef in (0.0, 1e-6):
        config = PPOConfig.smoke()
        config.missing_eos_penalty, config.lr, config.ptx_coef = None, 0.0, ptx_coef
        trainer = make_trainer(tiny_model, tiny_tokenizer, policy_path, constant_scores, config, ptx_blocks=blocks)
        history = [trainer.step() for _ in range(2)]
        assert ("ptx_loss" in history[-1]) == (ptx_coef > 0)
        runs.append((generations[-1].sequences, [r["prompt_id"] for r in trainer.last_rollout.records],
                     trainer.rng.getstate(), trainer.generator.get_state()))
    (seq_a, ids_a, rng_a, gen_a), (seq_b, ids_b, rng_b, gen_b) = runs
    assert ids_a == ids_b and torch.equal(seq_a, seq_b)
    assert rng_a == rng_b and torch.equal(gen_a, gen_b)


# --- a short run learns ------------------------------------------------------------------

def test_short_ppo_run_raises_a_trivially_learnable_reward(tiny_model, tiny_tokenizer, policy_path, generations):
    """Reward = share of the answer's tokens with an even id (about ½ for the random model)."""
    def even_share(sequences, attention_mask, texts):
        gen = generations[-1]
        even = (gen.response_ids % 2 == 0).float() * gen.response_mask
        return even.sum(1) / gen.response_mask.sum(1)

    animals = ["cat", "dog", "owl", "frog", "horse", "whale", "ant", "bee"]
    records = [{"prompt": [{"role": "user", "content": f"Tell me about the {a}." + " Please." * (i % 3)}],
                "prompt_id": f"p{i}", "family": "animal"} for i, a in enumerate(animals * 2)]
    config = PPOConfig(seed=0, steps=20, batch_size=16, minibatch_size=8, ppo_epochs=4, lr=3e-3, value_lr=1e-3,
                       kl_coef=0.01, max_new_tokens=8, missing_eos_penalty=None)
    trainer = make_trainer(tiny_model, tiny_tokenizer, policy_path, even_share, config, records=records,
                           value_head_std=0.0)
    history = trainer.train(progress=False)
    rewards = [h["reward"] for h in history]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.2, rewards
    assert history[-1]["entropy"] < history[0]["entropy"] - 0.3  # it got there by sharpening, not by luck
    assert all(math.isfinite(h["policy_loss"]) and math.isfinite(h["value_loss"]) for h in history)
    assert history[-1]["step"] == config.steps and history[-1]["kl_k3"] > 0


# --- fixed-prompt evaluation -------------------------------------------------------------

def test_evaluate_is_repeatable_and_matches_a_direct_computation(tiny_model, tiny_tokenizer, policy_path):
    """Same seed every call: the same answers, so evaluation curves carry no sampling noise of their own;
    training's sampling stream is left alone; KL is k1 summed per answer, gold and reward are means."""
    reference = perturbed_copy(tiny_model)
    config = PPOConfig.smoke()
    config.missing_eos_penalty, config.seed = None, 3
    trainer = make_trainer(tiny_model, tiny_tokenizer, policy_path, constant_scores, config, reference=reference)
    trainer.gold_fn = lambda records, texts: [float(len(t)) for t in texts]
    state = trainer.generator.get_state()
    first, second = trainer.evaluate(RECORDS), trainer.evaluate(RECORDS)
    assert first == second and torch.equal(trainer.generator.get_state(), state)
    assert first["eval_reward"] == pytest.approx(sum(range(1, len(RECORDS) + 1)) / len(RECORDS))
    gen, width, _ = trainer.generate(RECORDS, generator=torch.Generator().manual_seed(config.seed))
    _, _, logprobs, ref_logprobs = trainer._logprobs(gen, width)
    assert first["eval_kl"] == pytest.approx((logprobs - ref_logprobs).sum(1).mean().item(), abs=1e-5)
    assert abs(first["eval_kl"]) > 1e-3
    texts = [t.strip() for t in ppo.decode_responses(tiny_tokenizer, gen, trainer.stop_ids)]
    assert first["eval_gold"] == pytest.approx(sum(map(len, texts)) / len(texts))
    history = trainer.train(progress=False, eval_records=RECORDS, eval_every=1)
    assert [e["step"] for e in trainer.evaluations] == list(range(config.steps + 1))
    assert trainer.evaluations[0] == {"step": 0, **first} and len(history) == config.steps
