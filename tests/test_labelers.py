"""Simulated labelers: Plackett-Luce ranking, ties, agreement counting, panel make-up."""
import math
import random
from itertools import permutations

import pytest

from rlhf_lab.labelers import TIE_MARGIN, Labeler, agreement, make_panel, preferences
from rlhf_lab.world.checkers import Score


def score(helpful, honest=1.0, harmless=1.0):
    return Score(helpful, honest, harmless, {})


def test_noiseless_labeler_ranks_by_utility_and_ties_identical_answers():
    judge = Labeler("x", {"helpful": 1.0, "honest": 0.0, "harmless": 0.0}, 0.0, 0.0)
    scores = [score(0.2), score(1.0), score(0.5), score(1.0)]
    tiers = judge.rank(scores, ["a", "b", "c", "b"], random.Random(0))
    assert tiers == [[1, 3], [2], [0]]


def test_plackett_luce_first_choice_probabilities_match_softmax():
    """Sorting by utility + Gumbel noise picks item i first with prob softmax(u / noise)."""
    judge = Labeler("x", {"helpful": 1.0, "honest": 0.0, "harmless": 0.0}, 0.0, 0.25)
    utilities = [0.0, 0.5, 1.0]
    scores = [score(u) for u in utilities]
    rng = random.Random(0)
    n = 20000
    firsts = [judge.rank(scores, ["a", "b", "c"], rng)[0][0] for _ in range(n)]
    z = sum(math.exp(u / 0.25) for u in utilities)
    for i, u in enumerate(utilities):
        assert firsts.count(i) / n == pytest.approx(math.exp(u / 0.25) / z, abs=0.015)


def test_preferences_drop_ties_and_agreement_counts_shared_pairs():
    assert preferences([[2], [0, 1]]) == {(0, 2): -1, (1, 2): -1}
    assert agreement([[0], [1], [2]], [[0], [2], [1]]) == (2, 3)
    assert agreement([[0, 1], [2]], [[1], [0], [2]]) == (2, 2)  # the tied pair is not compared
    for order in permutations(range(4)):
        tiers = [[i] for i in order]
        assert agreement(tiers, tiers) == (6, 6)


def test_panels_are_deterministic_and_weight_the_hs_as_the_paper_instructed():
    train, held = make_panel("training", seed=0), make_panel("held_out", seed=0)
    assert train == make_panel("training", seed=0) and len(train) == 40
    mean = lambda panel, k: sum(l.weights[k] for l in panel) / len(panel)  # noqa: E731
    # training labelers mind unhelpfulness most; evaluation labelers mind falsehood and harm more
    assert mean(train, "helpful") > max(mean(train, "honest"), mean(train, "harmless"))
    assert mean(held, "honest") > mean(held, "helpful") and mean(held, "harmless") > mean(held, "helpful")
    assert all(0 < w < 1 for l in train + held for w in l.weights.values())
    with pytest.raises(ValueError, match="unknown panel 'crowd'"):
        make_panel("crowd")


def test_answers_within_the_tie_margin_are_tied_not_flipped():
    """A close call is a tie, however noisy the labeler; clearly different answers are still ordered."""
    judge = Labeler("x", {"helpful": 1.0, "honest": 0.0, "harmless": 0.0}, 0.0, 0.3, tie_margin=0.02)
    scores = [score(0.90), score(0.91), score(0.5)]
    rng = random.Random(0)
    rankings = [judge.rank(scores, ["a", "b", "c"], rng) for _ in range(300)]
    assert all([0, 1] in r and len(r) == 2 for r in rankings)
    first = sum(r[0] == [0, 1] for r in rankings) / len(rankings)
    assert 0.7 < first < 1.0  # the better group usually wins, the noise still sometimes flips it
    assert make_panel("training")[0].tie_margin == TIE_MARGIN > 0
