"""Demonstrations -> token batches: chat formatting, prompt-masked labels, padding, bucketing.

The SFT loss is computed on the *response* only: prompt and padding positions get the
label -100, which PyTorch's cross-entropy ignores. Training batches are padded on the
right (positions stay 0, 1, 2, ...); generation pads on the left (see generation.py).
"""
from __future__ import annotations

import random

import torch

from .tokenizer import format_prompt

IGNORE_INDEX = -100


def end_of_turn(tokenizer) -> str:
    """The token that closes an assistant turn (our `<|end|>`, or EOS for other tokenizers)."""
    return "<|end|>" if "<|end|>" in tokenizer.get_vocab() else tokenizer.eos_token


def encode_example(tokenizer, prompt: list[dict], completion: str, max_length: int, mask_prompt: bool = True) -> dict:
    """Token ids of prompt + completion + end-of-turn, and labels that mask the prompt.

    Prompt and completion are tokenized separately, so the boundary is exactly where the
    chat template puts it, and the labels start at the first completion token.
    `mask_prompt=False` trains on the prompt too (notebook 02 shows why that is worse).
    """
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + completion_ids
    if len(input_ids) > max_length:
        raise ValueError(f"example is {len(input_ids)} tokens, longer than max_length={max_length}: "
                         f"{format_prompt(tokenizer, prompt)[:80]!r}...")
    prompt_labels = [IGNORE_INDEX] * len(prompt_ids) if mask_prompt else prompt_ids
    return {"input_ids": input_ids, "labels": prompt_labels + completion_ids}


def encode_demonstrations(tokenizer, records: list[dict], max_length: int, mask_prompt: bool = True) -> list[dict]:
    """Encode demonstration records ({"prompt": [...], "completion": [{"content": ...}]})."""
    return [encode_example(tokenizer, r["prompt"], r["completion"][0]["content"], max_length, mask_prompt)
            for r in records]


def collate(examples: list[dict], pad_token_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into input_ids, attention_mask and labels tensors on `device`
    (the model's: a GPU model given CPU tensors fails)."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def length_buckets(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Batches of indices of similar length, in random order: little CPU time spent on padding.

    Sorting by (length, random key) keeps the batches different from epoch to epoch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    """Share of the tokens in `batches` that are padding (to compare batching strategies)."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1.0 - sum(lengths) / padded
