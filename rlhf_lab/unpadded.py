"""Forward a padded batch without most of its padding: rows in groups of alike spans, each group
cut to the columns where one of its rows has a real token.

An RL batch is a left-padded prompt and a right-padded answer per row, and with prompts and answers
of mixed lengths most of it is padding (in the course's PPO and RLOO batches, 55 to 65%). A forward
costs the same for a padding column as for a real one, so forwarding alike rows together, each group
without its padding columns, saves most of that work. Each row's result is the same computation
(padding is masked, and position ids skip it); only float rounding differs, by about 1e-5 in the
logits, as with any other change of batch shape.

Sampling uses the same idea on its decode steps, whose attention reads every cached key and value of every
row: `row_bucket_attention` runs that attention per bucket of alike rows, each from its first real column on.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F

# Rows forwarded together. Smaller groups carry less padding but pay the model's per-forward overhead
# more often: on the course's PPO and RLOO batches of 32, groups of 4 were fastest (measured against 2,
# 8 and 16; README, performance).
GROUP_SIZE = 4


def alike_row_groups(attention_mask: torch.Tensor, group_size: int) -> tuple[torch.Tensor, ...]:
    """Row indices in groups of `group_size`, ordered by where each row's real tokens start (latest
    first: in a left-padded batch, shortest first) and then where they end."""
    width = attention_mask.shape[1]
    first = attention_mask.argmax(dim=-1)
    last = width - 1 - attention_mask.flip(-1).argmax(dim=-1)
    return ((width - first) * width + last).argsort(stable=True).split(group_size)


def real_columns(attention_mask: torch.Tensor) -> tuple[int, int]:
    """(start, stop): the columns outside which every row is padding."""
    real = attention_mask.any(dim=0).nonzero().squeeze(-1)
    return int(real[0]), int(real[-1]) + 1


def per_position(forward: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, first_column: int = 0, group_size: int = GROUP_SIZE) -> torch.Tensor:
    """Per-position outputs (B, L − first_column, ...) of a padded batch (B, L), forwarded in alike groups.

    `forward(ids, mask, n)` gets a group cut to its real columns and returns the outputs of its last n
    positions, (rows, n, ...): those from `first_column` on. Columns cut off come back as zeros; rows
    come back in batch order."""
    width = attention_mask.shape[1]
    pieces, order = [], []
    for rows in alike_row_groups(attention_mask, group_size):
        start, stop = real_columns(attention_mask[rows])
        kept = max(start, first_column)
        if stop <= kept:
            raise ValueError(f"rows {rows.tolist()} have no real token at or after column {first_column}")
        out = forward(input_ids[rows, start:stop], attention_mask[rows, start:stop], stop - kept)
        pieces.append(F.pad(out, [0, 0] * (out.dim() - 2) + [kept - first_column, width - stop]))
        order.append(rows)
    return torch.cat(pieces)[torch.cat(order).argsort()]


# Rows of a decode step whose attention runs together (`attention_buckets`). On 128 unsorted course prompts,
# buckets of 16 rows sampled 11% faster than one attention call over the whole batch; 8 gained nothing, 32 less.
ATTENTION_BUCKET = 16
BUCKETED_SDPA = "rlhf_lab_row_buckets"  # the attention implementation that honours `row_buckets`


def attention_buckets(first_columns: list[int], width: int, size: int = ATTENTION_BUCKET) -> list[tuple[int, int, int]] | None:
    """(start, stop, first column) of each bucket of `size` consecutive cache rows, where `first_columns` are the rows'
    first real columns in a cache `width` columns wide. None when the buckets would skip under a quarter of the
    columns: each bucket is one more attention call, which a small saving does not repay (on batches sorted by
    length, as `sample` makes them, buckets skip little)."""
    buckets = [(start, min(start + size, len(first_columns)), min(first_columns[start:start + size]))
               for start in range(0, len(first_columns), size)]
    skipped = sum((stop - start) * first for start, stop, first in buckets)
    return buckets if skipped >= 0.25 * len(first_columns) * width else None


def _sdpa_by_row_buckets(module, query, key, value, attention_mask, row_buckets=None, **kwargs):
    """transformers' SDPA attention, run per bucket of rows on the key and value columns from the bucket's first
    real column on. Each row attends to the same real keys; only the masked padding columns are not read."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if row_buckets is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # Buckets exist only where rows have left padding, so the mask is a tensor here.
    outputs = [sdpa_attention_forward(module, query[start:stop], key[start:stop, :, first:], value[start:stop, :, first:],
                                      attention_mask[start:stop, ..., first:], **kwargs)[0]
               for start, stop, first in row_buckets]
    return torch.cat(outputs), None


def _additive_sdpa_mask(*args, dtype: torch.dtype = torch.float32, **kwargs) -> torch.Tensor | None:
    """SDPA's boolean mask as the float mask SDPA itself turns it into (0 where attended, -inf elsewhere): built
    once per forward, rather than by SDPA once per layer and bucket."""
    from transformers.masking_utils import sdpa_mask

    mask = sdpa_mask(*args, **kwargs)
    return None if mask is None else torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        mask.logical_not(), float("-inf"))


@contextmanager
def row_bucket_attention(model):
    """Within the block, `model` takes a `row_buckets=` argument (see `attention_buckets`) in its forward. Yields
    False, and changes nothing, for a model whose attention is not transformers' SDPA."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(BUCKETED_SDPA, _sdpa_by_row_buckets)
    AttentionMaskInterface.register(BUCKETED_SDPA, _additive_sdpa_mask)
    model.set_attn_implementation(BUCKETED_SDPA)  # a model that cannot switch warns and stays on SDPA
    try:
        yield model.config._attn_implementation == BUCKETED_SDPA
    finally:
        model.set_attn_implementation("sdpa")
