"""SFT formatting and loss: masks, padding side, and the loss against a slow reference."""
import math
import random

import pytest
import torch

from rlhf_lab.data import IGNORE_INDEX, collate, encode_example, length_buckets, padding_fraction
from rlhf_lab.losses import sft_loss
from rlhf_lab.sft import answer_loss

PROMPT = [{"role": "user", "content": "What colour is the zibbet?"}]


def test_labels_mask_exactly_the_prompt(tiny_tokenizer):
    example = encode_example(tiny_tokenizer, PROMPT, "The zibbet is green.", max_length=128)
    prompt_text = tiny_tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    n_prompt = len(tiny_tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    labels = example["labels"]
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == example["input_ids"][n_prompt:]
    # the labelled tokens decode to the answer and the end-of-turn token, nothing of the prompt
    assert tiny_tokenizer.decode(labels[n_prompt:]) == "The zibbet is green.<|end|>"
    assert tiny_tokenizer.decode(example["input_ids"]) == prompt_text + "The zibbet is green.<|end|>"


def test_too_long_example_is_named(tiny_tokenizer):
    with pytest.raises(ValueError, match="longer than max_length=8"):
        encode_example(tiny_tokenizer, PROMPT, "The zibbet is green.", max_length=8)


def test_collate_pads_on_the_right_and_masks_padding(tiny_tokenizer):
    a = encode_example(tiny_tokenizer, PROMPT, "Green.", 128)
    b = encode_example(tiny_tokenizer, PROMPT, "The zibbet is a small green animal.", 128)
    batch = collate([a, b], tiny_tokenizer.pad_token_id)
    n = len(a["input_ids"])
    assert batch["input_ids"][0, :n].tolist() == a["input_ids"]
    assert (batch["input_ids"][0, n:] == tiny_tokenizer.pad_token_id).all()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][0].tolist() == [1] * n + [0] * (batch["input_ids"].shape[1] - n)
    assert batch["attention_mask"][1].all()


def slow_sft_loss(logits, labels):
    """Reference: loop over every position, sum -log softmax of the next labelled token."""
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(x) for x in row))
            total += log_z - row[target]
            count += 1
    return total / count


def test_sft_loss_matches_slow_reference_and_ignores_prompt_and_padding():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[:, :3] = IGNORE_INDEX  # prompt
    labels[1, 5:] = IGNORE_INDEX  # padding
    assert float(sft_loss(logits, labels)) == pytest.approx(slow_sft_loss(logits, labels), rel=1e-5)
    # changing logits at masked positions changes nothing
    changed = logits.clone()
    changed[:, :2] += 5.0  # positions 0, 1 predict labels 1, 2: masked
    assert float(sft_loss(changed, labels)) == pytest.approx(float(sft_loss(logits, labels)), rel=1e-6)


def test_the_training_loops_answer_loss_is_sft_loss_of_the_full_logits(tiny_model, tiny_tokenizer):
    examples = [encode_example(tiny_tokenizer, PROMPT, answer, 64) for answer in ("The zibbet is green.", "Green.")]
    batch = collate(examples, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        full = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        assert float(answer_loss(tiny_model, batch)) == pytest.approx(float(sft_loss(full, batch["labels"])), rel=1e-5)
    batch["labels"][:] = IGNORE_INDEX
    with pytest.raises(ValueError, match="no labelled tokens"):
        answer_loss(tiny_model, batch)


def test_sft_loss_with_no_labels_says_so():
    with pytest.raises(ValueError, match="no labelled tokens"):
        sft_loss(torch.zeros(1, 3, 5), torch.full((1, 3), IGNORE_INDEX))


def test_length_buckets_cover_everything_once_and_cut_padding():
    rng = random.Random(0)
    lengths = [rng.randint(10, 200) for _ in range(500)]
    batches = length_buckets(lengths, 16, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(500))
    shuffled = list(range(500))
    random.Random(2).shuffle(shuffled)
    naive = [shuffled[i:i + 16] for i in range(0, 500, 16)]
    assert padding_fraction(batches, lengths) < 0.1 < padding_fraction(naive, lengths)
    assert batches != length_buckets(lengths, 16, random.Random(2))


def test_unmasked_variant_trains_on_the_prompt_too(tiny_tokenizer):
    example = encode_example(tiny_tokenizer, PROMPT, "Green.", 128, mask_prompt=False)
    assert example["labels"] == example["input_ids"]
