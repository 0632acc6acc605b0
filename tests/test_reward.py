"""The reward model: its loss against a slow per-pair reference, the score token under either
padding side, grouping of rankings, normalization, and the save/load round trip."""
import copy
import math
import random
import time
from itertools import combinations

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rlhf_lab.config import RewardConfig
from rlhf_lab.data import encode_example
from rlhf_lab.feedback import comparisons, submit_event
from rlhf_lab.losses import ranking_loss
from rlhf_lab.models import save_model
from rlhf_lab.reward import (agreement_with_ceiling, as_pairs, calibration, group_batch, encode_groups,
                             groups_from_rankings, labeler_folds, last_token_index, load_reward_model, normalize,
                             pair_metrics, ranking_groups, reward_model_from_policy, rewards, score_texts,
                             shift_rewards, token_scores, train_reward_model)


def slow_ranking_loss(rewards, rankings):
    """Direct formula: for each ranking, −1/(its pairs) Σ over its pairs of log σ(r_w − r_l); mean over
    the rankings that have pairs."""
    rankings = [pairs for pairs in rankings if pairs]
    total = 0.0
    for pairs in rankings:
        total = total + sum(-torch.log(torch.sigmoid(rewards[w] - rewards[l])) for w, l in pairs) / len(pairs)
    return total / len(rankings)


def test_ranking_loss_matches_the_slow_reference_in_value_and_gradient():
    torch.manual_seed(0)
    # two rankings: K=4 over answers 0..3 (all 6 pairs), K=3 over answers 4..6 with one tie dropped
    rankings = [list(combinations(range(4), 2)), [(4, 5), (4, 6)]]
    winners = torch.tensor([w for r in rankings for w, _ in r])
    losers = torch.tensor([l for r in rankings for _, l in r])
    groups = torch.tensor([g for g, r in enumerate(rankings) for _ in r])
    r1 = torch.randn(7, requires_grad=True)
    r2 = r1.detach().clone().requires_grad_(True)
    fast = ranking_loss(r1, winners, losers, groups)
    slow = slow_ranking_loss(r2, rankings)
    fast.backward()
    slow.backward()
    assert torch.allclose(fast, slow, atol=1e-6)
    assert torch.allclose(r1.grad, r2.grad, atol=1e-6)
    # without groups every pair weighs the same: the plain mean
    plain = ranking_loss(r1.detach(), winners, losers)
    assert torch.allclose(plain, -torch.nn.functional.logsigmoid(r1.detach()[winners] - r1.detach()[losers]).mean())


def test_ranking_loss_skips_a_ranking_without_pairs_and_refuses_a_batch_without_any():
    torch.manual_seed(0)
    # ranking 1 (answers 3, 4) is a complete tie: no pairs, so group id 1 never occurs
    rankings = [[(0, 1), (0, 2), (1, 2)], [], [(5, 6)]]
    winners = torch.tensor([w for r in rankings for w, _ in r])
    losers = torch.tensor([l for r in rankings for _, l in r])
    groups = torch.tensor([g for g, r in enumerate(rankings) for _ in r])
    r1 = torch.randn(7, requires_grad=True)
    r2 = r1.detach().clone().requires_grad_(True)
    fast, slow = ranking_loss(r1, winners, losers, groups), slow_ranking_loss(r2, rankings)
    fast.backward()
    slow.backward()
    assert torch.isfinite(fast) and torch.allclose(fast, slow, atol=1e-6)
    assert torch.allclose(r1.grad, r2.grad, atol=1e-6)
    none = torch.tensor([], dtype=torch.long)
    for g in (none, None):
        with pytest.raises(ValueError, match="no pairs in this batch"):
            ranking_loss(torch.zeros(3), none, none, g)


def test_ranking_loss_is_log2_when_all_scores_are_equal():
    loss = ranking_loss(torch.zeros(3), torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2]), torch.tensor([0, 0, 0]))
    assert loss.item() == pytest.approx(math.log(2))


@pytest.fixture(scope="module")
def tiny_rm(tiny_model, tiny_tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("policy")
    save_model(tiny_model, tiny_tokenizer, path)
    model = reward_model_from_policy(path, device="cpu")
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a non-trivial head for the padding tests
    return model


def _padded(tokenizer, texts, side):
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        input_ids[i, cols], mask[i, cols] = torch.tensor(row), 1
    return input_ids, mask


def test_reward_is_read_at_the_last_real_token_with_left_or_right_padding(tiny_rm, tiny_tokenizer):
    texts = ["The cat is red.", "A dog, 22 cm long, was seen near the sea.\n\nNice.", "Q: Where?"]
    alone = torch.stack([rewards(tiny_rm, *_padded(tiny_tokenizer, [t], "right"))[0] for t in texts])
    with torch.no_grad():
        for side in ("right", "left"):
            ids, mask = _padded(tiny_tokenizer, texts, side)
            assert torch.allclose(rewards(tiny_rm, ids, mask), alone, atol=1e-5), side
            # the index is the rightmost real token, and the score is the head's value there
            index = last_token_index(mask)
            for row in range(len(texts)):
                assert mask[row, index[row]] == 1 and mask[row, index[row] + 1:].sum() == 0
        # transformers' own pooling (right padding, positions 0..n-1) reads the same token
        ids, mask = _padded(tiny_tokenizer, texts, "right")
        assert torch.allclose(tiny_rm(input_ids=ids, attention_mask=mask).logits[:, 0], alone, atol=1e-5)


def test_fresh_head_scores_everything_zero(tiny_model, tiny_tokenizer, tmp_path):
    save_model(tiny_model, tiny_tokenizer, tmp_path)
    model = reward_model_from_policy(tmp_path, device="cpu")
    ids, mask = _padded(tiny_tokenizer, ["The cat", "The owl lives in the sea."], "right")
    assert torch.equal(rewards(model, ids, mask), torch.zeros(2))
    assert not hasattr(model, "lm_head")  # the unembedding is gone


def _comparisons():
    """Two labelers' rankings as TRL pairs: one ranks a>b>c, one ranks d>e (f tied with d)."""
    prompt = [{"role": "user", "content": "Where does the cat live?"}]

    def pair(ann, w, l):
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": w}],
                "rejected": [{"role": "assistant", "content": l}], "prompt_id": ann.split("/")[1],
                "annotation_id": ann, "labeler_id": ann.split("/")[0]}
    return [pair("t1/p1", "a", "b"), pair("t1/p1", "a", "c"), pair("t1/p1", "b", "c"),
            pair("t2/p2", "d", "e"), pair("t2/p2", "f", "e")]


def test_ranking_groups_put_each_answer_once_and_keep_pairs_of_one_ranking_together():
    groups = ranking_groups(_comparisons())
    assert [g["annotation_id"] for g in groups] == ["t1/p1", "t2/p2"]
    assert groups[0]["completions"] == ["a", "b", "c"] and groups[0]["pairs"] == [(0, 1), (0, 2), (1, 2)]
    assert groups[1]["completions"] == ["d", "e", "f"] and groups[1]["pairs"] == [(0, 1), (2, 1)]
    pairs = as_pairs(groups)
    assert len(pairs) == 5 and all(p["pairs"] == [(0, 1)] for p in pairs)
    assert [p["completions"] for p in pairs][2] == ["b", "c"]


def _stated_preferences(outputs, tiers):
    """Slow reference: every (x, y) of distinct texts where some copy of x sits in a better tier than
    some copy of y, unless some copy of y also sits in a better tier than some copy of x."""
    tier_of = {i: t for t, tier in enumerate(tiers) for i in tier}
    better = {(outputs[i], outputs[j]) for i in tier_of for j in tier_of
              if outputs[i] != outputs[j] and tier_of[i] < tier_of[j]}
    return {(x, y) for x, y in better if (y, x) not in better}


@pytest.mark.parametrize("tiers", [[[0], [1], [2], [3], [4]], [[2], [0, 4], [1], [3]], [[1], [0, 3], [2, 4]],
                                   [[0], [1], [3], [2], [4]]])
def test_a_text_ranked_twice_gives_no_self_pair_and_no_contradiction(tiers):
    """Outputs 0 and 2 are the same text, and so are 1 and 4: a human may still rank the copies apart.
    In the last ranking every pair of texts is stated both ways, so nothing is left."""
    outputs = ["A", "B", "A", "C", "B"]
    prompt = [{"role": "user", "content": "Q"}]
    event = submit_event("p", "h0", tiers, list(range(5)), [4] * 5, [{}] * 5)
    groups = ranking_groups(comparisons([event], {"p": {"prompt": prompt, "outputs": outputs}}))
    texts = [(g["completions"][w], g["completions"][l]) for g in groups for w, l in g["pairs"]]
    assert len(texts) == len(set(texts)) and set(texts) == _stated_preferences(outputs, tiers)
    assert len(groups) == (1 if texts else 0)  # a ranking with nothing left to learn from is dropped
    (kept_apart,) = groups_from_rankings([event], {"p": {"prompt": prompt, "outputs": outputs}})
    texts = {(outputs[w], outputs[l]) for w, l in kept_apart["pairs"]}
    assert texts == _stated_preferences(outputs, tiers)


def test_group_batch_indexes_winners_and_losers_into_the_flat_answer_list(tiny_tokenizer):
    encoded = encode_groups(tiny_tokenizer, ranking_groups(_comparisons()), max_length=64)
    batch = group_batch(encoded, tiny_tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 6  # each distinct answer once
    assert batch["winners"].tolist() == [0, 0, 1, 3, 5] and batch["losers"].tolist() == [1, 2, 2, 4, 4]
    assert batch["groups"].tolist() == [0, 0, 0, 1, 1]


def test_pair_metrics_agreement_and_calibration_by_hand():
    groups = [{"pairs": [(0, 1), (0, 2), (1, 2)]}]
    metrics = pair_metrics(groups, [[2.0, 1.0, 1.0]])  # right, right, tie
    assert metrics["accuracy"] == pytest.approx(2.5 / 3)
    expected = (2 * -math.log(1 / (1 + math.exp(-1))) + math.log(2)) / 3
    assert metrics["log_loss"] == pytest.approx(expected)
    bins = calibration(groups, [[2.0, 1.0, 1.0]], bins=2)
    assert sum(b["pairs"] for b in bins) == 3
    events = [{"prompt_id": "p", "labeler_id": "a", "ranking": [[0], [1], [2]]},
              {"prompt_id": "p", "labeler_id": "b", "ranking": [[1], [0], [2]]}]
    result = agreement_with_ceiling(events, {"p": [3.0, 2.0, 1.0]})
    # shared pairs (0,1) (0,2) (1,2): labelers agree on 2 of 3; RM agrees with a on all 3, with b on 2
    assert result["labelers"] == pytest.approx(2 / 3) and result["rm"] == pytest.approx(5 / 6)


def _two_answer_comparisons(n, score_fn, seed=0):
    """n one-pair rankings whose winner is drawn with P(a ≻ b) = σ(score(a) − score(b)), as TRL
    records, and the scores by text: data a perfectly calibrated scorer would have produced."""
    rng = random.Random(seed)
    records, score = [], {}
    for k in range(n):
        a, b = f"answer a{k}", f"answer b{k}"
        score[a], score[b] = score_fn(rng), score_fn(rng)
        w, l = (a, b) if rng.random() < 1 / (1 + math.exp(score[b] - score[a])) else (b, a)
        records.append({"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "assistant", "content": w}],
                        "rejected": [{"role": "assistant", "content": l}], "prompt_id": f"p{k}",
                        "annotation_id": f"t0/p{k}", "labeler_id": "t0"})
    groups = ranking_groups(records)
    return groups, [[score[c] for c in g["completions"]] for g in groups]


def _close(bin_, n_se=4.0):
    p = bin_["predicted"]
    return abs(bin_["observed"] - p) < n_se * math.sqrt(max(p * (1 - p), 0.01) / bin_["pairs"])


def test_calibration_of_a_perfectly_calibrated_scorer_and_of_a_constant_one():
    groups, scores = _two_answer_comparisons(4000, lambda rng: rng.gauss(0, 1.5))
    bins = calibration(groups, scores)
    populated = [b for b in bins if b["pairs"] >= 200]
    assert len(populated) >= 6 and sum(b["pairs"] for b in bins) == 4000
    assert all(_close(b) for b in populated), bins
    assert min(b["observed"] for b in populated) < 0.2  # both outcomes occur, not "the lower index won"
    # a scorer that says 0 for everything: every pair predicted ½ (bin 5 of 10), and right about it
    groups, scores = _two_answer_comparisons(2000, lambda rng: 0.0)
    (only,) = calibration(groups, scores)
    assert only["predicted"] == 0.5 and only["pairs"] == 2000 and _close(only)


def test_shift_is_exact_and_survives_save_and_load(tiny_rm, tiny_tokenizer, tmp_path):
    model = copy.deepcopy(tiny_rm)
    ids, mask = _padded(tiny_tokenizer, ["The cat is red.", "The owl"], "right")
    before = rewards(model, ids, mask).detach()
    shift_rewards(model, -0.75)
    after = rewards(model, ids, mask).detach()
    assert torch.allclose(after, before - 0.75, atol=1e-5)
    save_model(model, tiny_tokenizer, tmp_path / "rm")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert torch.allclose(rewards(loaded, ids, mask).detach(), after, atol=1e-6)
    assert torch.allclose(load_reward_model(tmp_path / "rm", "cpu")(input_ids=ids, attention_mask=mask).logits[:, 0],
                          after, atol=1e-5)


def test_normalize_brings_the_demonstrations_mean_to_zero(tiny_rm, tiny_tokenizer):
    model = copy.deepcopy(tiny_rm)
    demos = [{"prompt": [{"role": "user", "content": f"Where does the {a} live?"}],
              "completion": [{"role": "assistant", "content": f"The {a} lives in the sea."}]}
             for a in ("cat", "dog", "owl", "frog")]
    removed = normalize(model, tiny_tokenizer, demos, max_length=64)
    scores = score_texts(model, tiny_tokenizer, [(d["prompt"], d["completion"][0]["content"]) for d in demos], 64)
    assert abs(removed) > 1e-3 and abs(sum(scores) / len(scores)) < 1e-4


def test_training_learns_a_simple_preference(tiny_rm, tiny_tokenizer):
    """Rankings that always prefer answers mentioning "sea": accuracy on new pairs goes up."""
    rng = random.Random(0)
    animals = ["cat", "dog", "owl", "frog", "horse", "whale", "ant", "bee"]

    def group(i):
        a = animals[i % 8]
        good = [f"The {a} lives in the sea.", f"A {a} in the sea."]
        bad = [f"The {a} lives in the forest.", f"A {a} on a farm.", f"The {a} is grey."]
        answers = good + bad
        rng.shuffle(answers)
        pairs = [(i_, j) for i_, j in combinations(range(5), 2) if ("sea" in answers[i_]) != ("sea" in answers[j])]
        pairs = [(i_, j) if "sea" in answers[i_] else (j, i_) for i_, j in pairs]
        return {"annotation_id": f"t{i % 4}/p{i}", "prompt_id": f"p{i}", "labeler_id": f"t{i % 4}",
                "prompt": [{"role": "user", "content": f"Tell me about the {a}."}], "completions": answers,
                "pairs": pairs}
    train, valid = [group(i) for i in range(48)], [group(i) for i in range(48, 64)]
    model = copy.deepcopy(tiny_rm)
    config = RewardConfig(epochs=3, groups_per_batch=4, lr=3e-3, warmup_steps=2, max_length=64, evals_per_epoch=1)
    _, history = train_reward_model(model, tiny_tokenizer, train, valid, config, progress=False)
    assert len(history) == 1 + config.epochs
    assert history[-1]["valid_accuracy"] > 0.9 > history[0]["valid_accuracy"]
    assert history[-1]["valid_loss"] < history[0]["valid_loss"]


def test_train_seconds_count_the_training_steps_not_the_validation(tiny_rm, tiny_tokenizer, monkeypatch):
    import rlhf_lab.reward as reward

    groups = [{"prompt": [{"role": "user", "content": f"Where does the {a} live?"}],
               "completions": [f"The {a} lives in the sea.", "A farm.", "No."], "pairs": [(0, 1), (0, 2), (1, 2)]}
              for a in ("cat", "dog", "owl")]
    real = reward.score_groups
    monkeypatch.setattr(reward, "score_groups", lambda *a, **k: time.sleep(0.3) or real(*a, **k))  # slow validation
    config = RewardConfig(epochs=1, groups_per_batch=1, warmup_steps=1, max_length=64, evals_per_epoch=3)
    start = time.perf_counter()
    _, history = train_reward_model(copy.deepcopy(tiny_rm), tiny_tokenizer, groups, groups, config, progress=False)
    elapsed = time.perf_counter() - start
    seconds = [h["train_seconds"] for h in history]
    assert seconds[0] == 0 and all(a < b for a, b in zip(seconds, seconds[1:]))  # one step between evaluations
    assert seconds[-1] < elapsed - 4 * 0.3  # four validations (one before, three after) are not counted


def test_labeler_folds_partition_the_labelers():
    groups = [{"labeler_id": f"t{i:02d}"} for i in range(40)]
    folds = labeler_folds(groups, 5)
    assert len(folds) == 5 and all(len(f) == 8 for f in folds)
    assert set().union(*folds) == {f"t{i:02d}" for i in range(40)}


def test_an_example_that_is_too_long_is_refused_with_its_prompt(tiny_tokenizer):
    with pytest.raises(ValueError, match="longer than max_length"):
        encode_example(tiny_tokenizer, [{"role": "user", "content": "cat " * 100}], "dog", max_length=32)
