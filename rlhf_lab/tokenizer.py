"""The course tokenizer: a small byte-level BPE with special tokens and a chat template.

Byte-level BPE (as in GPT-2) can encode any text, so decode(encode(text)) == text
exactly, including newlines and digits. The result is a standard
`PreTrainedTokenizerFast`, saved with `save_pretrained`, so it loads anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from .config import ModelConfig, TokenizerConfig
from .hub import from_pretrained

# Each message becomes "<|role|>\n{content}<|end|>", one per line; a generation prompt adds
# "\n<|assistant|>\n". A conversation ends at <|end|>, the token the reward model reads its
# score at, also when TRL renders it. Unknown roles raise instead of being rendered silently.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception(\"unknown chat role '\" ~ message['role'] ~ \"' (expected system, user or assistant)\") }}"
    "{%- endif -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{%- if messages -%}{{ '\\n' }}{%- endif -%}{{ '<|assistant|>\\n' }}{%- endif -%}"
)

Messages = Sequence[dict[str, str]]


def train_tokenizer(
    texts: Iterable[str],
    config: TokenizerConfig | None = None,
    model_max_length: int = ModelConfig.n_positions,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; the same texts give an identical tokenizer.json.

    Special tokens get ids 0, 1, ... in `config.special_tokens` order. Padding is on the
    left because batched generation appends tokens on the right.
    """
    config = config or TokenizerConfig()
    eos, pad, *extra = config.special_tokens
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(config.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=eos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=extra,
        padding_side="left",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # keep " ." as is: exact round trips
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer from a local folder or a cached Hugging Face name.

    Tokenizers made elsewhere are made usable here, with a note: a missing pad token
    becomes the eos token (as for gpt2), and a missing chat template becomes ours.
    """
    tokenizer = from_pretrained(AutoTokenizer, name_or_path, what="tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        print(f"rlhf_lab: tokenizer {str(name_or_path)!r} has no pad token; using eos {tokenizer.eos_token!r}")
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
        print(f"rlhf_lab: tokenizer {str(name_or_path)!r} has no chat template; using the course's")
    tokenizer.padding_side = "left"
    return tokenizer


def format_prompt(tokenizer: PreTrainedTokenizerFast, messages: Messages) -> str:
    """The conversation so far plus the assistant tag: the text a policy continues."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def format_chat(tokenizer: PreTrainedTokenizerFast, messages: Messages) -> str:
    """A complete conversation as text (e.g. prompt plus demonstration for SFT)."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False)
