"""Pretraining: next-token prediction on the world's "web" corpus.

Documents are joined with <|endoftext|> and cut into equal blocks (no padding, no
wasted compute), as GPT-2 and GPT-3 were trained. The loop is plain PyTorch: AdamW,
linear warmup then cosine decay, gradient clipping, periodic validation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .config import ModelConfig, PretrainConfig
from .models import build_policy
from .plots import plot_history
from .utils import atomic_save_file, eval_mode, get_device, progress_bar, set_seed


def _token_stream(tokenizer, texts: Sequence[str]) -> list[int]:
    """All documents' tokens, each followed by <|endoftext|> (the document separator)."""
    eos = tokenizer.eos_token_id
    stream = []
    # verbose=False: documents longer than the context are expected here; packing cuts them
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        stream += ids
        stream.append(eos)
    return stream


def pack_documents(tokenizer, texts: Sequence[str], block_size: int) -> torch.Tensor:
    """(n_blocks, block_size) token ids: documents concatenated in order, then cut.

    The incomplete last block is dropped. Raises ValueError if not even one block fits.
    """
    stream = _token_stream(tokenizer, texts)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(f"pack_documents: {len(texts)} texts give {len(stream)} tokens, fewer than block_size={block_size}")
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)


def gradient_step(model, optimizer, loss, grad_clip: float) -> None:
    """One update, the same in every stage: fresh gradients, backprop, clip the global norm, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def cosine_schedule(step: int, total: int, warmup: int, lr: float, min_lr: float = 0.0) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total`.

    Linear warmup reaches `lr` at step `warmup - 1`; from step `warmup` the rate
    follows half a cosine from `lr` down to `min_lr`, reached at step `total`.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def _mean_loss(model, blocks: torch.Tensor, batch_size: int) -> tuple[float, int]:
    """Mean next-token loss over `blocks` and the number of predicted tokens."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size].to(device)
        n = batch.numel() - batch.shape[0]  # each block predicts all but its first token
        total += model(input_ids=batch, labels=batch).loss.item() * n
        count += n
    return total / count, count


def perplexity(model, tokenizer, texts: Sequence[str], block_size: int, batch_size: int = 16) -> float:
    """exp(mean next-token loss) over `texts`, packed as in training; the short tail
    that does not fill a block is evaluated too, so every token counts."""
    stream = torch.tensor(_token_stream(tokenizer, texts), dtype=torch.long)
    n_full = len(stream) // block_size * block_size
    parts = [stream[:n_full].view(-1, block_size), stream[n_full:].view(1, -1)]
    with eval_mode(model):
        losses = [_mean_loss(model, blocks, batch_size) for blocks in parts if blocks.shape[1] > 1 and len(blocks)]
    if not losses:
        raise ValueError("perplexity: the texts have fewer than 2 tokens")
    return math.exp(sum(loss * n for loss, n in losses) / sum(n for _, n in losses))


def _optimizer(model, config: PretrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying biases and LayerNorm gains
    only hurts."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def pretrain(
    config: PretrainConfig,
    model_config: ModelConfig,
    tokenizer,
    texts_train: Sequence[str],
    texts_valid: Sequence[str],
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    callback: Callable[[list[dict]], None] | None = None,
):
    """Train a GPT-2 from scratch; returns (model, history).

    `history` gets one dict per evaluation (every `config.eval_every` steps and at the
    end): step, tokens, lr, train_loss (mean since the previous entry), valid_loss,
    valid_perplexity. `callback(history)` runs after each entry (e.g. a live plot).
    With `out_dir`, history.json and loss.png are written there.
    """
    if config.block_size > model_config.n_positions:
        raise ValueError(f"block_size={config.block_size} exceeds the model's n_positions={model_config.n_positions}")
    set_seed(config.seed)
    device = get_device()
    model = build_policy(model_config, tokenizer).to(device)
    train_blocks = pack_documents(tokenizer, texts_train, config.block_size)
    valid_blocks = pack_documents(tokenizer, texts_valid, config.block_size)[: config.eval_blocks]
    steps_per_epoch = math.ceil(len(train_blocks) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    optimizer = _optimizer(model, config)
    order = torch.Generator().manual_seed(config.seed)  # data order, independent of other RNG use

    history: list[dict] = []
    running, running_steps, tokens = 0.0, 0, 0
    bar = progress_bar(total=total, desc="pretraining", disable=not progress, mininterval=1.0)
    model.train()
    for step in range(total):
        if step % steps_per_epoch == 0:
            permutation = torch.randperm(len(train_blocks), generator=order)
        lr = cosine_schedule(step, total, config.warmup_steps, config.lr, config.lr * config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = permutation[(step % steps_per_epoch) * config.batch_size :][: config.batch_size]
        batch = train_blocks[index].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        gradient_step(model, optimizer, loss, config.grad_clip)
        running += loss.item()
        running_steps += 1
        tokens += batch.numel()
        bar.update(1)
        # refresh=False: the bar redraws at its own pace (a redraw per step floods a notebook's output channel)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.1e}", refresh=False)
        if (step + 1) % config.eval_every == 0 or step + 1 == total:
            model.eval()
            valid_loss, _ = _mean_loss(model, valid_blocks, config.batch_size)
            model.train()
            history.append({
                "step": step + 1,
                "tokens": tokens,
                "lr": lr,
                "train_loss": running / running_steps,
                "valid_loss": valid_loss,
                "valid_perplexity": math.exp(valid_loss),
            })
            running, running_steps = 0.0, 0
            if callback is not None:
                callback(history)
    bar.close()
    model.eval()
    if out_dir is not None:
        save_history(history, out_dir)
    return model, history


def save_history(history: list[dict], out_dir: str | os.PathLike) -> None:
    """Write history.json (the list of dicts) and loss.png to `out_dir`."""
    out_dir = Path(out_dir)
    with atomic_save_file(out_dir / "history.json") as tmp:
        tmp.write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    plot_history(history, ["train_loss", "valid_loss"], title="pretraining loss", path=out_dir / "loss.png")
