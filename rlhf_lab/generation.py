"""Sampling written out by hand (no `model.generate`), so students see every step and
PPO can reuse the token-level result: ids, per-token log-probabilities and masks.

Batches are left-padded: every prompt then ends at the same column, and one new
column is appended per step. Position ids skip the padding (a prompt's first real
token is position 0), which makes batched and one-at-a-time results agree.

Speed (CPU): the KV cache is allocated once for the whole answer and written in place;
rows are grouped by prompt length, and each group is prefilled and attends without the
padding of longer prompts (most of a left-padded batch of typical prompts); rows that
have stopped leave the model's batch. Sampling still draws for the whole batch at once,
so a seed gives the tokens of one plain batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from .models import context_length, stop_token_ids


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


def _next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy if temperature == 0, else sample from the top-p nucleus of softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature if temperature != 1 else logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token if the more likely ones already reach top_p (the top one always stays).
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class _SharedKV:
    """One layer's keys and values for the whole batch, (batch, heads, capacity, head_dim),
    allocated at the first write; `_CacheWindow`s write into them."""

    def __init__(self, batch: int, capacity: int):
        self.batch, self.capacity = batch, capacity
        self.keys = self.values = None

    def allocate(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if self.keys is None:
            self.keys = key_states.new_empty((self.batch, key_states.shape[1], self.capacity, key_states.shape[-1]))
            self.values = value_states.new_empty((self.batch, value_states.shape[1], self.capacity,
                                                  value_states.shape[-1]))

    def keep_rows(self, index: torch.Tensor) -> None:
        self.keys, self.values = self.keys[index], self.values[index]


class _CacheWindow(DynamicLayer):
    """A cache layer for rows `rows` of the batch, columns `first` on, of which `filled` are written.

    transformers' DynamicLayer concatenates every step (torch.cat copies the whole cache into a
    new tensor); here each update writes its columns in place into `_SharedKV` buffers, allocated
    once for prompt and answer, and attention gets a view of the filled part.
    """

    def __init__(self, shared: _SharedKV, rows: slice = slice(None), first: int = 0, filled: int = 0):
        super().__init__()
        self.shared, self.rows, self.first, self.filled = shared, rows, first, filled
        if shared.keys is not None:
            self._attach()

    def _attach(self) -> None:
        self.dtype, self.device, self.is_initialized = self.shared.keys.dtype, self.shared.keys.device, True
        self._keys = self.shared.keys[self.rows, :, self.first:]
        self._values = self.shared.values[self.rows, :, self.first:]
        self.keys, self.values = self._keys[:, :, : self.filled], self._values[:, :, : self.filled]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.shared.allocate(key_states, value_states)
        # Columns left of the window are never written: masked in attention, but 0 * NaN would
        # still be NaN, and new memory may hold anything.
        self.shared.keys[self.rows, :, : self.first] = 0
        self.shared.values[self.rows, :, : self.first] = 0
        self._attach()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values


def _shared_kv(model, batch: int, capacity: int) -> list[_SharedKV] | None:
    """A `_SharedKV` per layer, or None if the model's cache has layers of another kind
    (sliding windows, ...): then the model keeps its own cache."""
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:
        return None
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return [_SharedKV(batch, capacity) for _ in layers]


def _window_cache(model, shared: list[_SharedKV], rows: slice = slice(None), first: int = 0,
                  filled: int = 0) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [_CacheWindow(kv, rows, first, filled) for kv in shared]
    return cache


# While a decode step of generate_ids runs: (first row, end row, first column) of each group of rows.
_ROW_GROUPS: ContextVar[list[tuple[int, int, int]] | None] = ContextVar("rlhf_lab_row_groups", default=None)
_BY_ROWS = "rlhf_lab_sdpa_by_rows"


def _sdpa_by_row_groups(module, query, key, value, attention_mask, *args, **kwargs):
    """transformers' sdpa attention; in a decode step of generate_ids, once per group of rows,
    over that group's columns only (the others are padding for all of its rows)."""
    groups = _ROW_GROUPS.get()
    if groups is None or query.shape[2] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    outputs = []
    for start, end, first in groups:
        mask = attention_mask
        if mask is not None:
            mask = (mask if mask.shape[0] == 1 else mask[start:end])[..., first:]
        outputs.append(sdpa_attention_forward(module, query[start:end], key[start:end, :, first:],
                                              value[start:end, :, first:], mask, *args, **kwargs)[0])
    return torch.cat(outputs), None


AttentionInterface.register(_BY_ROWS, _sdpa_by_row_groups)
AttentionMaskInterface.register(_BY_ROWS, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextlib.contextmanager
def _attention(model, implementation: str):
    """The model's attention implementation set to `implementation` for the duration."""
    before = model.config._attn_implementation
    model.config._attn_implementation = implementation
    try:
        yield
    finally:
        model.config._attn_implementation = before


# How `generate_ids` groups rows by prompt length (on a CPU). Unit: attending over one (row, cache
# column) pair in one decode step, ~1.6 µs for the course's model on a laptop CPU. One more group
# costs _GROUP_STEP_COST units per decode step (one more attention call per layer) and
# _GROUP_CALL_COST once (its own prefill call); prefilling a prompt token costs _PREFILL_COST units.
_GROUP_STEP_COST = 300
_GROUP_CALL_COST = 1500
_PREFILL_COST = 60
_REGROUP_SHARE = 0.25  # stopped rows leave the batch once they are this share of it (copying the cache costs)


def _group_rows(lengths: Sequence[int], max_new_tokens: int) -> list[list[int]]:
    """Row indices split into groups of similar prompt length, shortest prompts first.

    A left-padded batch pads every prompt to the longest one, and every step would attend over
    those padding columns too (masked, but computed, and read from memory); with typical prompts
    most columns are padding. A group is prefilled on its own and attends over its own columns
    only, at the price of one more model call and one more attention call per layer and step.
    Exact minimum of that cost model over splits of the rows sorted by length (dynamic
    programming over the distinct lengths).
    """
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    ordered = [lengths[row] for row in order]
    ends = [i + 1 for i in range(len(ordered)) if i + 1 == len(ordered) or ordered[i + 1] != ordered[i]]
    overhead = _GROUP_STEP_COST * max_new_tokens + _GROUP_CALL_COST
    best = {0: (0.0, 0)}  # end -> (cost of the rows before it, where its last group starts)
    for end in ends:
        best[end] = min((best[start][0] + overhead + (end - start) * ordered[end - 1] * (max_new_tokens + _PREFILL_COST),
                         start) for start in best)
    groups, end = [], len(ordered)
    while end:
        start = best[end][1]
        groups.append(order[start:end])
        end = start
    return groups[::-1]


@torch.no_grad()
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

    Each step samples the whole batch at once, so the random draws are those of one plain
    batch. The model, though, sees the rows ordered by prompt length, in groups that skip the
    padding columns of longer prompts (on a CPU, see `_group_rows`), and without the rows that
    have stopped. A row's logits then come from other batch shapes: equal up to float rounding.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got temperature={temperature}, top_p={top_p}")
    device = input_ids.device
    batch = input_ids.shape[0]
    stop_ids = torch.tensor(list(stop_ids), dtype=torch.long, device=device)
    lengths = attention_mask.sum(dim=-1)
    width = int(lengths.max())  # prompt columns that are not padding in every row
    shared = _shared_kv(model, batch, width + max_new_tokens)
    by_rows = shared is not None and device.type == "cpu" and model.config._attn_implementation == "sdpa"
    groups = _group_rows(lengths.tolist(), max_new_tokens) if by_rows else [list(range(batch))]

    # The model's batch: rows in group order; order[i] is row i's index in the caller's batch.
    order = torch.tensor([row for group in groups for row in group], device=device)
    group_of = torch.cat([torch.full((len(rows),), g, device=device) for g, rows in enumerate(groups)])
    first_column = [width - int(lengths[rows].max()) for rows in groups]  # the group's first non-padding column
    prompt_mask = attention_mask[order, -width:]
    positions = (prompt_mask.cumsum(dim=-1) - 1).clamp(min=0)  # padding skipped: a prompt starts at position 0
    next_position = prompt_mask.sum(dim=-1)  # position of the first response token
    mask = torch.cat([prompt_mask, prompt_mask.new_ones((batch, max_new_tokens))], dim=1)  # every step's is a prefix

    logits = None  # (batch, vocab) in the caller's order; rows that have stopped keep stale ones
    start = 0
    for rows, first in zip(groups, first_column):
        end = start + len(rows)
        cache = None if shared is None else _window_cache(model, shared, slice(start, end), first)
        out = model(input_ids=input_ids[order[start:end], -width:][:, first:], attention_mask=mask[start:end, first:width],
                    position_ids=positions[start:end, first:], past_key_values=cache, use_cache=True, logits_to_keep=1)
        if logits is None:
            logits = torch.empty((batch, out.logits.shape[-1]), device=device)
        logits[order[start:end]] = out.logits[:, -1, :].float()
        start = end
    cache = out.past_key_values if shared is None else _window_cache(model, shared, filled=width)

    tokens = torch.full((batch, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, max_new_tokens), device=device)
    active = torch.zeros((batch, max_new_tokens), dtype=torch.bool, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = max_new_tokens
    for step in range(max_new_tokens):
        token = _next_token(logits, temperature, top_p, generator).masked_fill_(done, pad_token_id)
        logprob = F.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1)
        tokens[:, step] = token
        logprobs[:, step] = logprob.masked_fill_(done, 0.0)
        active[:, step] = ~done
        done |= torch.isin(token, stop_ids)
        if should_stop is not None:
            done |= should_stop(tokens[:, : step + 1])
        if step == max_new_tokens - 1 or done.all():
            steps = step + 1
            break
        keep = ~done[order]
        if len(order) - int(keep.sum()) >= _REGROUP_SHARE * len(order):  # stopped rows leave the model's batch
            keep = keep.nonzero().squeeze(-1)
            order, group_of, mask, next_position = order[keep], group_of[keep], mask[keep], next_position[keep]
            if shared is None:
                cache.batch_select_indices(keep)
            else:
                for kv in shared:
                    kv.keep_rows(keep)
                cache = _window_cache(model, shared, filled=width + step)
        groups_now, counts = torch.unique_consecutive(group_of, return_counts=True)
        ends = counts.cumsum(dim=0).tolist()
        row_groups = [(end - n, end, first_column[g]) for g, n, end in zip(groups_now.tolist(), counts.tolist(), ends)]
        attention = _attention(model, _BY_ROWS) if len(row_groups) > 1 else contextlib.nullcontext()
        context = _ROW_GROUPS.set(row_groups)
        try:
            with attention:
                out = model(input_ids=token[order, None], attention_mask=mask[:, : width + step + 1],
                            position_ids=(next_position + step)[:, None], past_key_values=cache, use_cache=True)
        finally:
            _ROW_GROUPS.reset(context)
        logits[order] = out.logits[:, -1, :].float()
    return Generation(
        prompt_ids=input_ids,
        prompt_mask=attention_mask,
        response_ids=tokens[:, :steps].contiguous(),
        response_mask=active[:, :steps].long(),
        logprobs=logprobs[:, :steps].contiguous(),
    )


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
    batch_size: int = 32,
    progress: bool = False,
) -> list[str]:
    """Continue each prompt; returns the response texts in prompt order.

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

    was_training = model.training
    model.eval()
    texts = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="sampling", disable=not progress):
            ids, mask = input_ids[start : start + batch_size], attention_mask[start : start + batch_size]
            first = int(mask.any(dim=0).long().argmax())  # drop columns that are padding in every row
            generation = generate_ids(
                model,
                ids[:, first:].to(device),
                mask[:, first:].to(device),
                max_new_tokens,
                stop_ids=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
                temperature=temperature,
                top_p=top_p,
                generator=generator,
                should_stop=should_stop if stop_strings else None,
            )
            texts += decode_responses(tokenizer, generation, stop_ids, stop_strings)
    finally:
        model.train(was_training)
    return texts
