"""Shared fixtures: a synthetic corpus, a tiny tokenizer and tiny models.

Independent of rlhf_lab.world on purpose: these tests check the machinery, not the world.
"""

import itertools

import pytest
import torch

from rlhf_lab.config import ModelConfig, TokenizerConfig
from rlhf_lab.models import build_policy
from rlhf_lab.tokenizer import train_tokenizer
from rlhf_lab.utils import set_seed

torch.set_num_threads(1)  # tiny models: more threads only add overhead

ANIMALS = ["cat", "dog", "owl", "frog", "horse", "whale", "ant", "bee"]
COLOURS = ["red", "brown", "grey", "green", "black", "white"]
PLACES = ["the forest", "the sea", "a farm", "the desert", "a pond"]


def make_sentences(n: int = 200) -> list[str]:
    """Deterministic little encyclopedia: varied words, digits, punctuation, newlines."""
    combos = itertools.cycle(itertools.product(ANIMALS, COLOURS, PLACES))
    sentences = []
    for i in range(n):
        animal, colour, place = next(combos)
        legs = (i * 7) % 9
        if i % 3 == 0:
            sentences.append(f"The {animal} is {colour}. It has {legs} legs and lives in {place}.")
        elif i % 3 == 1:
            sentences.append(f"Q: Where does the {animal} live?\nA: The {animal} lives in {place}!")
        else:
            sentences.append(f"A {colour} {animal}, {legs * 11} cm long, was seen near {place}.\n\nNice.")
    return sentences


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return make_sentences()


@pytest.fixture(scope="session")
def tiny_tokenizer(sentences):
    return train_tokenizer(sentences, TokenizerConfig.smoke(), model_max_length=64)


TINY = ModelConfig(n_embd=32, n_layer=2, n_head=2, n_positions=64)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer):
    """A randomly initialized 2-layer GPT-2 (2 layers: padding bugs show up past layer 1)."""
    set_seed(0)
    return build_policy(TINY, tiny_tokenizer).eval()

