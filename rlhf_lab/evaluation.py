"""Ask a model to answer prompts, score the answers with the gold checkers, compare models."""
from __future__ import annotations

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


def win_rate(rows_a: list[dict], rows_b: list[dict], key: str = "overall") -> float:
    """How often A's answer beats B's on the same prompt (ties count half), the paper's main metric."""
    wins = 0.0
    for a, b in zip(rows_a, rows_b, strict=True):
        if a["prompt_id"] != b["prompt_id"]:
            raise ValueError(f"win_rate compares answers to the same prompts, in the same order; "
                             f"got {a['prompt_id']!r} beside {b['prompt_id']!r}")
        wins += 1.0 if a[key] > b[key] else 0.5 if a[key] == b[key] else 0.0
    return wins / len(rows_a)
