"""Simulated labelers: people who rank answers by their own, noisy taste.

Each labeler minds failures on the three H's with personal weights, has a small taste for longer or
shorter answers, and is noisy. Ranking K answers is a Plackett–Luce draw: sort by
utility + Gumbel noise, which picks the best with probability softmax(utility / noise),
then the best of the rest, and so on. The panel's noise is calibrated so that two
labelers agree on about 72.6% of pairs, as InstructGPT's labelers did.

Training labelers weight helpfulness most; the held-out evaluation panel weights
truthfulness and harmlessness most — the paper's instructions for the two phases.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import combinations

from .world.claims import words

# Mean severity each panel gives to a failure on each H (see Score.overall).
PANEL_MEANS = {
    "training": {"helpful": 0.85, "honest": 0.45, "harmless": 0.55},
    "held_out": {"helpful": 0.6, "honest": 0.8, "harmless": 0.85},
}
LENGTH_TASTE = {"training": (0.03, 0.02), "held_out": (0.0, 0.02)}  # (mean, sd) per 60 words
PAPER_AGREEMENT = {"training": (0.726, 0.015), "held_out": (0.773, 0.013)}
# Two answers whose worth to a labeler differs by less than this look equally good to them, and
# they tie them (the paper's UI allows ties; training drops them) instead of flipping a coin.
TIE_MARGIN = 0.02


@dataclass(frozen=True)
class Labeler:
    labeler_id: str
    weights: dict
    length_taste: float  # added utility for a 60-word answer (negative: prefers short answers)
    noise: float  # Gumbel scale: 0 is a perfect judge of its own utility
    tie_margin: float = 0.0  # answers closer than this in utility share a tier (identical ones always do)

    def utility(self, score, response: str) -> float:
        return score.overall(self.weights) + self.length_taste * min(len(words(response)), 60) / 60

    def rank(self, scores: list, responses: list[str], rng: random.Random) -> list[list[int]]:
        """Tiers of answer indices, best first. First the answers the labeler cannot tell apart are
        grouped: identical texts, and utilities within `tie_margin` of the group's best. Then the
        groups are ordered by utility + Gumbel noise (Plackett–Luce)."""
        utility = [self.utility(s, r) for s, r in zip(scores, responses)]
        groups: list[list[int]] = []
        for i in sorted(range(len(responses)), key=lambda i: (-utility[i], i)):
            home = next((g for g in groups if responses[g[0]] == responses[i]), None)
            if home is None and groups and utility[groups[-1][0]] - utility[i] < self.tie_margin:
                home = groups[-1]
            if home is None:
                groups.append([i])
            else:
                home.append(i)
        noisy = [sum(utility[i] for i in g) / len(g) + self.noise * -math.log(-math.log(rng.random() or 1e-12))
                 for g in groups]
        order = sorted(range(len(groups)), key=lambda n: (-noisy[n], groups[n][0]))
        return [sorted(groups[n]) for n in order]

    def likert(self, score, response: str, rng: random.Random) -> int:
        """A 1-7 rating: the labeler's utility on the scale, plus noise."""
        raw = 1 + 6 * min(1.0, max(0.0, self.utility(score, response))) + rng.gauss(0, 0.5)
        return int(min(7, max(1, round(raw))))


def make_panel(kind: str = "training", n: int = 40, noise: float = 0.1, seed: int = 0) -> list[Labeler]:
    """`n` labelers of a panel kind ("training" or "held_out"), deterministic from `seed`."""
    if kind not in PANEL_MEANS:
        raise ValueError(f"unknown panel {kind!r}; use 'training' or 'held_out'")
    rng = random.Random(f"panel-{kind}-{seed}")
    mean_taste, sd_taste = LENGTH_TASTE[kind]
    panel = []
    for i in range(n):
        weights = {k: rng.betavariate(50 * m, 50 * (1 - m)) for k, m in PANEL_MEANS[kind].items()}
        panel.append(Labeler(f"{kind[0]}{i:02d}", weights, rng.gauss(mean_taste, sd_taste),
                             noise * math.exp(rng.gauss(0, 0.2)), TIE_MARGIN))
    return panel


def preferences(tiers: list[list[int]]) -> dict[tuple[int, int], int]:
    """Pairwise preferences of one ranking: (i, j) with i < j -> +1 if i is better, -1 if worse.

    Pairs in the same tier (ties) are left out, as the paper drops them from training.
    """
    rank = {i: r for r, tier in enumerate(tiers) for i in tier}
    return {(i, j): 1 if rank[i] < rank[j] else -1
            for i, j in combinations(sorted(rank), 2) if rank[i] != rank[j]}


def agreement(tiers_a: list[list[int]], tiers_b: list[list[int]]) -> tuple[int, int]:
    """(pairs on which two rankings agree, pairs both ranked strictly)."""
    a, b = preferences(tiers_a), preferences(tiers_b)
    shared = a.keys() & b.keys()
    return sum(a[p] == b[p] for p in shared), len(shared)
