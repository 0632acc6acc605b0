"""How well an answer is written, judged the same way for every task family.

A careful labeler marks an answer down for what no task-specific check sees: non-words and
broken English ("Bing aning witing"), saying the same sentence twice, listing an item again,
stopping in the middle of a sentence. The world knows its own English exactly — every sentence
it writes comes from `sentences.py` and a few templates — so "is this English?" has a gold
answer here: the words and word pairs (bigrams) the world's own writing uses.

Names and attribute values are read as their class ("<creature> is <colour>"), so a pair seen
with one creature counts for every creature; a line's start and end are tokens too, which is
how an answer cut off after "and it" is told from one that stopped.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from .claims import _SOUND_FORMS, split_sentences, words
from .facts import COLOURS, FOODS, HABITATS, NAMES, NUMBER_WORDS, SIZES, plural

START, END = "<s>", "</s>"


def _classes(facts) -> dict[str, str]:
    classes = {w: "<size>" for w in SIZES} | {w: "<colour>" for w in COLOURS}
    classes |= {w: "<habitat>" for w in HABITATS} | {w: "<food>" for w in FOODS}
    classes |= {w: "<sound>" for w in _SOUND_FORMS} | {w: "<number>" for w in NUMBER_WORDS}
    classes |= {n: "<name>" for n in NAMES}
    for c in facts.creatures:
        classes[c.name], classes[plural(c.name)] = "<creature>", "<creatures>"
    return classes


@dataclass(frozen=True)
class Style:
    """The writing-quality factors of one answer, each in [0, 1] (1: as the world would write it)."""

    known_words: float  # share of words that are English here (non-words and broken words cost)
    known_pairs: float  # share of adjacent word pairs, line starts and ends the world's English uses
    distinct: float  # share of sentences / list lines that are not a repeat of an earlier one
    typical: float  # how usual the phrasing is: geometric mean of P(next word | word) over known pairs

    @property
    def fluency(self) -> float:
        return (self.known_words + self.known_pairs) / 2

    @property
    def factor(self) -> float:
        """What writing costs an answer's helpfulness: broken English up to all of it, repeats up to half,
        unusual phrasing up to a tenth (the close calls between two good answers)."""
        return self.fluency * (1.0 - 0.5 * (1.0 - self.distinct)) * (0.9 + 0.1 * self.typical)


class Lexicon:
    """The world's English: its words and word pairs, learned from text the world writes."""

    def __init__(self, facts, texts):
        self.classes = _classes(facts)
        self.words: set[str] = set()
        self.pairs: Counter[tuple[str, str]] = Counter()
        for text in texts:
            for line in self._lines(text):
                self.words.update(line[1:-1])
                self.pairs.update(zip(line, line[1:]))
        self.starts: Counter[str] = Counter()  # how often each token begins a pair: P(b | a) = pairs / starts
        for (a, _), n in self.pairs.items():
            self.starts[a] += n

    @classmethod
    def of_world(cls, world, per_family: int = 300, per_kind: int = 60, seed: int = 0) -> Lexicon:
        """Learn from demonstrations and prompts of every family and documents of every corpus kind."""
        from .corpus import KINDS, Web

        rng = random.Random(f"lexicon-{seed}")
        texts = []
        for name in world.families:
            for _ in range(per_family):
                task = world.sample_task(rng, name)
                texts += [m["content"] for m in task.messages] + [world.demonstrate(task, rng)]
        web = Web(world)
        texts += [web.document(kind, rng) for kind in KINDS for _ in range(per_kind)]
        return cls(world.facts, texts)

    def _token(self, word: str) -> str:
        if word.isdigit():
            return "<digits>"
        if word.endswith("'s") and word[:-2] in self.classes:  # "Lily's" is "<name>'s"
            return self.classes[word[:-2]] + "'s"
        return self.classes.get(word, word)

    def _lines(self, text: str) -> list[list[str]]:
        """Each sentence or line as class tokens between a start and an end token."""
        lines = []
        for sentence in split_sentences(text):
            tokens = [self._token(w) for w in words(sentence)]
            if tokens:
                lines.append([START, *tokens, END])
        return lines

    def style(self, text: str) -> Style:
        lines = self._lines(text)
        if not lines:
            return Style(1.0, 1.0, 1.0, 1.0)
        inner = [t for line in lines for t in line[1:-1]]
        pairs = [p for line in lines for p in zip(line, line[1:])]
        known = [p for p in pairs if p in self.pairs]
        said = [" ".join(words(s)) for s in split_sentences(text) if words(s)]
        log_p = [math.log(self.pairs[p] / self.starts[p[0]]) for p in known]
        return Style(known_words=sum(t in self.words for t in inner) / len(inner),
                     known_pairs=len(known) / len(pairs),
                     distinct=len(set(said)) / len(said),
                     typical=math.exp(sum(log_p) / len(log_p)) if log_p else 0.0)
