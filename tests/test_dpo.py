"""DPO: answer log-probs against per-row forwards, the K-way loss against the paper's pairwise
loss, and a short run that learns a preference the tiny model can express."""
import copy
import math

import pytest
import torch

from rlhf_lab import dpo
from rlhf_lab.config import DPOConfig
from rlhf_lab.data import encode_example
from rlhf_lab.dpo import answer_logprobs, group_logprobs, implicit_rewards, train_dpo
from rlhf_lab.losses import dpo_loss, ranking_loss
from rlhf_lab.reward import as_pairs, encode_groups, group_batch
from test_ppo import perturbed_copy

def _groups(n=1):
    """n rankings of three answers (a > b > c) to one prompt each."""
    return [{"annotation_id": f"h/p{k}", "prompt_id": f"p{k}", "labeler_id": "h",
             "prompt": [{"role": "user", "content": f"Where does the {animal} live?"}],
             "completions": [f"The {animal} lives in the forest.", f"A {animal} is red.", "Nice."],
             "pairs": [(0, 1), (0, 2), (1, 2)]} for k, animal in zip(range(n), ["cat", "dog", "owl", "frog"] * 8)]


def test_answer_logprobs_match_a_forward_of_each_row_alone(tiny_model, tiny_tokenizer):
    encoded = encode_groups(tiny_tokenizer, _groups(2), max_length=64)
    batch = group_batch(encoded, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        got = answer_logprobs(tiny_model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    rows = [(g["prompt"], completion) for g in _groups(2) for completion in g["completions"]]
    for row, (prompt, completion) in enumerate(rows):
        example = encode_example(tiny_tokenizer, prompt, completion, 64)
        ids = torch.tensor([example["input_ids"]])
        n_prompt = sum(1 for label in example["labels"] if label == -100)
        with torch.no_grad():
            logp = tiny_model(input_ids=ids).logits[0].log_softmax(-1)
        expected = sum(logp[t - 1, ids[0, t]].item() for t in range(n_prompt, ids.shape[1]))
        assert got[row].item() == pytest.approx(expected, abs=1e-4)
    assert group_logprobs(tiny_model, encoded, tiny_tokenizer.pad_token_id)[1] == pytest.approx(got[3:].tolist(), abs=1e-5)


def test_group_logprobs_shrink_the_batch_to_the_logits_budget_and_give_the_same_values(tiny_model, tiny_tokenizer,
                                                                                      monkeypatch):
    encoded = encode_groups(tiny_tokenizer, _groups(4), max_length=64)
    whole = group_logprobs(tiny_model, encoded, tiny_tokenizer.pad_token_id)
    longest = max(len(e["input_ids"]) for g in encoded for e in g["encoded"])
    forwards = []
    monkeypatch.setattr(dpo, "LOGITS_BUDGET", 2 * longest * tiny_model.config.vocab_size)  # room for 2 answers
    monkeypatch.setattr(dpo, "answer_logprobs", lambda model, ids, *a: forwards.append(len(ids)) or answer_logprobs(
        model, ids, *a))
    shrunk = group_logprobs(tiny_model, encoded, tiny_tokenizer.pad_token_id)
    assert sum(shrunk, []) == pytest.approx(sum(whole, []), abs=1e-4) and [len(g) for g in shrunk] == [3] * 4
    assert forwards == [2] * 6  # 12 answers, two at a time

def test_k_way_loss_on_one_pair_rankings_is_the_papers_dpo_loss(tiny_model, tiny_tokenizer):
    reference = perturbed_copy(tiny_model)
    pairs = as_pairs(_groups(2))
    batch = group_batch(encode_groups(tiny_tokenizer, pairs, 64), tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        policy_lp, ref_lp = (answer_logprobs(m, batch["input_ids"], batch["attention_mask"], batch["labels"])
                             for m in (tiny_model, reference))
    beta = 0.3
    k_way = ranking_loss(beta * (policy_lp - ref_lp), batch["winners"], batch["losers"], batch["groups"])
    pairwise, _ = dpo_loss(policy_lp[0::2], policy_lp[1::2], ref_lp[0::2], ref_lp[1::2], beta)
    assert k_way.item() == pytest.approx(pairwise.item(), abs=1e-6) and abs(k_way.item() - math.log(2)) > 1e-3


def test_a_short_dpo_run_learns_the_ranking_and_leaves_the_reference_alone(tiny_model, tiny_tokenizer):
    policy, reference = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    frozen = [p.clone() for p in reference.parameters()]
    config = DPOConfig(beta=0.5, epochs=6, groups_per_batch=4, lr=3e-3, warmup_steps=1, max_length=64,
                       evals_per_epoch=1)
    policy, history = train_dpo(policy, reference, tiny_tokenizer, _groups(16), _groups(4), config, progress=False)
    assert history[0]["valid_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy = reference: every reward 0
    assert history[-1]["valid_accuracy"] == 1.0 and history[-1]["valid_loss"] < 0.3
    assert all(torch.equal(a, b) for a, b in zip(frozen, reference.parameters()))
    rewards = implicit_rewards(policy, reference, tiny_tokenizer, _groups(1), beta=0.5, max_length=64)[0]
    assert rewards[0] > rewards[1] > rewards[2]
