"""What a task is, and the machinery every task family shares.

A task is a conversation (`messages`, the last one the user's) plus a `spec`: the
hidden facts a checker needs to score any response (the asked attribute, the right
sort order, the input text of a closed-domain task, ...). Specs are plain JSON so a
task survives a round trip through data/prompts/*.jsonl.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from .claims import ClaimReader, split_sentences, words
from .facts import NAMES, Facts


@dataclass
class Task:
    family: str
    messages: list[dict]
    spec: dict = field(default_factory=dict)

    @property
    def instruction(self) -> str:
        """The last user message: what the model is asked to do now."""
        return self.messages[-1]["content"]


def user(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


@dataclass
class Judgement:
    """A family's verdict on helpfulness; honesty and harmlessness are judged in common."""

    helpful: float
    satisfies_constraint: bool = True
    hallucinated: list = field(default_factory=list)  # closed-domain: stated but not in the input
    checked_items: int = 0  # items of an answer checked apart from claims (the members of a list)
    wrong_items: int = 0  # how many of those are false (a listed creature without the property)


class Family:
    """One use case of the paper's table: makes prompts, writes demonstrations, judges.

    `weight` is the family's share of prompts (the paper's Table 1, in percent).
    `closed_domain` families give the model an input text; stating anything that is not
    in it is a hallucination even when true in the world (the paper's definition).
    """

    name: str = ""
    weight: float = 0.0
    closed_domain: bool = False

    def __init__(self, facts: Facts, reader: ClaimReader):
        self.facts = facts
        self.reader = reader

    def make(self, rng: random.Random) -> Task:
        raise NotImplementedError

    def demonstrate(self, task: Task, rng: random.Random) -> str:
        raise NotImplementedError

    def judge(self, task: Task, response: str) -> Judgement:
        raise NotImplementedError

    # Helpers the families share -------------------------------------------------
    def creature(self, rng: random.Random):
        return rng.choice(self.facts.creatures)

    def new_claims(self, task: Task, response: str) -> list:
        """Claims of `response` that the task's input text does not make, and names of people or
        pets it does not mention (closed domain: "Omar's pet" when the text is about Kai)."""
        given = set(self.reader.read(task.spec["input"]))
        in_input = set(words(task.spec["input"]))
        said = (w.removesuffix("'s") for w in words(response))
        invented = [w for w in dict.fromkeys(said) if w in NAMES and w not in in_input]
        return [c for c in self.reader.read(response) if c not in given] + invented




def concise(response: str, max_sentences: int = 2) -> float:
    """Short questions deserve short answers: each sentence past `max_sentences` costs 15% of the
    credit, down to half."""
    extra = len(split_sentences(response)) - max_sentences
    return max(0.5, 1.0 - 0.15 * max(0, extra))


def count_fit(n: int, wanted: int, step: float = 0.125, floor: float = 0.5) -> float:
    """1 for `wanted` items (or sentences), `step` less for each one too many or too few, never below `floor`."""
    return max(floor, 1.0 - step * abs(n - wanted))
