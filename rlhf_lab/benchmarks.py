""""Public NLP" tasks in miniature: what the base model can do from pretraining alone.

The paper measures the *alignment tax* — RLHF's regressions on public NLP benchmarks —
and PPO-ptx's repair of it. Our benchmark is fact completion, scored the way evaluation
harnesses score multiple choice: the model completes "The zibbet lives in the", each
candidate value is scored by its log-probability, and the best one is the model's answer.
"""
from __future__ import annotations

import torch

from .utils import eval_mode
from .world.facts import ATTRIBUTES, number_word

# attribute -> (prompt template, how a value is written after it)
PROBES = {
    "habitat": ("The {x} lives in the", lambda v: f" {v}"),
    "food": ("The {x} eats", lambda v: f" {v}"),
    "legs": ("The {x} has", lambda v: f" {number_word(v)} legs" if v else " no legs"),
    "colour": ("The colour of the {x} is", lambda v: f" {v}"),
}


@torch.no_grad()
def continuation_logprobs(model, tokenizer, prompt: str, continuations: list[str]) -> list[float]:
    """log p(continuation | prompt) for each continuation, summed over its tokens."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    seqs = [prompt_ids + tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
    device = next(model.parameters()).device
    logprobs = torch.log_softmax(model(input_ids=ids.to(device)).logits.float(), dim=-1)
    totals = []
    for i, s in enumerate(seqs):
        positions = range(len(prompt_ids) - 1, len(s) - 1)
        totals.append(sum(float(logprobs[i, t, s[t + 1]]) for t in positions))
    return totals


def fact_completion(model, tokenizer, facts, attributes=tuple(PROBES)) -> dict[str, float]:
    """Multiple-choice accuracy per attribute over every creature, and their mean ("all")."""
    accuracy = {}
    with eval_mode(model):
        for attribute in attributes:
            template, written = PROBES[attribute]
            values = ATTRIBUTES[attribute]
            correct = 0
            for c in facts.creatures:
                scores = continuation_logprobs(model, tokenizer, template.format(x=c.name), [written(v) for v in values])
                correct += values[max(range(len(values)), key=scores.__getitem__)] == c.get(attribute)
            accuracy[attribute] = correct / len(facts.creatures)
    accuracy["all"] = sum(accuracy.values()) / len(attributes)
    return accuracy


def chance(attributes=tuple(PROBES)) -> float:
    """Accuracy of guessing uniformly, averaged like fact_completion's "all"."""
    return sum(1 / len(ATTRIBUTES[a]) for a in attributes) / len(attributes)
