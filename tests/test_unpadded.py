"""Forwarding padded RL batches in groups without their padding (`unpadded`), against one forward of
the whole padded batch."""
import copy

import pytest
import torch
from transformers import GPT2ForSequenceClassification

from rlhf_lab.generation import encode_prompts
from rlhf_lab.models import left_padded_positions
from rlhf_lab.ppo import response_logits
from rlhf_lab.reward import token_scores
from rlhf_lab.unpadded import alike_row_groups, attention_buckets, per_position, real_columns
from test_generation import MIXED, _tiny_llama, forwarded_positions

ANSWER_LENGTHS = [1, 7, 3, 12, 5, 2, 9, 4, 11, 6]


def _rl_batch(tokenizer):
    """Ten left-padded prompts of 1 to 24 tokens, each followed by an answer of 1 to 12 tokens and right padding:
    (sequences, attention mask, prompt width)."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, MIXED[::2], max_prompt_length=40)
    generator = torch.Generator().manual_seed(0)
    answers = torch.randint(2, len(tokenizer), (len(ANSWER_LENGTHS), max(ANSWER_LENGTHS)), generator=generator)
    answer_mask = (torch.arange(answers.shape[1]) < torch.tensor(ANSWER_LENGTHS)[:, None]).long()
    answers = answers.masked_fill(answer_mask == 0, tokenizer.pad_token_id)
    return torch.cat([prompt_ids, answers], 1), torch.cat([prompt_mask, answer_mask], 1), prompt_ids.shape[1]


def test_groups_of_left_padded_prompts_are_shortest_first_as_the_prefill_had_them(tiny_tokenizer):
    _, mask = encode_prompts(tiny_tokenizer, MIXED, max_prompt_length=40)
    groups = alike_row_groups(mask, 3)
    assert [len(g) for g in groups] == [3] * 6 + [2]
    assert torch.equal(torch.cat(groups), mask.sum(-1).argsort(stable=True))


def test_groups_of_answers_sort_by_where_rows_start_then_end():
    mask = torch.tensor([[0, 1, 1, 1, 0],    # starts 1, ends 3
                         [0, 0, 1, 1, 1],    # starts 2, ends 4
                         [0, 1, 1, 1, 1],    # starts 1, ends 4
                         [0, 0, 1, 0, 0]])   # starts 2, ends 2
    assert torch.cat(alike_row_groups(mask, 2)).tolist() == [3, 1, 0, 2]
    assert real_columns(mask) == (1, 5) and real_columns(mask[[3]]) == (2, 3)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_answer_logits_and_gradients_match_one_padded_forward(tiny_model, tiny_tokenizer, architecture):
    """The same logits at every answer position and the same gradients, for GPT-2 and for Llama (rotary
    positions, grouped-query attention); the columns a group cut off come back as zeros."""
    model = copy.deepcopy(tiny_model) if architecture == "gpt2" else _tiny_llama(tiny_tokenizer)
    sequences, mask, width = _rl_batch(tiny_tokenizer)
    answers, answer_mask = sequences[:, width:], mask[:, width:].float()

    def loss_and_grads(logits):
        loss = (logits.log_softmax(-1).gather(-1, answers[..., None])[..., 0] * answer_mask).sum()
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    whole = model(input_ids=sequences, attention_mask=mask, position_ids=left_padded_positions(mask)).logits
    whole = whole[:, width - 1:-1] / 0.7
    grouped = response_logits(model, sequences, mask, width, 0.7)
    real = answer_mask.bool()
    torch.testing.assert_close(grouped[real], whole[real])
    assert (grouped[:, max(ANSWER_LENGTHS):] == 0).all()  # past the longest answer: cut off in every group
    for a, b in zip(loss_and_grads(grouped), loss_and_grads(whole)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_token_scores_in_groups_match_one_padded_forward(tiny_model, tiny_tokenizer):
    torch.manual_seed(0)
    config = tiny_model.config.__class__(**{**tiny_model.config.to_dict(), "num_labels": 1})
    scorer = GPT2ForSequenceClassification(config)
    scorer.eval()
    sequences, mask, _ = _rl_batch(tiny_tokenizer)
    with torch.no_grad():
        whole, grouped = token_scores(scorer, sequences, mask), token_scores(scorer, sequences, mask, group_size=3)
    real = mask.bool()
    torch.testing.assert_close(grouped[real], whole[real])
    assert grouped.shape == whole.shape
    for rows in alike_row_groups(mask, 3):  # the columns a group cut off come back as zeros
        start, stop = real_columns(mask[rows])
        assert (grouped[rows, :start] == 0).all() and (grouped[rows, stop:] == 0).all()


def test_groups_forward_far_fewer_positions_than_the_padded_batch(tiny_model, tiny_tokenizer):
    sequences, mask, width = _rl_batch(tiny_tokenizer)
    with forwarded_positions(tiny_model) as forwarded, torch.no_grad():
        response_logits(tiny_model, sequences, mask, width, 1.0)
    spans = [real_columns(mask[rows]) for rows in alike_row_groups(mask, 4)]  # 10 rows in groups of 4
    assert forwarded == [len(rows) * (stop - start) for rows, (start, stop) in zip(alike_row_groups(mask, 4), spans)]
    assert sum(forwarded) < 0.75 * sequences.numel()


def test_rows_without_a_real_token_from_the_first_kept_column_on_are_refused():
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    with pytest.raises(ValueError, match="no real token at or after column 2"):
        per_position(lambda ids, m, n: ids[:, -n:].float(), mask, mask, first_column=2, group_size=1)


def test_attention_buckets_skip_the_padding_their_rows_share_or_stay_whole():
    # two rows whose first 6 of 8 columns are padding, two without padding: 12 of 32 columns skipped
    assert attention_buckets([6, 6, 0, 0], 8, size=2) == [(0, 2, 6), (2, 4, 0)]
    assert attention_buckets([6, 0, 6, 0], 8, size=2) is None  # unsorted rows: no bucket skips anything
    assert attention_buckets([1, 1, 0, 0], 8, size=2) is None  # 2 of 32: not worth an extra attention call
    assert attention_buckets([5, 5, 5, 3, 3], 8, size=2) == [(0, 2, 5), (2, 4, 3), (4, 5, 3)]  # a short last bucket
