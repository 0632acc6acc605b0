"""The tiny instruction world: facts, task families, gold checkers and the web.

    world = World(seed=0)
    task = world.sample_task(random.Random(1))
    world.score(task, "The zibbet is green.")
"""
from __future__ import annotations

import random
from functools import lru_cache

from .checkers import GOLD_WEIGHTS, Score, score
from .claims import Claim, ClaimReader
from .closed_tasks import Classification, ClosedQA, Extraction, Rewrite, Summarization
from .facts import Creature, Facts, make_facts
from .open_tasks import Brainstorming, Chat, Generation, Harmful, OpenQA, Other
from .style import Lexicon
from .tasks import Family, Task

FAMILY_CLASSES = (Generation, OpenQA, Brainstorming, Chat, Rewrite, Summarization,
                  Classification, Other, ClosedQA, Extraction, Harmful)


class World:
    """One world, made from a seed: the same seed always gives the same world."""

    def __init__(self, seed: int = 0, n_creatures: int = 100):
        self.seed = seed
        self.facts = make_facts(seed, n_creatures)
        self.reader = ClaimReader(self.facts)
        self.families: dict[str, Family] = {cls.name: cls(self.facts, self.reader) for cls in FAMILY_CLASSES}
        self.lexicon = Lexicon.of_world(self)

    def family(self, name: str) -> Family:
        if name not in self.families:
            raise KeyError(f"unknown task family {name!r}; known: {', '.join(self.families)}")
        return self.families[name]

    def sample_task(self, rng: random.Random, family: str | None = None) -> Task:
        """A new task; the family is drawn with the paper's use-case weights unless named."""
        if family is None:
            names = list(self.families)
            family = rng.choices(names, weights=[self.families[n].weight for n in names])[0]
        return self.family(family).make(rng)

    def demonstrate(self, task: Task, rng: random.Random) -> str:
        """What a careful labeler would write for `task`."""
        return self.family(task.family).demonstrate(task, rng)

    def score(self, task: Task, response: str) -> Score:
        return score(self.family(task.family), task, response, self.lexicon)

    @staticmethod
    def task_from_record(record: dict) -> Task:
        """Rebuild a task from a prompts/demonstrations JSONL record."""
        return Task(record["family"], record["prompt"], record.get("spec", {}))


@lru_cache(maxsize=4)
def load_world(seed: int = 0) -> World:
    """The world for `seed`, built once per process."""
    return World(seed)


__all__ = ["World", "load_world", "Task", "Score", "Claim", "ClaimReader", "Creature", "Facts",
           "GOLD_WEIGHTS", "FAMILY_CLASSES"]
