import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from rlhf_lab import generation, unpadded
from rlhf_lab.generation import (_inverse_cdf_draw, _next_token, _prefill, decode_responses, drop_padding_columns,
                                 encode_prompts, generate_ids, sample)
from rlhf_lab.models import stop_token_ids
from rlhf_lab.unpadded import alike_row_groups

PROMPTS = ["The cat", "Q: Where does the owl live?\nA:", "A green frog, 33 cm long, was", "7"]


def test_batched_greedy_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    batched = sample(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=12, temperature=0)
    single = [sample(tiny_model, tiny_tokenizer, [p], max_new_tokens=12, temperature=0)[0] for p in PROMPTS]
    assert batched == single
    assert len(set(batched)) > 1  # the prompts matter


def _tiny_llama(tokenizer) -> LlamaForCausalLM:
    """Rotary positions and grouped-query attention (one key/value head for two query heads)."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=0, pad_token_id=1,
    )).eval()


def test_batched_greedy_equals_one_at_a_time_llama(tiny_tokenizer):
    """Padding and position handling are not GPT-2 specific (rotary embeddings here)."""
    model = _tiny_llama(tiny_tokenizer)
    batched = sample(model, tiny_tokenizer, PROMPTS, max_new_tokens=10, temperature=0, batch_size=3)
    assert batched == [sample(model, tiny_tokenizer, [p], max_new_tokens=10, temperature=0)[0] for p in PROMPTS]


def test_seeded_sampling(tiny_model, tiny_tokenizer):
    first = sample(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=10, seed=1)
    torch.manual_seed(123)
    torch.rand(5)  # other random number use must not matter
    assert sample(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=10, seed=1) == first
    assert sample(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=10, seed=2) != first


def _reference_logprobs(model, prompt_ids: list[int], response_ids: list[int]) -> torch.Tensor:
    """Slow reference: re-run the unpadded prompt + response in one forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0]
    logprobs = F.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    return logprobs.gather(-1, torch.tensor(response_ids)[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_logprobs_match_a_full_reforward(tiny_model, tiny_tokenizer, temperature, top_p):
    input_ids, mask = encode_prompts(tiny_tokenizer, PROMPTS, max_prompt_length=40)
    end = tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    gen = generate_ids(
        tiny_model, input_ids, mask, 8, stop_ids=[end], pad_token_id=1,
        temperature=temperature, top_p=top_p, generator=torch.Generator().manual_seed(0),
    )
    assert gen.sequences.shape == gen.attention_mask.shape == (len(PROMPTS), input_ids.shape[1] + 8)
    for row in range(len(PROMPTS)):
        prompt = input_ids[row][mask[row].bool()].tolist()
        n = int(gen.response_mask[row].sum())
        response = gen.response_ids[row, :n].tolist()
        torch.testing.assert_close(gen.logprobs[row, :n], _reference_logprobs(tiny_model, prompt, response))
        assert (gen.logprobs[row, n:] == 0).all()


def _reference_tokens(model, input_ids, mask, steps, stop_ids, pad_token_id, generator) -> torch.Tensor:
    """Slow reference: no KV cache, every row (stopped or not) re-forwarded in full at every step, one draw over
    the whole batch per step."""
    ids, mask, done, tokens = input_ids.clone(), mask.clone(), torch.zeros(len(input_ids), dtype=torch.bool), []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        uniform = torch.rand((len(ids), 1), generator=generator)  # one number per row, stopped or not
        token = _next_token(logits[:, -1].float(), 1.0, 1.0, uniform).masked_fill(done, pad_token_id)
        tokens.append(token)
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        done |= torch.isin(token, torch.tensor(stop_ids))
        if done.all():
            break
    return torch.stack(tokens, 1)


def test_stopped_rows_leave_the_batch_without_changing_the_others(tiny_model, tiny_tokenizer):
    prompts = PROMPTS + [p + " and" for p in PROMPTS]
    input_ids, mask = encode_prompts(tiny_tokenizer, prompts, max_prompt_length=40)
    free = generate_ids(tiny_model, input_ids, mask, 12, stop_ids=[], pad_token_id=1,
                        generator=torch.Generator().manual_seed(0))
    stops = sorted({int(free.response_ids[0, 1]), int(free.response_ids[3, 4])})  # rows stop at different steps
    rows_computed = []
    hook = tiny_model.register_forward_pre_hook(lambda _, args, kwargs: rows_computed.append(len(kwargs["input_ids"])),
                                                with_kwargs=True)
    try:
        gen = generate_ids(tiny_model, input_ids, mask, 12, stop_ids=stops, pad_token_id=1,
                           generator=torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    reference = _reference_tokens(tiny_model, input_ids, mask, 12, stops, 1, torch.Generator().manual_seed(0))
    assert torch.equal(gen.response_ids, reference)
    stopped_at = gen.response_mask.sum(1)
    assert stopped_at.min() <= 2 < stopped_at.max()
    assert min(rows_computed) < len(prompts) == rows_computed[0]  # stopped rows did leave the forward pass


MIXED = [p + " and" * k for k in range(5) for p in PROMPTS]  # 20 prompts of 1 to 24 tokens


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_prompts_forwarded_by_length_build_the_whole_batch_cache(tiny_model, tiny_tokenizer, architecture):
    """_prefill in groups of 3 prompts of similar length, each without its all-padding columns, against one
    forward of the whole left-padded batch: the same last-token logits, the same keys and values at every real
    prompt token (what the padding columns hold differs, and the attention mask hides it)."""
    model = tiny_model if architecture == "gpt2" else _tiny_llama(tiny_tokenizer)
    input_ids, mask = encode_prompts(tiny_tokenizer, MIXED, max_prompt_length=40)
    order = alike_row_groups(mask, len(MIXED))[0]
    with torch.no_grad():
        whole_logits, whole = _prefill(model, input_ids, mask, order, input_ids.shape[1] + 4, group_size=len(MIXED))
        grouped_logits, grouped = _prefill(model, input_ids, mask, order, input_ids.shape[1] + 4, group_size=3)
    torch.testing.assert_close(grouped_logits, whole_logits)
    real = mask[order].bool()[:, None, :, None]  # (B, 1, P, 1) against keys of (B, heads, P, head_dim), cache order
    for a, b in zip(whole.layers, grouped.layers):
        assert b.keys.shape == a.keys.shape == (len(MIXED), *a.keys.shape[1:2], input_ids.shape[1], a.keys.shape[-1])
        for x, y in ((a.keys, b.keys), (a.values, b.values)):
            torch.testing.assert_close(y * real, x * real)


@contextlib.contextmanager
def forwarded_positions(model):
    """The number of token positions (rows × columns) of each forward of `model` while the block runs."""
    forwarded = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: forwarded.append(kwargs["input_ids"].numel()),
                                           with_kwargs=True)
    try:
        yield forwarded
    finally:
        hook.remove()


def test_prompts_are_forwarded_without_most_of_their_padding(tiny_model, tiny_tokenizer):
    """The grouped prefill is in use (not its single-forward fallback): it forwards far fewer token positions
    than the padded batch holds."""
    input_ids, mask = encode_prompts(tiny_tokenizer, MIXED, max_prompt_length=40)
    with forwarded_positions(tiny_model) as forwarded, torch.no_grad():
        _prefill(tiny_model, input_ids, mask, alike_row_groups(mask, len(MIXED))[0], input_ids.shape[1] + 4, group_size=4)
    assert len(forwarded) == len(MIXED) // 4
    assert int(mask.sum()) <= sum(forwarded) < 0.75 * input_ids.numel()


def test_more_prompts_than_a_prefill_group_sample_like_the_reference(tiny_model, tiny_tokenizer):
    """Past 16 prompts the prompts are forwarded in groups (see the test above); the tokens are still those of
    the slow reference that re-forwards the whole batch at every step."""
    input_ids, mask = encode_prompts(tiny_tokenizer, MIXED, max_prompt_length=40)
    assert len(MIXED) > 16
    gen = generate_ids(tiny_model, input_ids, mask, 8, stop_ids=[], pad_token_id=1,
                       generator=torch.Generator().manual_seed(0))
    reference = _reference_tokens(tiny_model, input_ids, mask, 8, [], 1, torch.Generator().manual_seed(0))
    assert torch.equal(gen.response_ids, reference)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_attention_in_row_buckets_samples_like_the_reference(tiny_model, tiny_tokenizer, monkeypatch, architecture):
    """Decode steps run their attention per bucket of alike rows, each from its first real column on (rows in
    the cache by prompt length), and the tokens are still those of the slow reference; afterwards the model is
    back on plain SDPA."""
    model = tiny_model if architecture == "gpt2" else _tiny_llama(tiny_tokenizer)
    short_and_long = [p + " and" * (k % 2) for k in range(4) for p in PROMPTS] + [p + " and" * 14 for p in PROMPTS]
    input_ids, mask = encode_prompts(tiny_tokenizer, short_and_long, max_prompt_length=40)
    buckets = []
    monkeypatch.setattr(generation, "attention_buckets",
                        lambda *args: buckets.append(unpadded.attention_buckets(*args)) or buckets[-1])
    gen = generate_ids(model, input_ids, mask, 8, stop_ids=[], pad_token_id=1, generator=torch.Generator().manual_seed(0))
    assert len(buckets) == 7 and all(b[0][:2] == (0, 16) and b[0][2] > 0 for b in buckets)  # the 16 short rows skip padding
    assert torch.equal(gen.response_ids, _reference_tokens(model, input_ids, mask, 8, [], 1,
                                                           torch.Generator().manual_seed(0)))
    for row in range(len(short_and_long)):  # every real key attended to: the log-probs of an unpadded forward
        prompt = input_ids[row][mask[row].bool()].tolist()
        torch.testing.assert_close(gen.logprobs[row], _reference_logprobs(model, prompt, gen.response_ids[row].tolist()))
    assert model.config._attn_implementation == "sdpa"


def test_a_model_on_eager_attention_samples_without_buckets(tiny_model, tiny_tokenizer):
    model = copy.deepcopy(tiny_model)
    model.set_attn_implementation("eager")
    input_ids, mask = encode_prompts(tiny_tokenizer, MIXED, max_prompt_length=40)
    gen = generate_ids(model, input_ids, mask, 8, stop_ids=[], pad_token_id=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gen.response_ids, _reference_tokens(model, input_ids, mask, 8, [], 1,
                                                           torch.Generator().manual_seed(0)))
    assert model.config._attn_implementation == "eager"


def test_stop_token_ends_a_row_and_pads_the_rest(tiny_model, tiny_tokenizer):
    input_ids, mask = encode_prompts(tiny_tokenizer, PROMPTS[:2], max_prompt_length=40)
    greedy = generate_ids(tiny_model, input_ids, mask, 6, stop_ids=[], pad_token_id=1, temperature=0)
    stop = int(greedy.response_ids[0, 2])  # make row 0's third greedy token a stop token
    gen = generate_ids(tiny_model, input_ids, mask, 6, stop_ids=[stop], pad_token_id=1, temperature=0)
    first_stop = next(i for i, t in enumerate(gen.response_ids[0].tolist()) if t == stop)
    assert gen.response_mask[0].tolist() == [1] * (first_stop + 1) + [0] * (gen.response_ids.shape[1] - first_stop - 1)
    assert (gen.response_ids[0, first_stop + 1 :] == 1).all()
    # the stop token itself is not part of the decoded text
    text = decode_responses(tiny_tokenizer, gen, [stop])[0]
    assert text == tiny_tokenizer.decode(gen.response_ids[0, :first_stop].tolist())


def test_loop_ends_once_every_row_stopped(tiny_model, tiny_tokenizer):
    input_ids, mask = encode_prompts(tiny_tokenizer, ["The cat"], max_prompt_length=40)
    calls = []

    def should_stop(response_ids):
        calls.append(response_ids.shape[1])
        return torch.tensor([response_ids.shape[1] >= 3])

    gen = generate_ids(tiny_model, input_ids, mask, 20, stop_ids=[], pad_token_id=1, should_stop=should_stop)
    assert gen.response_ids.shape[1] == 3 and calls == [1, 2, 3]


def test_stop_strings_cut_the_text(tiny_model, tiny_tokenizer):
    full = sample(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=16, temperature=0)
    text = max(full, key=len)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = sample(tiny_model, tiny_tokenizer, PROMPTS, max_new_tokens=16, temperature=0, stop_strings=["@@never@@", stop])
    for long, short in zip(full, cut):
        expected = long[: long.index(stop)] if stop in long else long
        assert short == expected
    assert any(stop in long for long in full)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    uniform = torch.rand((len(logits), 1), generator=torch.Generator().manual_seed(0))
    draws = _next_token(logits, 1.0, 0.8, uniform)
    assert set(draws.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.8: the tail is dropped
    assert abs((draws == 0).float().mean().item() - 0.5 / 0.8) < 0.03
    assert set(_next_token(logits, 1.0, 0.4, uniform).tolist()) == {0}
    assert set(_next_token(logits, 1.0, 1.0, uniform).tolist()) == {0, 1, 2, 3}


def test_too_long_prompt_names_index_and_length(tiny_model, tiny_tokenizer):
    long_prompt = "The cat is red. " * 30
    n = len(tiny_tokenizer.encode(long_prompt))
    with pytest.raises(ValueError, match=rf"prompt 1 is {n} tokens long, but at most {64 - 16} fit"):
        sample(tiny_model, tiny_tokenizer, ["ok", long_prompt], max_new_tokens=16)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        sample(tiny_model, tiny_tokenizer, [""], max_new_tokens=4)


def test_inference_mode_and_training_mode_restored(tiny_model, tiny_tokenizer):
    expected = sample(tiny_model, tiny_tokenizer, PROMPTS[:2], max_new_tokens=5, temperature=0)
    tiny_model.train()
    try:
        with torch.inference_mode():
            assert sample(tiny_model, tiny_tokenizer, PROMPTS[:2], max_new_tokens=5, temperature=0) == expected
        assert tiny_model.training
    finally:
        tiny_model.eval()


def test_sampled_tensors_can_enter_autograd(tiny_model, tiny_tokenizer):
    """The loop runs in inference mode, whose tensors autograd refuses to save; what it hands out is not that."""
    input_ids, mask = encode_prompts(tiny_tokenizer, PROMPTS, max_prompt_length=40)
    gen = generate_ids(tiny_model, input_ids, mask, 6, stop_ids=[], pad_token_id=1, generator=torch.Generator().manual_seed(0))
    logits = tiny_model(input_ids=gen.sequences, attention_mask=gen.attention_mask).logits[:, -7:-1]
    chosen = F.log_softmax(logits, dim=-1).gather(-1, gen.response_ids[..., None]).squeeze(-1)
    (chosen * gen.logprobs * gen.response_mask).sum().backward()  # gather and products save their operands
    assert next(tiny_model.parameters()).grad is not None
    tiny_model.zero_grad()


def test_stop_ids_include_end_of_turn(tiny_model, tiny_tokenizer):
    assert stop_token_ids(tiny_tokenizer, tiny_model) == [tiny_tokenizer.convert_tokens_to_ids("<|end|>"), tiny_tokenizer.eos_token_id]


def test_drop_padding_columns_keeps_every_real_token():
    ids = torch.tensor([[1, 1, 1, 5, 6], [1, 1, 7, 8, 9]])
    mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]])
    kept_ids, kept_mask = drop_padding_columns(ids, mask)
    assert kept_ids.tolist() == [[1, 5, 6], [7, 8, 9]] and kept_mask.tolist() == [[0, 1, 1], [1, 1, 1]]


def test_inverse_cdf_draw_follows_the_probabilities():
    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0]]).repeat(200_000, 1) * 3.0  # unnormalized rows
    draws = _inverse_cdf_draw(probs, torch.rand((len(probs), 1), generator=torch.Generator().manual_seed(0)))
    frequency = torch.bincount(draws, minlength=6).float() / len(draws)
    assert frequency[[0, 2, 5]].sum() == 0  # zero-probability tokens never come out, at either end
    assert (frequency - probs[0] / probs[0].sum()).abs().max() < 0.005  # 0.005 is about 5 standard errors


def test_inverse_cdf_draw_at_the_ends_of_the_uniform_range():
    probs = torch.tensor([[0.0, 0.5, 0.5, 0.0]])
    assert _inverse_cdf_draw(probs, torch.zeros(1, 1)).tolist() == [1]  # u = 0 skips the leading zero-probability token
    assert _inverse_cdf_draw(probs, torch.ones(1, 1)).tolist() == [2]  # u rounded up to the total still lands on a real token


def test_non_finite_logits_are_an_error_that_says_why():
    with pytest.raises(ValueError, match="not finite"):
        _next_token(torch.tensor([[0.0, float("nan")]]), 1.0, 1.0, torch.rand(1, 1))
