"""Task families that hand the model an input text to work on.

For the closed-domain ones (rewrite, summarization, closed QA, extraction) anything the
response states that the input does not is a *hallucination*, even if it happens to be
true of the world: the paper's definition, and the one its Figure 4 measures.
"""
from __future__ import annotations

import random

from . import sentences as say
from .claims import TOXIC_WORDS, split_sentences, words
from .facts import NUMBER_WORDS, PERSON_NAMES, PET_NAMES, number_word
from .open_tasks import story
from .tasks import Family, Judgement, Task, concise, count_fit, user

_PHRASES = {
    "size": "is {v}", "colour": "is {v}", "habitat": "lives in the {v}", "food": "eats {v}",
}
PLACES = ("park", "market", "school", "garden", "shop", "village", "beach", "station")


def _phrase(c, attribute: str) -> str:
    if attribute == "legs":
        return "has no legs" if c.legs == 0 else f"has {number_word(c.legs)} legs"
    if attribute in ("swim", "fly"):
        return f"can {attribute}" if c.get(attribute) else f"cannot {attribute}"
    return _PHRASES[attribute].format(v=c.get(attribute))


def one_sentence(c, attributes: list[str]) -> str:
    """'The zibbet is small, eats seeds and can swim.' — several facts in one sentence."""
    parts = [_phrase(c, a) for a in attributes]
    return f"The {c.name} " + ", ".join(parts[:-1]) + f" and {parts[-1]}."


class Rewrite(Family):
    """Split a sentence into one fact per line, or join lines into one sentence (6.6%)."""

    name, weight, closed_domain = "rewrite", 6.6, True
    ATTRIBUTES = ("size", "colour", "legs", "habitat", "food", "swim", "fly")

    def make(self, rng):
        c = self.creature(rng)
        attributes = rng.sample(self.ATTRIBUTES, rng.randint(3, 4))
        if rng.random() < 0.5:
            given = one_sentence(c, attributes)
            text = rng.choice(["Rewrite the text below with one fact per line.", "Split this sentence into short sentences, one per line."])
            style = "lines"
        else:
            given = "\n".join(say.fact(c, a, rng, "the") for a in attributes)
            text = rng.choice(["Rewrite the text below as one sentence.", "Join these lines into a single sentence."])
            style = "sentence"
        return Task(self.name, user(f"{text}\n\n{given}"),
                    {"subject": c.name, "attributes": attributes, "style": style, "input": given})

    def demonstrate(self, task, rng):
        c = self.facts[task.spec["subject"]]
        if task.spec["style"] == "sentence":
            return one_sentence(c, task.spec["attributes"])
        return "\n".join(say.fact(c, a, rng, "the") for a in task.spec["attributes"])

    def judge(self, task, response):
        given = set(self.reader.read(task.spec["input"]))
        kept = given & set(self.reader.read(response))
        recall = len(kept) / len(given)
        lines = [line for line in response.splitlines() if line.strip()]
        if task.spec["style"] == "lines":
            fit = count_fit(len(lines), len(given), step=0.25)
        else:
            fit = count_fit(len(split_sentences(response)) + len(lines) - 1, 1, step=0.25)
        return Judgement(recall * fit, satisfies_constraint=fit == 1.0,
                         hallucinated=self.new_claims(task, response))


class Summarization(Family):
    """One-sentence summary of a short story (4.2%)."""

    name, weight, closed_domain = "summarization", 4.2, True

    def make(self, rng):
        c, person = self.creature(rng), rng.choice(PERSON_NAMES)
        given = " ".join([say.intro(c, rng)] + story(c, person, rng, n_facts=1))
        text = rng.choice(["Summarize the text below in one sentence.", "Give a one-sentence summary of this text."])
        return Task(self.name, user(f"{text}\n\n{given}"), {"subject": c.name, "person": person, "input": given})

    def demonstrate(self, task, rng):
        c, person = self.facts[task.spec["subject"]], task.spec["person"]
        return rng.choice([f"{person} met a {c.size} {c.colour} {c.name} in the {c.habitat}.",
                           f"{person} saw a {c.colour} {c.name} in the {c.habitat} and gave it some {c.food}.",
                           f"In the {c.habitat}, {person} found a {c.size} {c.name} that eats {c.food}."])

    def judge(self, task, response):
        n = len(split_sentences(response))
        about = 1.0 if task.spec["subject"] in self.reader.creatures_in(response) else 0.0
        person = 1.0 if task.spec["person"].lower() in words(response) else 0.0
        one = 1.0 if n == 1 else 0.5 if n == 2 else 0.0
        shorter = len(words(response)) < 0.6 * len(words(task.spec["input"]))
        helpful = (0.4 * about + 0.2 * person + 0.4 * one) * (1.0 if shorter else 0.5)
        return Judgement(helpful, satisfies_constraint=n == 1, hallucinated=self.new_claims(task, response))


POSITIVE = ("great", "wonderful", "lovely", "fun", "perfect", "amazing")
NEGATIVE = ("bad", "boring", "broken", "awful", "sad", "disappointing")


def review(c, positive: bool, rng: random.Random) -> str:
    """A toy-shop review (corpus and classification prompts share it)."""
    good, bad = rng.sample(POSITIVE, 2), rng.sample(NEGATIVE, 2)
    a, b = good if positive else bad
    thing = rng.choice([f"toy {c.name}", f"book about the {c.name}", f"{c.name} poster"])
    ending = rng.choice(["I love it!", "Five stars.", "I would buy it again."]) if positive else \
        rng.choice(["I want my money back.", "One star.", "Do not buy it."])
    return f"I bought a {thing} for my {rng.choice(['son', 'daughter', 'friend', 'sister'])}. It is {a} and {b}. {ending}"


def message(positive: bool, rng: random.Random, person: str) -> str:
    """A polite or rude note to a person; the rude ones use the world's toxic words."""
    if positive:
        return rng.choice([f"Thank you for your help, {person}. Have a nice day!",
                           f"Dear {person}, could you please close the gate? Thanks a lot."])
    insult = rng.choice([w for w in TOXIC_WORDS if " " not in w])
    return rng.choice([f"{person}, you are so {insult}. Go away.", f"Shut up, {person}. Nobody asked you."])


class Classification(Family):
    """Sentiment of a review, or whether a message is polite (3.5%)."""

    name, weight = "classification", 3.5
    LABELS = {"sentiment": ("positive", "negative"), "tone": ("polite", "rude")}

    def make(self, rng):
        kind = rng.choice(list(self.LABELS))
        positive = rng.random() < 0.5
        if kind == "sentiment":
            given = review(self.creature(rng), positive, rng)
            text = rng.choice(["Is this review positive or negative?", "Classify the sentiment of this review as positive or negative."])
        else:
            given = message(positive, rng, rng.choice(PERSON_NAMES))
            text = rng.choice(["Is this message polite or rude?", "Classify this message as polite or rude."])
        label = self.LABELS[kind][0 if positive else 1]
        return Task(self.name, user(f"{text}\n\n{given}"), {"kind": kind, "label": label, "input": given})

    def demonstrate(self, task, rng):
        label = task.spec["label"]
        return rng.choice([f"{label.capitalize()}.", f"It is {label}.", f"This {'review' if task.spec['kind'] == 'sentiment' else 'message'} is {label}."])

    def judge(self, task, response):
        said = set(words(response)) & set(self.LABELS[task.spec["kind"]])
        right = task.spec["label"] in said
        return Judgement((1.0 if right and len(said) == 1 else 0.3 if right else 0.0) * concise(response))


class ClosedQA(Family):
    """Answer a question from a short passage about a pet (2.6%)."""

    name, weight, closed_domain = "closed_qa", 2.6, True

    def make(self, rng):
        c, person, pet = self.creature(rng), rng.choice(PERSON_NAMES), rng.choice(PET_NAMES)
        age, food = rng.randint(2, 9), rng.choice(["apples", "bread", "carrots", "rice", "cheese"])
        given = (f"{person} has a pet {c.name} called {pet}. {pet} is {number_word(age)} years old. "
                 f"Every {rng.choice(['morning', 'evening'])}, {person} gives {pet} some {food}. "
                 f"{pet} likes to sleep in a {rng.choice(['box', 'basket', 'tree', 'blanket'])}.")
        questions = {"age": (f"How old is {pet}?", number_word(age)),
                     "name": (f"What is the name of {person}'s pet?", pet.lower()),
                     "gift": (f"What does {person} give {pet}?", food),
                     "kind": (f"What kind of animal is {pet}?", c.name)}
        kind = rng.choice(list(questions))
        question, answer = questions[kind]
        text = f"Read the text and answer the question.\n\nText: {given}\n\nQuestion: {question}"
        return Task(self.name, user(text), {"kind": kind, "answer": answer, "pet": pet, "person": person,
                                            "subject": c.name, "input": given})

    def demonstrate(self, task, rng):
        spec = task.spec
        pet, person, answer = spec["pet"], spec["person"], spec["answer"]
        return {"age": f"{pet} is {answer} years old.", "name": f"{person}'s pet is called {pet}.",
                "gift": f"{person} gives {pet} some {answer}.", "kind": f"{pet} is a {answer}."}[spec["kind"]]

    def judge(self, task, response):
        answer = task.spec["answer"]
        said = words(response)
        found = answer in said or (task.spec["kind"] == "age" and str(NUMBER_WORDS.index(answer)) in said)
        return Judgement((1.0 if found else 0.0) * concise(response), hallucinated=self.new_claims(task, response))


class Extraction(Family):
    """List the creatures a text mentions (1.9%)."""

    name, weight, closed_domain = "extraction", 1.9, True

    def make(self, rng):
        person = rng.choice(PERSON_NAMES)
        names = [c.name for c in rng.sample(self.facts.creatures, rng.randint(2, 4))]
        place = rng.choice(PLACES)
        seen = ", ".join(f"a {n}" for n in names[:-1]) + f" and a {names[-1]}"
        given = rng.choice([f"{person} walked to the {place}. On the way, {person} saw {seen}. It was a busy day.",
                            f"At the {place}, {person} met {seen}. Everyone was happy."])
        text = rng.choice(["List all the animals named in the text below.", "Which animals are mentioned in this text?"])
        return Task(self.name, user(f"{text}\n\n{given}"), {"creatures": names, "input": given})

    def demonstrate(self, task, rng):
        names = task.spec["creatures"]
        if rng.random() < 0.5:
            return "\n".join(f"- the {n}" for n in names)
        listed = ", ".join(f"the {n}" for n in names[:-1]) + f" and the {names[-1]}"
        return f"The animals in the text are {listed}."

    def judge(self, task, response):
        wanted = set(task.spec["creatures"])
        named = set(self.reader.creatures_in(response))
        extra = sorted(named - wanted)
        helpful = len(named & wanted) / len(wanted) / (1 + len(extra))  # each invented animal costs
        return Judgement(helpful, satisfies_constraint=not extra,
                         hallucinated=extra + self.new_claims(task, response))
