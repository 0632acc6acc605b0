"""Plain-text prompts for base models: zero-shot and few-shot.

(SFT and RL models are prompted with the chat template: `tokenizer.format_prompt`.)

A base model has never seen a chat template, so the paper prompts GPT-3 with plain text:
zero-shot (the instruction as it is) or few-shot (a prefix of solved examples). Our web
has FAQ pages in a "Q: ... / A: ..." format, so that is the few-shot format that works.
"""
from __future__ import annotations

import random

# Where a plain-text answer ends: a blank line, or the next "Q:" of a few-shot page.
PLAIN_STOP_STRINGS = ("\n\n", "\nQ:")


def plain_text(messages: list[dict]) -> str:
    """A conversation as plain lines, the way it would appear on a web page."""
    return "\n".join(m["content"] for m in messages)


def zero_shot(messages: list[dict]) -> str:
    return plain_text(messages) + "\n"


def few_shot(messages: list[dict], examples: list[tuple[list[dict], str]]) -> str:
    """Solved examples as Q/A pairs, then the task, then "A:" for the model to continue."""
    shots = "".join(f"Q: {plain_text(m)}\nA: {answer}\n\n" for m, answer in examples)
    return f"{shots}Q: {plain_text(messages)}\nA:"


def pick_examples(demonstrations: list[dict], record: dict, k: int, rng: random.Random) -> list[tuple[list[dict], str]]:
    """`k` demonstrations of the record's family (never the record itself) for a few-shot prefix."""
    pool = [d for d in demonstrations if d["family"] == record["family"] and d["prompt_id"] != record["prompt_id"]]
    return [(d["prompt"], d["completion"][0]["content"]) for d in rng.sample(pool, min(k, len(pool)))]


def few_shot_within(tokenizer, record: dict, demonstrations: list[dict], max_tokens: int, k: int = 3,
                    seed: int = 0) -> str:
    """The longest few-shot prompt with at most `k` examples that fits in `max_tokens`."""
    examples = pick_examples(demonstrations, record, k, random.Random(f"{seed}-{record['prompt_id']}"))
    while True:
        prompt = few_shot(record["prompt"], examples)
        if not examples or len(tokenizer(prompt, verbose=False)["input_ids"]) <= max_tokens:
            return prompt
        examples = examples[:-1]
