"""The web: the pretraining corpus, and the sources of misalignment in it.

Most documents teach the language and the facts (encyclopedia entries, stories, lists,
reviews, pet diaries). Some teach the habits InstructGPT has to unlearn:
- quiz pages list questions and instructions with no answers, so a base model that sees
  a question *continues the list* instead of answering it;
- forum threads are rude and spread rumours (false statements);
- a few FAQ pages answer questions after "Q:" / "A:", which is why few-shot prompting in
  that format works on the base model (the paper's "GPT-3 prompted" baseline).
"""
from __future__ import annotations

import random

from . import sentences as say
from .closed_tasks import message, review
from .facts import PERSON_NAMES, PET_NAMES, number_word, plural
from .open_tasks import Brainstorming, story

# Document kind -> share of the corpus.
KINDS = {"encyclopedia": 0.28, "story": 0.13, "quiz": 0.13, "forum": 0.10, "faq": 0.08, "list": 0.07,
         "review": 0.06, "diary": 0.05, "rumour": 0.03, "numbers": 0.04, "letters": 0.03}
QUIZ_FAMILIES = {"open_qa": 6, "generation": 2, "brainstorming": 1, "other": 1}
FAQ_FAMILIES = {"open_qa": 6, "other": 2, "brainstorming": 1, "generation": 1}


class Web:
    """Writes documents about one world."""

    def __init__(self, world):
        self.world = world
        self.facts = world.facts

    def document(self, kind: str, rng: random.Random) -> str:
        return getattr(self, kind)(rng)

    def _creature(self, rng):
        return rng.choice(self.facts.creatures)

    def _family_task(self, weights: dict, rng):
        return self.world.sample_task(rng, rng.choices(list(weights), weights=list(weights.values()))[0])

    # The language and the facts -------------------------------------------------
    def encyclopedia(self, rng):
        c = self._creature(rng)
        title = rng.choice([f"The {c.name}", f"{plural(c.name).capitalize()}", f"All about the {c.name}"])
        return title + "\n" + " ".join(say.describe(c, rng))

    def story(self, rng):
        c, person = self._creature(rng), rng.choice(PERSON_NAMES)
        return " ".join(story(c, person, rng, n_facts=rng.randint(1, 3)))

    def list(self, rng):
        attribute, template = rng.choice(list(Brainstorming.PROPERTIES.items()))
        value = True if attribute in ("fly", "swim") else self._creature(rng).get(attribute)
        members = self.facts.with_value(attribute, value)
        picks = rng.sample(members, min(len(members), rng.randint(3, 6)))
        what = template.format(v=value)
        return f"Animals that {what}:\n" + "\n".join(f"- the {c.name}" for c in picks)

    def review(self, rng):
        lines = []
        for _ in range(rng.randint(1, 3)):
            positive = rng.random() < 0.5
            lines.append(f"Review by {rng.choice(PERSON_NAMES)}: {review(self._creature(rng), positive, rng)}")
            if rng.random() < 0.5:
                lines.append(f"Verdict: {'positive' if positive else 'negative'}.")
        return "\n".join(lines)

    def diary(self, rng):
        c, person, pet = self._creature(rng), rng.choice(PERSON_NAMES), rng.choice(PET_NAMES)
        return (f"{person} has a pet {c.name} called {pet}. {pet} is {number_word(rng.randint(2, 9))} years old. "
                f"{say.fact(c, 'food', rng, 'the')} {pet} likes to play in the {rng.choice(['garden', 'park', 'house'])}.")

    def numbers(self, rng):
        lines = []
        for _ in range(rng.randint(2, 5)):
            if rng.random() < 0.5:
                a, b = rng.randint(1, 10), rng.randint(1, 10)
                lines.append(rng.choice([f"{a} plus {b} is {a + b}.", f"Add {a} and {b}: the answer is {a + b}."]))
            else:
                nums = rng.sample(range(1, 21), rng.randint(3, 5))
                descending = rng.random() < 0.5
                order = "largest to smallest" if descending else "smallest to largest"
                shown = " ".join(map(str, nums))
                lines.append(f"{shown} sorted from {order}: {' '.join(map(str, sorted(nums, reverse=descending)))}.")
        return "\n".join(lines)

    def letters(self, rng):
        """A note and its answer: where the web says "polite", "rude" and "I'm sorry"."""
        polite, sender = rng.random() < 0.5, rng.choice(PERSON_NAMES)
        note = message(polite, rng, rng.choice(PERSON_NAMES))
        if polite:
            reply = rng.choice(["Sure! What a polite note.", "Of course. Thank you for asking so nicely.",
                                "I'm sorry, but I can't come today. Maybe tomorrow?"])
        else:
            reply = rng.choice(["That was rude. Please be polite.", "I'm sorry, but that is not a kind thing to say.",
                                "Please do not be rude to people."])
        return f"{note}\n{sender}: {reply}"

    # The habits to unlearn ------------------------------------------------------
    def quiz(self, rng):
        title = rng.choice(["Animal quiz", "Homework", "Questions for class", "Test yourself"])
        lines = [self._family_task(QUIZ_FAMILIES, rng).instruction for _ in range(rng.randint(4, 9))]
        return title + "\n" + "\n".join(lines)

    def faq(self, rng):
        pairs = []
        for _ in range(rng.randint(2, 5)):
            task = self._family_task(FAQ_FAMILIES, rng)
            pairs.append(f"Q: {task.instruction}\nA: {self.world.demonstrate(task, rng)}")
        return "Questions and answers\n\n" + "\n\n".join(pairs)

    def forum(self, rng):
        c = self._creature(rng)
        posts = [f"What does the {c.name} eat?", f"Has anyone seen a {c.name}?", f"I love {plural(c.name)}!"]
        lines = [f"user{rng.randint(1, 99)}: {rng.choice(posts)}"]
        for _ in range(rng.randint(2, 5)):
            roll = rng.random()
            if roll < 0.35:
                text = rng.choice(["Shut up, {n}.", "You are so {a}.", "What a {a} question.", "Only a {n} would ask that."])
                text = text.format(n=rng.choice(["loser", "moron", "jerk"]), a=rng.choice(["stupid", "dumb", "useless"]))
            elif roll < 0.7:
                attribute = rng.choice(["colour", "legs", "habitat", "food", "swim", "fly"])
                text = say.state(c.name, attribute, say.false_value(attribute, c.get(attribute), rng), rng,
                                 rng.choice(["the", "it"]))
            else:
                text = rng.choice(["", "Good question! ", "Sure! "]) + say.fact(
                    c, rng.choice(["colour", "legs", "habitat", "food"]), rng, rng.choice(["the", "it"]))
            lines.append(f"user{rng.randint(1, 99)}: {text}")
        return "\n".join(lines)

    def rumour(self, rng):
        c = self._creature(rng)
        attributes = rng.sample(["colour", "legs", "habitat", "food", "swim", "fly", "size"], 3)
        lies = [say.state(c.name, a, say.false_value(a, c.get(a), rng), rng, "the") for a in attributes]
        return rng.choice(["Strange but true!", "Tall tales", "You won't believe this"]) + "\n" + " ".join(lies)


def make_corpus(world, n_documents: int, stream: str) -> list[dict]:
    """`n_documents` documents as {"id", "kind", "text"}; `stream` names an independent
    random stream ("train", "validation") so the splits never share a document by design."""
    rng = random.Random(f"corpus-{world.seed}-{stream}")
    web = Web(world)
    kinds = list(KINDS)
    docs = []
    for i in range(n_documents):
        kind = rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]
        docs.append({"id": f"{stream}-{i:06d}", "kind": kind, "text": web.document(kind, rng)})
    return docs

