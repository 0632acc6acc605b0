"""Best-of-N: sample N answers from the SFT model and keep the one the reward model scores highest.

No training at all: the policy is "SFT, then pick". Its KL from SFT is known in closed form
(`losses.best_of_n_kl`), so it is the yardstick every RL method is compared against at equal KL
(Gao, Schulman & Hilton, 2022).
"""
from __future__ import annotations

import math

from .generation import sample
from .tokenizer import format_prompt


def sample_candidates(model, tokenizer, records: list[dict], n: int, max_new_tokens: int = 48,
                      temperature: float = 1.0, seed: int = 0, progress: bool = False) -> list[list[str]]:
    """n sampled answers per prompt record, as one list per record."""
    prompts = [format_prompt(tokenizer, r["prompt"]) for r in records for _ in range(n)]
    texts = [t.strip() for t in sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                       temperature=temperature, seed=seed, progress=progress)]
    return [texts[i * n:(i + 1) * n] for i in range(len(records))]


def pick_best(proxy: list[float], n: int) -> int:
    """Index of the proxy's favourite among the first n candidates: one best-of-n draw."""
    return max(range(n), key=lambda i: proxy[i])


def expected_best_of(proxy: list[float], values: list[float], n: int) -> float:
    """Mean of `values` at the proxy's favourite, over all C(N, n) subsets of the N candidates.

    Ranked by proxy from lowest (rank 0) up, the candidate of rank r wins the C(r, n − 1) subsets made
    of it and n − 1 lower-ranked ones: every n ≤ N from one set of samples, without the noise of
    picking one subset."""
    order = sorted(range(len(proxy)), key=lambda i: proxy[i])
    subsets = math.comb(len(proxy), n)
    return sum(math.comb(rank, n - 1) * values[i] for rank, i in enumerate(order)) / subsets
