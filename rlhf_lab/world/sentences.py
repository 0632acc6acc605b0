"""Facts -> English. Every sentence the world writes about a creature comes from here.

One small grammar serves the corpus, the demonstrations and the checkers' parser
(`claims.py`), so that whatever the world says, the checker can read back.
"""
from __future__ import annotations

import random

from .facts import ATTRIBUTES, Creature, number_word, plural, third_person

# How a sentence names its subject: "The zibbet", "A zibbet", "Zibbets" or "It".
SUBJECT_FORMS = ("the", "a", "plural", "it")


def subject(name: str, form: str) -> str:
    if form == "the":
        return f"The {name}"
    if form == "a":
        return f"A {name}"
    if form == "plural":
        return plural(name).capitalize()
    if form == "it":
        return "It"
    raise ValueError(f"unknown subject form {form!r}; use one of {SUBJECT_FORMS}")


def _legs_phrase(legs: int) -> str:
    return "no legs" if legs == 0 else f"{number_word(legs)} legs"


def state(name: str, attribute: str, value, rng: random.Random, form: str = "the") -> str:
    """One sentence saying that creature `name` has `value` for `attribute` (true or not)."""
    subj = subject(name, form)
    many = form == "plural"
    be, have, can = ("are", "have", "can") if many else ("is", "has", "can")

    def verb(v: str) -> str:
        return v if many else third_person(v)

    if attribute == "size":
        options = [f"{subj} {be} {value}.", f"{subj} {be} {'' if many else 'a '}{value} animal{'s' if many else ''}."]
    elif attribute == "colour":
        options = [f"{subj} {be} {value}."]
        if form != "it":
            options.append(f"The colour of {'' if many else 'the '}{subj.split()[-1].lower()} is {value}.")
    elif attribute == "legs":
        options = [f"{subj} {have} {_legs_phrase(value)}."]
    elif attribute == "habitat":
        options = [f"{subj} {verb('live')} in the {value}.", f"{subj} {verb('make')} {'their' if many else 'its'} home in the {value}."]
    elif attribute == "food":
        options = [f"{subj} {verb('eat')} {value}.", f"{subj} {verb('like')} to eat {value}."]
    elif attribute == "sound":
        options = [f"{subj} {verb(value)}.", f"{subj} {verb(value)} when {'they are' if many else 'it is'} happy."]
    elif attribute in ("swim", "fly"):
        options = [f"{subj} {can}{'' if value else 'not'} {attribute}."]
    else:
        raise ValueError(f"unknown attribute {attribute!r}")
    return rng.choice(options)


def fact(creature: Creature, attribute: str, rng: random.Random, form: str = "the") -> str:
    """A true sentence about `creature`."""
    return state(creature.name, attribute, creature.get(attribute), rng, form)


def intro(creature: Creature, rng: random.Random) -> str:
    """The opening line of a description: 'The zibbet is a small green animal.'"""
    article = "An" if creature.size[0] in "aeiou" else "A"
    return rng.choice([
        f"The {creature.name} is a {creature.size} {creature.colour} animal.",
        f"{article} {creature.name} is a {creature.size} {creature.colour} animal.",
    ])


def describe(creature: Creature, rng: random.Random, attributes: list[str] | None = None,
             n_sentences: int | None = None) -> list[str]:
    """A short true description, one fact per sentence, the subject varied for fluency."""
    attributes = list(attributes or ["legs", "habitat", "food", "sound", "swim", "fly"])
    rng.shuffle(attributes)
    sentences = [intro(creature, rng)]
    for attribute in attributes:
        sentences.append(fact(creature, attribute, rng, rng.choice(["it", "it", "the"])))
    return sentences[:n_sentences] if n_sentences else sentences


def false_value(attribute: str, true_value, rng: random.Random):
    """A value of `attribute` that is *not* the true one (for rumours and wrong answers)."""
    return rng.choice([v for v in ATTRIBUTES[attribute] if v != true_value])
