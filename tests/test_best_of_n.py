"""Best-of-N: the all-subsets estimator against enumerating every subset, and the pick."""
import itertools
import random

import pytest

from rlhf_lab.best_of_n import expected_best_of, pick_best, sample_candidates


@pytest.mark.parametrize("n", [1, 2, 3, 6])
def test_expected_best_of_equals_the_mean_over_every_subset(n):
    rng = random.Random(n)
    proxy, values = [rng.random() for _ in range(6)], [rng.random() for _ in range(6)]
    subsets = list(itertools.combinations(range(6), n))
    brute = sum(values[max(s, key=lambda i: proxy[i])] for s in subsets) / len(subsets)
    assert expected_best_of(proxy, values, n) == pytest.approx(brute)
    assert expected_best_of(proxy, values, 1) == pytest.approx(sum(values) / 6)


def test_pick_best_looks_at_the_first_n_only():
    assert pick_best([0.1, 0.5, 0.2, 0.9], 3) == 1 and pick_best([0.1, 0.5, 0.2, 0.9], 4) == 3


def test_sample_candidates_groups_n_answers_per_record(tiny_model, tiny_tokenizer):
    records = [{"prompt": [{"role": "user", "content": q}]} for q in ("Where does the cat live?", "Hi")]
    candidates = sample_candidates(tiny_model, tiny_tokenizer, records, n=3, max_new_tokens=5, seed=1)
    assert [len(c) for c in candidates] == [3, 3]
    assert candidates == sample_candidates(tiny_model, tiny_tokenizer, records, n=3, max_new_tokens=5, seed=1)
    assert len(set(candidates[0])) > 1  # really sampled, not n copies


def test_expected_best_of_with_gold_as_its_own_proxy_is_the_mean_best_over_subsets_even_with_ties():
    gold = [0.2, 0.9, 0.5, 0.9, 0.2, 0.7]  # ties: which tied answer wins changes nothing
    for n in range(1, 7):
        subsets = list(itertools.combinations(gold, n))
        assert expected_best_of(gold, gold, n) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))
