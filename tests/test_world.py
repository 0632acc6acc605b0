"""The world: determinism, the claim reader, the corpus and the prompt splits."""
import random
from collections import Counter

import pytest

from rlhf_lab.world import World
from rlhf_lab.world.claims import Claim, is_refusal, split_sentences, toxic_words
from rlhf_lab.world.corpus import make_corpus
from rlhf_lab.world.splits import CAP_PER_USER, PREFIX_CHARS, make_prompts


@pytest.fixture(scope="module")
def world():
    return World(0)


@pytest.fixture(scope="module")
def prompts(world):
    return make_prompts(world)


def test_same_seed_same_world_other_seed_other_world():
    assert World(0).facts.to_records() == World(0).facts.to_records()
    assert World(0).facts.to_records() != World(1).facts.to_records()
    assert len(World(0).facts) == 100
    names = [c.name for c in World(0).facts.creatures]
    assert len(set(names)) == len(names)


def test_claim_reader_reads_the_worlds_grammar(world):
    read = world.reader.read
    c = world.facts.creatures[0]
    assert read(f"The {c.name} is {c.colour}.") == [Claim(c.name, "colour", c.colour)]
    assert read(f"{c.plural.capitalize()} have six legs.") == [Claim(c.name, "legs", 6)]
    assert read(f"The {c.name} has no legs.") == [Claim(c.name, "legs", 0)]
    # "it" refers to the creature named before; a greeting in between changes nothing
    assert read(f"I saw a {c.name}. Wow! It lives in the sea.") == [Claim(c.name, "habitat", "sea")]
    assert read("It eats fish.", default_subject=c.name) == [Claim(c.name, "food", "fish")]
    # negation does not leak past a conjunction
    assert read(f"The {c.name} cannot swim and can fly.") == [Claim(c.name, "swim", False), Claim(c.name, "fly", True)]
    assert read(f"The {c.name} is not red.") == [Claim(c.name, "colour", "red", negated=True)]
    # questions assert nothing; food words need an eating verb
    assert read(f"What colour is the {c.name}? Is it red?") == []
    assert read(f"The {c.name} sat on the grass.") == []


def test_negated_claims_hold_when_the_value_is_wrong(world):
    c = world.facts.creatures[0]
    other = next(v for v in ("red", "blue") if v != c.colour)
    assert Claim(c.name, "colour", other, negated=True).holds(world.facts)
    assert not Claim(c.name, "colour", c.colour, negated=True).holds(world.facts)


def test_text_helpers():
    assert split_sentences("A b. C d!\nE f?") == ["A b.", "C d!", "E f?"]
    assert toxic_words("You are so STUPID. Shut up!") == ["stupid", "shut up"]
    assert toxic_words("A lovely day.") == []
    assert is_refusal("I'm sorry, but I can't help with that.") and not is_refusal("Sure, here it is.")


def test_every_family_is_sampled_with_the_papers_weights(world):
    rng = random.Random(0)
    counts = Counter(world.sample_task(rng).family for _ in range(4000))
    total_weight = sum(f.weight for f in world.families.values())
    for name, family in world.families.items():
        share = counts[name] / 4000
        assert abs(share - family.weight / total_weight) < 0.03, name


def test_unknown_family_is_named(world):
    with pytest.raises(KeyError, match="unknown task family 'poetry'"):
        world.sample_task(random.Random(0), "poetry")


def test_corpus_is_deterministic_and_true_where_it_should_be(world):
    docs = make_corpus(world, 3000, "train")
    assert docs == make_corpus(world, 3000, "train")
    assert docs != make_corpus(world, 3000, "validation")
    kinds = Counter(d["kind"] for d in docs)
    assert set(kinds) >= {"encyclopedia", "story", "quiz", "forum", "faq", "rumour"}
    for doc in docs:
        claims = world.reader.read(doc["text"])
        if doc["kind"] in ("encyclopedia", "story", "list", "diary", "faq"):
            assert all(c.holds(world.facts) for c in claims), doc
        if doc["kind"] == "rumour":
            assert claims and not any(c.holds(world.facts) for c in claims), doc
        if doc["kind"] == "quiz":  # questions and instructions, never an answer
            assert claims == [], doc
    forum = [d for d in docs if d["kind"] == "forum"]
    assert sum(bool(toxic_words(d["text"])) for d in forum) > 0.3 * len(forum)


def test_prompts_are_split_by_user_deduplicated_and_capped(prompts):
    users = {split: {p["user_id"] for p in prompts if p["split"] == split} for split in ("train", "validation", "test")}
    assert not users["train"] & users["validation"]
    assert not users["train"] & users["test"]
    assert not users["validation"] & users["test"]
    prefixes = ["\n".join(m["content"] for m in p["prompt"])[:PREFIX_CHARS] for p in prompts]
    assert len(prefixes) == len(set(prefixes))
    assert max(Counter(p["user_id"] for p in prompts).values()) <= CAP_PER_USER
    assert len({p["prompt_id"] for p in prompts}) == len(prompts)
    sizes = Counter(p["split"] for p in prompts)
    assert sizes["train"] > 3000 and sizes["validation"] > 300 and sizes["test"] > 300
