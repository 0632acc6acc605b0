"""Every training stage, end to end, on a model that is not GPT-2 and pads with its eos token, as a real chat
model does.

The policy is a tiny random LlamaForCausalLM (RMSNorm, no biases, tied embeddings, grouped-query attention). Its
tokenizer is the course's, set up the way SmolLM2-135M-Instruct's is: the token that ends an assistant turn is eos
(SmolLM2's <|im_end|>, our <|end|>) and pad is that same token. So every training answer ends with a token that is
also the padding, and every finished rollout is followed by more of it: a stage that tells padding from text by token
id where it should use the attention mask, or reads the reward at another token than transformers does, shows here.
One chain on a few records of data/, with the smoke configs: SFT, reward model, DPO, PPO and RLOO, best-of-N.
"""
import copy
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf_lab.best_of_n import sample_candidates
from rlhf_lab.config import DPOConfig, PPOConfig, RewardConfig, RLOOConfig, SFTConfig
from rlhf_lab.data import collate, encode_demonstrations
from rlhf_lab.dpo import train_dpo
from rlhf_lab.models import load_policy, save_model, stop_token_ids
from rlhf_lab.pipeline import records
from rlhf_lab.ppo import PPOTrainer
from rlhf_lab.reward import (encode_groups, group_batch, reward_model_from_policy, rewards, score_token_index,
                             token_scores, train_reward_model)
from rlhf_lab.rloo import RLOOTrainer
from rlhf_lab.sft import set_dropout, train_sft
from rlhf_lab.tokenizer import load_tokenizer
from rlhf_lab.utils import DATA_DIR
from rlhf_lab.world import load_world
from test_reward_parity import _batch, _hf_scores, _saved_and_reloaded

END = "<|end|>"  # ends an assistant turn in the course's chat template: here eos and pad too


def _groups(demonstrations: list[dict]) -> list[dict]:
    """One ranking per demonstration: its own answer over those of the two before it (written for other prompts)."""
    answers = [d["completion"][0]["content"] for d in demonstrations]
    return [{"annotation_id": f"h/{d['prompt_id']}", "prompt_id": d["prompt_id"], "labeler_id": "h",
             "prompt": d["prompt"], "completions": [answers[i], answers[i - 1], answers[i - 2]],
             "pairs": [(0, 1), (0, 2)]} for i, d in enumerate(demonstrations)]


def _moved(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(folder, policy, tokenizer): the tiny Llama saved with a pad = eos tokenizer and loaded back with load_policy."""
    tokenizer = load_tokenizer(DATA_DIR / "tokenizer")
    tokenizer.eos_token = tokenizer.pad_token = END  # as SmolLM2's <|im_end|>: the course's eos never ends a turn
    end = tokenizer.convert_tokens_to_ids(END)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=end, pad_token_id=end))
    with torch.no_grad():  # Llama zeroes the pad row, here eos's: it would never end an answer. Real chat models do
        model.get_output_embeddings().weight[end].normal_(std=2.0)
    path = tmp_path_factory.mktemp("llama")
    save_model(model, tokenizer, path)
    policy, loaded = load_policy(path, device="cpu")
    return path, policy, loaded


@pytest.fixture(scope="module")
def sft(llama, tmp_path_factory):
    """(folder, model, tokenizer, history) after smoke SFT on eight demonstrations, saved with save_model."""
    _, policy, tokenizer = llama
    config = SFTConfig.smoke()  # dropout 0.2: Llama has no residual dropout, so only its attention gets it
    with pytest.warns(UserWarning, match="has no dropout layers .* attention only"):
        model, history = train_sft(copy.deepcopy(policy), tokenizer, records("demonstrations", "train")[:config.n_train],
                                   records("demonstrations", "validation")[:4], config, load_world(0),
                                   records("prompts", "validation")[:config.n_score], progress=False)
    path = tmp_path_factory.mktemp("llama_sft")
    save_model(model, tokenizer, path)
    return path, model, tokenizer, history


@pytest.fixture(scope="module")
def reward_model(sft, tmp_path_factory):
    """(package RM, the same folder through AutoModelForSequenceClassification, training history): the RM made
    from the SFT model, trained a few steps, saved and loaded back both ways."""
    path, _, tokenizer, _ = sft
    model = reward_model_from_policy(path, device="cpu")
    train = _groups(records("demonstrations", "train")[8:12])
    model, history = train_reward_model(model, tokenizer, train, _groups(records("demonstrations", "validation")[:3]),
                                        RewardConfig.smoke(), progress=False)
    ours, theirs = _saved_and_reloaded(model, tokenizer, tmp_path_factory.mktemp("llama_rm"))
    ours.requires_grad_(False)
    return ours, theirs, history


@pytest.fixture(scope="module")
def prompts():
    return records("prompts", "validation")[:4]


def test_load_policy_keeps_pad_equal_to_eos(llama):
    _, policy, tokenizer = llama
    end = tokenizer.convert_tokens_to_ids(END)
    assert isinstance(policy, LlamaForCausalLM) and not policy.training
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == policy.config.pad_token_id == end
    assert stop_token_ids(tokenizer, policy) == [end]


def test_set_dropout_reaches_llama_attention(llama):
    """Llama keeps attention dropout as a number, not a layer: DPO and PPO turn dropout off through set_dropout, so a
    checkpoint with attention_dropout > 0 would otherwise add noise to log π - log π_ref."""
    model = copy.deepcopy(llama[1])
    attention = [m for m in model.modules() if hasattr(m, "attention_dropout")]
    for m in attention:
        m.attention_dropout = 0.1  # as a checkpoint may ship it
    set_dropout(model, 0.0)
    assert attention and all(m.attention_dropout == 0.0 for m in attention)
    with pytest.warns(UserWarning, match="LlamaForCausalLM has no dropout layers"):
        set_dropout(model, 0.2)
    assert all(m.attention_dropout == 0.2 for m in attention)


def test_sft_trains_and_saves(sft):
    path, model, tokenizer, history = sft
    assert len(history) == SFTConfig.smoke().epochs
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["valid_loss"]) for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    end = tokenizer.pad_token_id
    batch = collate(encode_demonstrations(tokenizer, records("demonstrations", "validation")[:4], 256), end)
    lengths = batch["attention_mask"].sum(dim=1)
    assert len(set(lengths.tolist())) > 1  # padded
    # each answer's closing eos is a target, though it is the padding token too
    assert (batch["labels"][torch.arange(len(lengths)), lengths - 1] == end).all()
    reloaded, _ = load_policy(path, device="cpu")
    ids = torch.tensor([tokenizer.encode("The blumik lives in the forest.")])
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_reward_is_read_before_the_final_eos_whatever_the_padding(reward_model, sft):
    """pad = eos: every answer ends with the pad token. The score is read at the token before it, in a right-padded
    training batch as in each answer alone, and the saved RM gives the same scores through plain transformers."""
    rm, hf_rm, history = reward_model
    tokenizer, end = sft[2], sft[2].pad_token_id
    assert all(math.isfinite(h["valid_loss"]) for h in history) and math.isfinite(history[-1]["train_loss"])
    batch = group_batch(encode_groups(tokenizer, _groups(records("demonstrations", "validation")[:3]), 256), end)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lengths = mask.sum(dim=1)
    assert len(set(lengths.tolist())) > 1 and (ids[torch.arange(len(ids)), lengths - 1] == end).all()
    with torch.no_grad():
        padded = rewards(rm, ids, mask)
        alone = torch.stack([rewards(rm, row[:n][None], torch.ones(1, int(n), dtype=torch.long))[0]
                             for row, n in zip(ids, lengths)])
        per_token = token_scores(rm, ids, mask)
    assert padded.std() > 1e-3  # trained: the head tells answers apart
    assert torch.allclose(padded, alone, atol=1e-5)
    assert (score_token_index(ids, end) == lengths - 2).all()
    rows = torch.arange(len(ids))
    assert torch.allclose(padded, per_token[rows, lengths - 2], atol=1e-6)
    assert not torch.allclose(padded, per_token[rows, lengths - 1], atol=1e-4)  # the eos itself scores otherwise
    assert torch.allclose(_hf_scores(hf_rm, ids, mask), padded, atol=1e-5)
    left = _batch(tokenizer, "left", end, end)
    with torch.no_grad():
        assert torch.allclose(_hf_scores(hf_rm, *left, positions=True), rewards(rm, *left), atol=1e-5)


def test_dpo_steps(sft):
    path, _, tokenizer, _ = sft
    (policy, _), (reference, _) = load_policy(path, device="cpu"), load_policy(path, device="cpu")
    start = copy.deepcopy(policy)
    policy, history = train_dpo(policy, reference, tokenizer, _groups(records("demonstrations", "train")[8:12]),
                                _groups(records("demonstrations", "validation")[:3]), DPOConfig.smoke(),
                                progress=False)
    assert history[0]["valid_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference at the start
    assert math.isfinite(history[-1]["train_loss"]) and math.isfinite(history[-1]["valid_loss"])
    assert _moved(start, policy) and not _moved(start, reference)


def _finite(stats: dict) -> bool:
    return all(math.isfinite(v) for v in stats.values())


def test_ppo_and_rloo_steps_with_the_llama_reward_model(sft, reward_model, prompts):
    _, policy, tokenizer, _ = sft
    rm = reward_model[0]

    def score(sequences, attention_mask, texts):
        return rewards(rm, sequences, attention_mask)

    ppo = PPOTrainer(copy.deepcopy(policy), copy.deepcopy(policy), copy.deepcopy(rm), tokenizer, score, prompts,
                     PPOConfig.smoke())
    history = [ppo.step() for _ in range(PPOConfig.smoke().steps)]
    assert all(_finite(h) for h in history)
    assert _moved(policy, ppo.policy) and _moved(rm, ppo.value_model) and not _moved(policy, ppo.reference)
    finished = [h["finished"] for h in history]
    assert 0 < sum(finished) < len(finished)  # some answers ended with eos (= pad), some were cut off

    rloo = RLOOTrainer(copy.deepcopy(policy), copy.deepcopy(policy), tokenizer, score, prompts, RLOOConfig.smoke())
    stats = rloo.step()
    assert _finite(stats) and "value_loss" not in stats
    assert _moved(policy, rloo.policy)


def test_best_of_n_candidates_stop_at_eos(sft, prompts):
    _, policy, tokenizer, _ = sft
    n, max_new_tokens = 4, 16
    candidates = sample_candidates(policy, tokenizer, prompts[:2], n=n, max_new_tokens=max_new_tokens, seed=0)
    assert [len(c) for c in candidates] == [n, n]
    answers = [a for c in candidates for a in c]
    assert all(isinstance(a, str) for a in answers)
    assert not any(END in a for a in answers)  # stopped at eos, and neither it nor the padding after it decoded
    lengths = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    assert min(lengths) < max_new_tokens - 1 and len(set(answers)) > 1
