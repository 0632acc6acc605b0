"""The ground truth of the tiny world: made-up creatures and their attributes.

The creatures have invented names (a "zibbet", a "flomp") on purpose: a model can
only know what the zibbet eats from the course's own corpus, never from the web
it was trained on elsewhere, and the checkers know the answer exactly.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "brown", "grey", "orange", "purple")
SIZES = ("tiny", "small", "big", "huge")
LEGS = (0, 2, 4, 6, 8)
HABITATS = ("forest", "river", "sea", "desert", "mountains", "farm", "jungle", "swamp", "lake", "cave")
FOODS = ("grass", "fish", "seeds", "leaves", "insects", "fruit", "meat", "mushrooms", "nuts", "berries")
# Sounds are verbs: "the zibbet hums", "zibbets hum".
SOUNDS = ("hum", "squeak", "roar", "whistle", "bark", "hiss", "sing", "click", "growl", "chirp")

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen", "nineteen", "twenty")

# Attribute name -> its possible values; the order is the order sentences describe them in.
ATTRIBUTES = {
    "size": SIZES,
    "colour": COLOURS,
    "legs": LEGS,
    "habitat": HABITATS,
    "food": FOODS,
    "sound": SOUNDS,
    "swim": (True, False),
    "fly": (True, False),
}

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "fl",
           "gl", "gr", "pl", "sk", "sn", "tr", "bl", "kr", "sl", "sw", "st", "j", "w")
_VOWELS = ("a", "e", "i", "o", "u", "oo", "ee", "ai")
_CODAS = ("b", "g", "k", "m", "n", "p", "t", "x", "z", "ck", "nk", "mp", "rf", "rl", "sh")
_ENDINGS = ("et", "le", "o", "a", "in", "y", "er", "ik", "op", "")

PERSON_NAMES = ("Anna", "Ben", "Mia", "Tom", "Lily", "Sam", "Nora", "Leo", "Ella", "Max", "Zoe",
                "Finn", "Ruby", "Omar", "Ivy", "Jack", "Maya", "Noah", "Lucy", "Theo", "Ada",
                "Hugo", "Iris", "Kai", "Lena", "Milo", "Nina", "Owen", "Rosa", "Yuki")
PET_NAMES = ("Pip", "Bo", "Dot", "Fizz", "Gus", "Jinx", "Kiki", "Lulu", "Momo", "Nugget",
             "Pebble", "Rolo", "Sunny", "Tiko", "Waffle", "Ziggy")
# The same names as the lower-case words a response contains (`claims.words`).
PEOPLE = {n.lower() for n in PERSON_NAMES}
NAMES = PEOPLE | {n.lower() for n in PET_NAMES}


def plural(name: str) -> str:
    """English plural of a creature name ("flox" -> "floxes", "zibbet" -> "zibbets")."""
    return name + ("es" if name.endswith(("s", "x", "z", "sh", "ch")) else "s")


def third_person(verb: str) -> str:
    """'hum' -> 'hums', 'hiss' -> 'hisses' (sounds are stored as bare verbs)."""
    return verb + ("es" if verb.endswith(("s", "x", "z", "sh", "ch")) else "s")


def number_word(n: int) -> str:
    return NUMBER_WORDS[n]


@dataclass(frozen=True)
class Creature:
    """One creature and its true attributes."""

    name: str
    size: str
    colour: str
    legs: int
    habitat: str
    food: str
    sound: str
    swim: bool
    fly: bool

    @property
    def plural(self) -> str:
        return plural(self.name)

    def get(self, attribute: str):
        return getattr(self, attribute)


@dataclass
class Facts:
    """All creatures of the world, with look-ups the checkers need."""

    creatures: list[Creature]
    by_name: dict[str, Creature] = field(init=False)

    def __post_init__(self):
        self.by_name = {c.name: c for c in self.creatures}

    def __len__(self) -> int:
        return len(self.creatures)

    def __getitem__(self, name: str) -> Creature:
        return self.by_name[name]

    def with_value(self, attribute: str, value) -> list[Creature]:
        """Every creature whose `attribute` equals `value` (for lists and brainstorming)."""
        return [c for c in self.creatures if c.get(attribute) == value]

    def is_true(self, name: str, attribute: str, value) -> bool:
        return self.by_name[name].get(attribute) == value

    def to_records(self) -> list[dict]:
        return [dict(vars(c)) for c in self.creatures]


def _invent_name(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) + rng.choice(_ENDINGS)


def _reserved_words() -> set[str]:
    """Words the world already uses, which a creature must not be called."""
    words = {str(v) for values in ATTRIBUTES.values() for v in values}
    words |= {third_person(s) for s in SOUNDS} | set(NUMBER_WORDS)
    words |= NAMES
    words |= {"bat", "big", "bug", "dog", "fox", "pig", "rat", "sun", "tin", "ten", "bin", "kin",
              "pin", "pet", "set", "wet", "let", "get", "net", "jet", "bet", "met", "van", "win"}
    return words


def make_facts(seed: int = 0, n_creatures: int = 100) -> Facts:
    """Invent `n_creatures` creatures with random attributes, deterministically from `seed`.

    Sizes and legs are drawn with a mild bias (most creatures are small or big, four-legged)
    so the world has majority values a lazy model can guess — and be wrong about.
    """
    rng = random.Random(f"facts-{seed}")
    reserved = _reserved_words()
    names: list[str] = []
    taken: set[str] = set()
    while len(names) < n_creatures:
        name = _invent_name(rng)
        forms = {name, plural(name)}
        # Reject names that clash with a world word, another name or its plural form.
        if not 3 <= len(name) <= 9 or forms & (reserved | taken):
            continue
        names.append(name)
        taken |= forms
    creatures = []
    for name in names:
        flies = rng.random() < 0.25
        creatures.append(Creature(
            name=name,
            size=rng.choices(SIZES, weights=(1, 3, 3, 1))[0],
            colour=rng.choice(COLOURS),
            legs=2 if flies else rng.choices(LEGS, weights=(1, 1, 4, 2, 1))[0],
            habitat=rng.choice(HABITATS),
            food=rng.choice(FOODS),
            sound=rng.choice(SOUNDS),
            swim=rng.random() < 0.4,
            fly=flies,
        ))
    return Facts(creatures)
