"""Ask a model to answer prompts, score the answers with the gold checkers, compare models."""
from __future__ import annotations

import random
from collections import defaultdict

from .generation import sample
from .models import context_length
from .prompting import PLAIN_STOP_STRINGS, few_shot_within, zero_shot
from .tokenizer import format_prompt

MODES = ("chat", "zero_shot", "few_shot")


def respond(model, tokenizer, records: list[dict], mode: str = "chat", demonstrations: list[dict] | None = None,
            max_new_tokens: int = 64, temperature: float = 0.7, top_p: float = 1.0, seed: int = 0,
            progress: bool = False) -> list[str]:
    """One sampled response per prompt record.

    mode "chat" uses the chat template (SFT and RL models); "zero_shot" and "few_shot" put
    the task as plain text, the way the paper prompted GPT-3 (base models).
    """
    if mode == "chat":
        prompts, stops = [format_prompt(tokenizer, r["prompt"]) for r in records], ()
    elif mode == "zero_shot":
        prompts, stops = [zero_shot(r["prompt"]) for r in records], PLAIN_STOP_STRINGS
    elif mode == "few_shot":
        if not demonstrations:
            raise ValueError("few_shot needs `demonstrations` to draw the examples from")
        budget = context_length(model) - max_new_tokens
        prompts = [few_shot_within(tokenizer, r, demonstrations, budget, seed=seed) for r in records]
        stops = PLAIN_STOP_STRINGS
    else:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    texts = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   seed=seed, stop_strings=stops, progress=progress)
    return [t.strip() for t in texts]


def score_all(world, records: list[dict], responses: list[str]) -> list[dict]:
    """The gold score of each response, as flat rows (family, prompt_id, 3H, flags, Likert)."""
    rows = []
    for record, response in zip(records, responses, strict=True):
        score = world.score(world.task_from_record(record), response)
        rows.append({"prompt_id": record["prompt_id"], "family": record["family"], "response": response,
                     **score.as_dict()})
    return rows


def mean_scores(rows: list[dict], keys=("helpful", "honest", "harmless", "overall")) -> dict:
    """Mean of each key over rows (booleans count as 0/1)."""
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in keys}


def by_family(rows: list[dict], key: str = "helpful") -> dict:
    groups = defaultdict(list)
    for r in rows:
        groups[r["family"]].append(float(r[key]))
    return {f: sum(v) / len(v) for f, v in sorted(groups.items())}


def wins(rows_a: list[dict], rows_b: list[dict], key: str = "overall") -> list[float]:
    """Per prompt: 1 if A's answer beats B's, 0.5 on a tie, 0 if it loses (for `bootstrap_ci`)."""
    outcomes = []
    for a, b in zip(rows_a, rows_b, strict=True):
        if a["prompt_id"] != b["prompt_id"]:
            raise ValueError(f"a win rate compares answers to the same prompts, in the same order; "
                             f"got {a['prompt_id']!r} beside {b['prompt_id']!r}")
        outcomes.append(1.0 if a[key] > b[key] else 0.5 if a[key] == b[key] else 0.0)
    return outcomes


def win_rate(rows_a: list[dict], rows_b: list[dict], key: str = "overall") -> float:
    """How often A's answer beats B's on the same prompt (ties count half), the paper's main metric."""
    outcomes = wins(rows_a, rows_b, key)
    return sum(outcomes) / len(outcomes)


def panel_preferences(world, records: list[dict], responses_a: list[str], responses_b: list[str], panel: list,
                      seed: int = 0) -> list[float]:
    """Per prompt: 1 if a labeler drawn from `panel` ranks A's answer above B's, 0 if below,
    0.5 if the answers are the same text (the paper's labelers compared outputs this way)."""
    rng = random.Random(f"panel-preferences-{seed}")
    outcomes = []
    for record, a, b in zip(records, responses_a, responses_b, strict=True):
        task = world.task_from_record(record)
        tiers = rng.choice(panel).rank([world.score(task, a), world.score(task, b)], [a, b], rng)
        outcomes.append(0.5 if len(tiers) == 1 else 1.0 if tiers[0] == [0] else 0.0)
    return outcomes


def bootstrap_ci(values: list[float], n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (prompts resampled with replacement)."""
    rng = random.Random(f"bootstrap-{seed}")
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(n_resamples))
    tail = (1 - level) / 2
    return means[int(tail * n_resamples)], means[min(n_resamples - 1, int((1 - tail) * n_resamples))]


def panel_win_rate(world, records: list[dict], responses_a: list[str], responses_b: list[str], panel: list,
                   seed: int = 0) -> dict:
    """How often a held-out labeler prefers A to B (ties half), with a 95% bootstrap interval."""
    outcomes = panel_preferences(world, records, responses_a, responses_b, panel, seed)
    low, high = bootstrap_ci(outcomes, seed=seed)
    return {"win_rate": sum(outcomes) / len(outcomes), "low": low, "high": high, "n": len(outcomes)}


def likert_distribution(world, records: list[dict], responses: list[str], panel: list, seed: int = 0) -> list[float]:
    """Share of answers a held-out labeler rates 1, 2, ..., 7 (one labeler drawn per answer)."""
    rng = random.Random(f"likert-{seed}")
    counts = [0] * 7
    for record, response in zip(records, responses, strict=True):
        score = world.score(world.task_from_record(record), response)
        counts[rng.choice(panel).likert(score, response, rng) - 1] += 1
    return [c / len(records) for c in counts]


def rate_among(rows: list[dict], key: str, families=None) -> float:
    """Share of rows (optionally only those of `families`) where `key` is true, e.g. the
    hallucination rate on closed-domain tasks."""
    chosen = [r for r in rows if families is None or r["family"] in families]
    if not chosen:
        raise ValueError(f"no rows of families {sorted(families)} to measure {key!r} on")
    return sum(float(r[key]) for r in chosen) / len(chosen)
