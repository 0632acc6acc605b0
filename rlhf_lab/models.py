"""Build, load and save policies: plain `transformers` causal LMs, safetensors only.

The course trains a GPT-2 from scratch, but everything downstream only assumes "a
Hugging Face causal LM plus its tokenizer", so `base_model` can name any of them.
"""

from __future__ import annotations

import contextlib
import os

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedModel
from transformers.utils import logging as hf_logging

from .config import ModelConfig
from .data import IGNORE_INDEX
from .hub import from_pretrained
from .tokenizer import load_tokenizer
from .utils import atomic_save_dir, get_device


def build_policy(model_config: ModelConfig, tokenizer) -> GPT2LMHeadModel:
    """A freshly initialized GPT-2 sized by `model_config`, wired to our token ids.

    transformers' GPT2Config defaults bos/eos to 50256 (GPT-2's own vocabulary), so the
    ids are always passed explicitly. Generation stops at <|end|> (end of a chat turn)
    or <|endoftext|> (end of a document). The activation is GPT-2's tanh-approximated GELU
    in torch's one fused kernel ("gelu_pytorch_tanh"), the same function as GPT-2's
    "gelu_new", which spells it out in five elementwise ops: SFT steps run 13% faster.
    """
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=model_config.n_positions,
        n_embd=model_config.n_embd,
        n_layer=model_config.n_layer,
        n_head=model_config.n_head,
        activation_function="gelu_pytorch_tanh",
        resid_pdrop=model_config.dropout,
        embd_pdrop=model_config.dropout,
        attn_pdrop=model_config.dropout,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _with_causal_lm_loss(GPT2LMHeadModel(config))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


@contextlib.contextmanager
def quiet_hf_loading():
    """transformers 5 shows "Loading weights" / "Writing model shards" bars even for a
    few-MB model; in a notebook they are noise. The previous settings are restored."""
    enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # and the "LOAD REPORT" table when a head is new by design
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if enabled:
            hf_logging.enable_progress_bar()


def _with_causal_lm_loss(model: PreTrainedModel) -> PreTrainedModel:
    """transformers 5 picks the loss from the class name and does not recognise
    "GPT2LMHeadModel"; it falls back to the causal LM loss with a warning. Say it outright."""
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"
    return model


def stop_token_ids(tokenizer, model: PreTrainedModel | None = None) -> list[int]:
    """Token ids that end a response: <|end|> if the vocabulary has it, the tokenizer's
    eos, and any eos ids in the model's generation_config (e.g. <|im_end|> for chat models)."""
    ids = []
    end_id = tokenizer.convert_tokens_to_ids("<|end|>") if "<|end|>" in tokenizer.get_vocab() else None
    candidates = [end_id, tokenizer.eos_token_id]
    if model is not None and model.generation_config is not None:
        eos = model.generation_config.eos_token_id
        candidates += eos if isinstance(eos, list) else [eos]
    for i in candidates:
        if i is not None and i not in ids:
            ids.append(int(i))
    return ids


def context_length(model: PreTrainedModel) -> int:
    """Maximum tokens (prompt + response) the model accepts, across architectures."""
    for attr in ("n_positions", "max_position_embeddings"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    raise ValueError(f"cannot tell the context length of {type(model).__name__}: its config has no n_positions or max_position_embeddings")


def left_padded_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: a row's first real token is position 0, so a prompt gets the
    same positions in any batch (with right padding they are 0, 1, 2, ... anyway)."""
    return (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)


def load_policy(name_or_path: str | os.PathLike, device: torch.device | str | None = None):
    """Load (model, tokenizer) from a local folder or a cached Hugging Face name.

    Only safetensors weights are read (nothing is unpickled) and no remote code runs.
    The model is returned in eval mode on `device` (default: `get_device()`).
    """
    tokenizer = load_tokenizer(name_or_path)
    with quiet_hf_loading():
        model = from_pretrained(AutoModelForCausalLM, name_or_path, what="model", use_safetensors=True)
    _with_causal_lm_loss(model)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device or get_device()).eval(), tokenizer


def save_model(model: PreTrainedModel, tokenizer, path: str | os.PathLike) -> None:
    """Save model and tokenizer into `path` (safetensors); never leaves it half-written."""
    with quiet_hf_loading(), atomic_save_dir(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def labelled_logits(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) logits at the N positions that predict a labelled token (label != -100), their (N,) targets and
    (N,) row indices: what `model(...).logits` gives there, with the LM head run only where a loss is read.
    Over prompts and padding it is wasted work: 56% of the course's SFT positions, and on a real model's
    49,152-token vocabulary the head and its log-softmax are the largest tensors of a step. A model that
    scales or caps its logits after the head (Gemma's soft-capping, Cohere's logit scale) takes the full
    forward instead, so the numbers are always the model's own."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    if any(getattr(model.config, name, None) for name in ("final_logit_softcapping", "logit_scale")):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1][keep]
    else:
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return logits, targets[keep], keep.nonzero()[:, 0]


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; tied weights (GPT-2's embedding and unembedding) count once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def train_top_blocks(model: PreTrainedModel, n: int) -> int:
    """Freeze all but the top `n` transformer blocks and the final norm (and a reward model's score head);
    return how many parameters still train.

    What makes a real model trainable on a laptop: the backward pass stops at the lowest trained block and
    the optimizer keeps state only for what trains (SmolLM2-135M, top 10 of 30 blocks: 35M of 135M
    parameters, half the time and memory of a step). Works for GPT-2 (`h`, `ln_f`) and Llama (`layers`,
    `norm`) bodies."""
    body = model.base_model
    blocks, norm = getattr(body, "layers", getattr(body, "h", None)), getattr(body, "norm", getattr(body, "ln_f", None))
    if blocks is None or norm is None:
        raise ValueError(f"train_top_blocks knows GPT-2 and Llama bodies, not {type(body).__name__}: "
                         "freeze its parameters with requires_grad_(False) yourself")
    if not 1 <= n <= len(blocks):
        raise ValueError(f"n = {n}: {type(model).__name__} has {len(blocks)} blocks")
    model.requires_grad_(False)
    for module in (*blocks[-n:], norm, getattr(model, "score", None)):
        if module is not None:
            module.requires_grad_(True)
    return count_parameters(model, trainable_only=True)
