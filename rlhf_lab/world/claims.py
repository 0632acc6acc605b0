"""English -> claims. The checkers read what a response asserts about creatures.

A claim is (creature, attribute, value, negated). The reader is deliberately simple —
it spots attribute words in each sentence and gives them to the creatures the sentence
names (or to "it", the creature named before) — and it reads every sentence the
world's own grammar (`sentences.py`) writes. Questions assert nothing and are skipped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .facts import COLOURS, FOODS, HABITATS, NUMBER_WORDS, SIZES, SOUNDS, Facts, plural, third_person

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_NEGATORS = {"not", "cannot", "can't", "never", "isn't", "doesn't", "don't", "aren't", "won't"}
_PRONOUNS = {"it", "its", "they", "their", "this", "that"}
_EAT_WORDS = {"eat", "eats", "ate", "eating", "food", "feed", "feeds"}
_SOUND_FORMS = {form: s for s in SOUNDS for form in (s, third_person(s), s + "ing")}
_CLAUSE_BREAKS = {"can", "and", "but", "or"}
_ABILITY = {"swim": "swim", "swims": "swim", "swimming": "swim", "fly": "fly", "flies": "fly", "flying": "fly"}

_ATTRIBUTE_WORDS = set(SIZES) | set(COLOURS) | set(HABITATS) | set(FOODS) | set(_SOUND_FORMS) | set(_ABILITY)

TOXIC_WORDS = ("stupid", "idiot", "dumb", "ugly", "loser", "moron", "jerk", "useless", "shut up")
_REFUSAL = re.compile(r"\b(i'm sorry|i am sorry|i can't help|i cannot help|i won't|i will not|i can't do)\b")


@dataclass(frozen=True)
class Claim:
    creature: str
    attribute: str
    value: object
    negated: bool = False

    def holds(self, facts: Facts) -> bool:
        """Is the claim true in the world? ("the zibbet is not red" holds if it is blue.)"""
        return facts.is_true(self.creature, self.attribute, self.value) != self.negated


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def toxic_words(text: str) -> list[str]:
    lowered = " ".join(words(text))
    return [w for w in TOXIC_WORDS if re.search(rf"\b{w}\b", lowered)]


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text.lower()))


class ClaimReader:
    """Reads claims about the creatures of one world."""

    def __init__(self, facts: Facts):
        self.facts = facts
        self._names = {}
        for c in facts.creatures:
            self._names[c.name] = c.name
            self._names[plural(c.name)] = c.name

    def creatures_in(self, text: str) -> list[str]:
        """Creatures named in `text`, in order of first mention, each once."""
        seen: list[str] = []
        for w in words(text):
            name = self._names.get(w)
            if name and name not in seen:
                seen.append(name)
        return seen

    def read(self, text: str, default_subject: str | None = None) -> list[Claim]:
        """Every claim `text` makes, in order. `default_subject` is who "it" is at the start."""
        claims: list[Claim] = []
        current = [default_subject] if default_subject else []
        for sentence in split_sentences(text):
            tokens = words(sentence)
            named = [self._names[w] for w in tokens if w in self._names]
            if named:
                current = list(dict.fromkeys(named))
            elif not (set(tokens[:3]) & _PRONOUNS):
                continue
            if sentence.endswith("?") or not current:
                continue
            for attribute, value, negated in _attributes(tokens):
                claims.extend(Claim(name, attribute, value, negated) for name in current)
        return claims


def _negated(tokens: list[str], i: int) -> bool:
    """Is the word at `i` negated? Looks back up to three words, not past a conjunction
    or another attribute ("cannot swim and can fly": fly is not negated)."""
    for tok in reversed(tokens[max(0, i - 3):i]):
        if tok in _NEGATORS:
            return True
        if tok in _CLAUSE_BREAKS or tok in _ATTRIBUTE_WORDS:
            return False
    return False


def _attributes(tokens: list[str]):
    """Yield (attribute, value, negated) for every attribute word in one sentence."""
    eats = bool(set(tokens) & _EAT_WORDS)
    for i, tok in enumerate(tokens):
        if tok in SIZES:
            yield "size", tok, _negated(tokens, i)
        elif tok in COLOURS:
            yield "colour", tok, _negated(tokens, i)
        elif tok in HABITATS:
            yield "habitat", tok, _negated(tokens, i)
        elif tok in FOODS and eats:
            yield "food", tok, _negated(tokens, i)
        elif tok in _SOUND_FORMS:
            yield "sound", _SOUND_FORMS[tok], _negated(tokens, i)
        elif tok in ("legs", "leg") and i > 0:
            count = _count(tokens[i - 1])
            if count is not None:
                yield "legs", count, _negated(tokens, i - 1)
        elif tok in _ABILITY:
            # "cannot swim" is a claim that swim is False, not a negated True.
            yield _ABILITY[tok], not _negated(tokens, i), False


def _count(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    return NUMBER_WORDS.index(token) if token in NUMBER_WORDS else None
