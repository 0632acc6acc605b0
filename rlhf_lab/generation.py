"""Sampling written out by hand (no `model.generate`), so students see every step and
PPO can reuse the token-level result: ids, per-token log-probabilities and masks.

Batches are left-padded: every prompt then ends at the same column, and one new
column is appended per step. Position ids skip the padding (a prompt's first real
token is position 0), which makes batched and one-at-a-time results agree. The prompts
themselves are forwarded in groups of alike length, each without its padding (`_prefill`), and
the attention of each decode step runs per bucket of alike rows, each without the padding its
rows share (`unpadded.row_bucket_attention`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from .models import context_length, left_padded_positions, stop_token_ids
from .onednn import onednn_linears
from .unpadded import alike_row_groups, attention_buckets, real_columns, row_bucket_attention
from .utils import eval_mode, progress_bar


@dataclass
class Generation:
    """One sampled batch. Columns of the response that follow a stop are padding."""

    prompt_ids: torch.Tensor  # (B, P) prompt tokens, left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on real prompt tokens
    response_ids: torch.Tensor  # (B, T) sampled tokens, pad after the stop
    response_mask: torch.Tensor  # (B, T) 1 on sampled tokens up to and including the stop
    # (B, T) log pi(token | context) under the model's own distribution (temperature 1, no
    # top-p); 0 where response_mask is 0. Only when sampling used temperature 1 and top_p 1 is
    # that the distribution the tokens came from. PPO's ratio and KL need log-probs at the
    # sampling temperature, for policy and reference alike, so ppo recomputes them.
    logprobs: torch.Tensor

    @property
    def sequences(self) -> torch.Tensor:
        """(B, P + T) prompt and response side by side, for a re-forward."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)


def encode_prompts(tokenizer, prompts: Sequence[str], max_prompt_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize prompts (as is: no special tokens added) and left-pad them.

    Raises ValueError naming the first prompt that is empty or longer than
    `max_prompt_length` tokens.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=False, verbose=False)["input_ids"]  # length checked below
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty; to sample unconditionally use tokenizer.bos_token as the prompt")
        if len(ids) > max_prompt_length:
            raise ValueError(
                f"prompt {i} is {len(ids)} tokens long, but at most {max_prompt_length} fit "
                f"(context length minus max_new_tokens); shorten it or lower max_new_tokens"
            )
    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


def drop_padding_columns(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch without the leading columns that are padding in every row (a batch cut from
    prompts padded to the longest of a larger set)."""
    first, _ = real_columns(attention_mask)
    return input_ids[:, first:], attention_mask[:, first:]


def _next_token(logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor | None) -> torch.Tensor:
    """Greedy if temperature == 0, else sample from the top-p nucleus of softmax(logits / T), one token per row
    with its uniform number in [0, 1) from `uniform` (rows, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits if temperature == 1 else logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token if the more likely ones already reach top_p (the top one always stays).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return _inverse_cdf_draw(probs, uniform)


def _inverse_cdf_draw(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row, drawn with probability `probs` (rows need not sum to 1): the first token
    whose cumulative probability exceeds u * total, for the row's uniform number u in [0, 1).

    One random number per row. `torch.multinomial` draws one per vocabulary entry per row, a
    quarter of a decode step of the course model at 128 rows."""
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    if not torch.isfinite(total).all():
        raise ValueError("sampling probabilities are not finite: the model's logits hold NaN or inf "
                         "(a diverged training run? lower the learning rate)")
    u = uniform.to(probs.dtype) * total
    # u * total can round up to total; the largest float below it keeps u < total, so the chosen token
    # is one where the cumulative sum grew: a token of nonzero probability.
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


class _PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in one buffer allocated at the first update:
    each step writes its new columns in place and attention gets a view of the filled part.
    DynamicLayer's torch.cat instead copies the whole cache into a fresh allocation every step.

    The buffer is (batch, position, heads, head_dim), and `keys`/`values` are its (batch, heads, position,
    head_dim) views: a step's new key is then one contiguous write per row rather than one per row and head,
    and attention reads each row's keys as one stretch of memory (SDPA takes any strides, with the same result)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._keys, self._values = (s.new_empty((s.shape[0], self.capacity, s.shape[1], s.shape[-1]))
                                    for s in (key_states, value_states))
        self._expose(0)

    def _expose(self, end: int) -> None:
        self.keys, self.values = self._keys[:, :end].transpose(1, 2), self._values[:, :end].transpose(1, 2)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.capacity:  # more than announced: grow like DynamicLayer
            return super().update(key_states, value_states, *args, **kwargs)
        self._keys[:, start:end] = key_states.transpose(1, 2)
        self._values[:, start:end] = value_states.transpose(1, 2)
        self._expose(end)
        return self.keys, self.values

    def write_prompts(self, rows: slice, key_states: torch.Tensor, value_states: torch.Tensor,
                      batch: int, width: int) -> None:
        """Place the prompt keys and values of `rows`, forwarded without their all-padding columns, right-aligned
        in the first `width` columns of a `batch`-row cache, and zeros left of them (padding: masked, but it must
        be finite, since attention multiplies it by zero)."""
        if not self.is_initialized:
            self.lazy_initialization(*(s.new_empty((batch, *s.shape[1:2], 0, s.shape[-1]))
                                       for s in (key_states, value_states)))
        first = width - key_states.shape[-2]
        for buffer, states in ((self._keys, key_states), (self._values, value_states)):
            buffer[rows, :first].zero_()
            buffer[rows, first:width] = states.transpose(1, 2)
        self._expose(width)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        end = self.keys.shape[-2]
        if end > self.capacity:  # it grew past the buffer (see update): plain DynamicLayer from here on
            return super().batch_select_indices(indices)
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose(end)


def _preallocated_cache(model, capacity: int) -> DynamicCache | None:
    """The model's own DynamicCache with its plain layers preallocated for `capacity` tokens
    (sliding-window or other special layers are kept as they are). None, so the model builds
    its default cache, if this model does not take a DynamicCache."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:
        return None
    cache.layers = [_PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, order: torch.Tensor, capacity: int,
             group_size: int = 16) -> tuple[torch.Tensor, DynamicCache]:
    """Forward the prompts once: the logits at each row's last prompt token, (B, vocab), and the KV cache,
    both with the batch's rows in `order` (cache row i is batch row order[i]).

    Left padding is wasted work, and with prompts of mixed lengths most of a batch's prompt columns are
    padding (at 128 course prompts, 68%). So prompts are forwarded in groups of `group_size` of similar
    length (`order` puts alike rows together), each group without its all-padding columns, and their keys
    and values are placed into one left-padded cache: at every real prompt token, the keys and values the
    whole batch would have built (at the padding they differ, and the attention mask hides them either way)."""
    batch, width = input_ids.shape
    cache = _preallocated_cache(model, capacity)
    input_ids, attention_mask = input_ids[order], attention_mask[order]
    if batch <= group_size or cache is None or not all(isinstance(layer, _PreallocatedLayer) for layer in cache.layers):
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=left_padded_positions(attention_mask), past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        return out.logits[:, -1, :], out.past_key_values
    logits = []
    for start in range(0, batch, group_size):
        rows = slice(start, start + group_size)
        ids, mask = drop_padding_columns(input_ids[rows], attention_mask[rows])
        out = model(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask), use_cache=True,
                    logits_to_keep=1)
        for layer, part in zip(cache.layers, out.past_key_values.layers):
            layer.write_prompts(rows, part.keys, part.values, batch, width)
        logits.append(out.logits[:, -1, :])
    return torch.cat(logits), cache


def generate_ids(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    *,
    stop_ids: Sequence[int],
    pad_token_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    should_stop: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Generation:
    """Sample up to `max_new_tokens` for a left-padded batch, with a KV cache.

    A row stops after emitting any of `stop_ids`, or when `should_stop(response_ids)`
    (a bool per row) says so; the loop ends early once every row has stopped.

    Rows that have stopped leave the forward pass (and the KV cache) once a quarter of those still
    computed are done: most answers stop long before the longest one, and a decode step reads the
    whole cache. Every step still draws one uniform number per row of the batch, so each row gets the
    same random numbers, and the same tokens, as if all rows were computed to the end.

    The model's linear layers run on oneDNN meanwhile (`onednn.onednn_linears`: about 2x faster on AVX-512 CPUs).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got temperature={temperature}, top_p={top_p}")
    with onednn_linears(model):
        tokens, logprobs, active = _decode(model, input_ids, attention_mask, max_new_tokens, stop_ids, pad_token_id,
                                           temperature, top_p, generator, should_stop)
    # Made in inference mode, these could not enter autograd (PPO trains on them); clones outside it can.
    return Generation(
        prompt_ids=input_ids,
        prompt_mask=attention_mask,
        response_ids=tokens.clone(),
        response_mask=active.long(),
        logprobs=logprobs.clone(),
    )


# Inference mode, not just no_grad: it also skips autograd's bookkeeping on every op (version counters,
# views), a few per cent of a decode step of the course model.
@torch.inference_mode()
def _decode(model, input_ids, attention_mask, max_new_tokens, stop_ids, pad_token_id, temperature, top_p, generator,
            should_stop) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """generate_ids' sampling loop: (tokens, log-probs, active), each (B, steps taken)."""
    device = input_ids.device
    batch, width = input_ids.shape
    stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    next_position = attention_mask.sum(dim=-1)  # position of the first response token
    # The attention mask of every step is a prefix of this one: prompt mask, then ones.
    full_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, max_new_tokens))], dim=1)
    # The cache holds the rows by prompt length (`rows`: the batch row of each cache row the model still
    # computes), so that a decode step's attention can run in buckets of alike rows, each without the padding
    # columns all its rows share (unpadded.attention_buckets).
    rows = alike_row_groups(attention_mask, batch)[0]
    last_logits, cache = _prefill(model, input_ids, attention_mask, rows, width + max_new_tokens)
    first_column = attention_mask.argmax(dim=-1).tolist()  # of each row's real tokens
    tokens = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, max_new_tokens), device=device)
    active = torch.zeros((batch, max_new_tokens), dtype=torch.bool, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = max_new_tokens
    with row_bucket_attention(model) as bucketed:
        for step in range(max_new_tokens):
            # Cache row i is batch row rows[i]; of those, the ones that stopped since they were last dropped get padding.
            live = ~done[rows]
            uniform = None if temperature == 0 else torch.rand((batch, 1), generator=generator, device=device)[rows]
            logits = last_logits.float()
            token = _next_token(logits, temperature, top_p, uniform).masked_fill_(~live, pad_token_id)
            logprob = F.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1).masked_fill_(~live, 0.0)
            tokens[rows, step], logprobs[rows, step], active[rows, step] = token, logprob, live
            done[rows] |= torch.isin(token, stop_ids)
            if should_stop is not None:
                done |= should_stop(tokens[:, : step + 1])
            if step == max_new_tokens - 1 or done.all():
                steps = step + 1
                break
            running = ~done[rows]
            if running.sum() <= 0.75 * len(rows):
                keep = running.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                rows, token = rows[keep], token[keep]
            buckets = {"row_buckets": attention_buckets([first_column[r] for r in rows.tolist()], width + step + 1)
                       } if bucketed else {}
            last_logits = model(
                input_ids=token[:, None],
                attention_mask=full_mask[rows, : width + step + 1],
                position_ids=(next_position[rows] + step)[:, None],
                past_key_values=cache,
                use_cache=True,
                **buckets,
            ).logits[:, -1, :]
    return tokens[:, :steps], logprobs[:, :steps], active[:, :steps]


def decode_responses(tokenizer, generation: Generation, stop_ids: Sequence[int], stop_strings: Sequence[str] = ()) -> list[str]:
    """Response texts: without the final stop token, cut before the first stop string.

    Other special tokens are kept, so a base model that starts a new "<|user|>" turn
    shows it.
    """
    texts = []
    for ids, keep in zip(generation.response_ids.tolist(), generation.response_mask.tolist()):
        ids = ids[: sum(keep)]
        if ids and ids[-1] in stop_ids:
            ids = ids[:-1]
        texts.append(_cut_at_stop(tokenizer.decode(ids, skip_special_tokens=False), stop_strings))
    return texts


def _cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cuts = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return text[: min(cuts)] if cuts else text


def sample(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_strings: Sequence[str] = (),
    batch_size: int = 128,
    progress: bool = False,
) -> list[str]:
    """Continue each prompt; returns the response texts in prompt order.

    A decode step of a small model costs about the same at 32 rows as at 128 (its time is
    per-op overhead, not arithmetic), so 128 rows a batch answer 1.5x faster than 32. Prompts are
    batched shortest first (then put back in order): a batch of alike lengths carries little
    padding through every step's attention.

    Deterministic given `seed` and `batch_size` (its own torch.Generator; other random
    number use does not change it). The model is put in eval mode while sampling and
    restored afterwards.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = encode_prompts(tokenizer, prompts, context_length(model) - max_new_tokens)
    stop_ids = stop_token_ids(tokenizer, model)
    generator = torch.Generator(device=device).manual_seed(seed)

    def should_stop(response_ids: torch.Tensor) -> torch.Tensor:
        texts = tokenizer.batch_decode(response_ids.tolist(), skip_special_tokens=False)
        return torch.tensor([any(s in t for s in stop_strings) for t in texts], device=device)

    lengths = attention_mask.sum(dim=1).tolist()
    by_length = sorted(range(len(prompts)), key=lengths.__getitem__)
    texts = [""] * len(prompts)
    with eval_mode(model):
        for start in progress_bar(range(0, len(prompts), batch_size), desc="sampling", disable=not progress):
            rows = by_length[start : start + batch_size]
            ids, mask = drop_padding_columns(input_ids[rows], attention_mask[rows])
            generation = generate_ids(
                model,
                ids.to(device),
                mask.to(device),
                max_new_tokens,
                stop_ids=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                should_stop=should_stop if stop_strings else None,
            )
            for row, text in zip(rows, decode_responses(tokenizer, generation, stop_ids, stop_strings), strict=True):
                texts[row] = text
    return texts
