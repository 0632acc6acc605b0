import pytest
from jinja2.exceptions import TemplateError

from rlhf_lab.config import SPECIAL_TOKENS, TokenizerConfig
from rlhf_lab.tokenizer import CHAT_TEMPLATE, format_chat, format_prompt, load_tokenizer, train_tokenizer

MESSAGES = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "How many legs\ndoes a cat have?"},
    {"role": "assistant", "content": "4"},
]


def test_training_is_deterministic(sentences, tiny_tokenizer, tmp_path):
    again = train_tokenizer(sentences, TokenizerConfig.smoke(), model_max_length=64)
    assert again.backend_tokenizer.to_str() == tiny_tokenizer.backend_tokenizer.to_str()
    tiny_tokenizer.save_pretrained(tmp_path / "a")
    again.save_pretrained(tmp_path / "b")
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()


def test_special_tokens_and_settings(tiny_tokenizer):
    assert [tiny_tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4, 5]
    assert tiny_tokenizer.bos_token == tiny_tokenizer.eos_token == "<|endoftext|>"
    assert tiny_tokenizer.pad_token == "<|pad|>"
    assert tiny_tokenizer.padding_side == "left"
    assert tiny_tokenizer.model_max_length == 64
    assert len(tiny_tokenizer) == TokenizerConfig.smoke().vocab_size
    # a special token inside text is one id, never split into pieces
    assert tiny_tokenizer.encode("a<|end|>b", add_special_tokens=False)[1] == tiny_tokenizer.convert_tokens_to_ids("<|end|>")


@pytest.mark.parametrize(
    "text",
    [
        "The cat has 4 legs.",
        "  leading spaces, trailing spaces  ",
        "line one\nline two\n\n\ttabbed 1234567890 3.14 -42",
        "unseen words: zebra quokka Ünïcödé 🦉 ",
        "<|user|>\nhi<|end|>\n<|assistant|>\n",
        "it ' s fine . , ! ?",  # spaces before punctuation survive (no clean-up)
    ],
)
def test_decode_encode_round_trip(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    assert tiny_tokenizer.decode(ids) == text


def test_chat_template_exact_strings(tiny_tokenizer):
    assert format_chat(tiny_tokenizer, MESSAGES) == (
        "<|system|>\nBe kind.<|end|>\n<|user|>\nHow many legs\ndoes a cat have?<|end|>\n<|assistant|>\n4<|end|>"
    )
    assert format_prompt(tiny_tokenizer, MESSAGES[1:2]) == "<|user|>\nHow many legs\ndoes a cat have?<|end|>\n<|assistant|>\n"
    assert format_prompt(tiny_tokenizer, MESSAGES[:2]) == (  # one message per line, as before a conversation's end
        "<|system|>\nBe kind.<|end|>\n<|user|>\nHow many legs\ndoes a cat have?<|end|>\n<|assistant|>\n")
    # the prompt is a prefix of the full chat: SFT can mask the prompt by length
    assert format_chat(tiny_tokenizer, MESSAGES[1:]).startswith(format_prompt(tiny_tokenizer, MESSAGES[1:2]))


def test_unknown_role_is_a_clear_error(tiny_tokenizer):
    with pytest.raises(TemplateError, match="unknown chat role 'bot'"):
        format_prompt(tiny_tokenizer, [{"role": "bot", "content": "hi"}])


def test_save_and_load_keep_everything(tiny_tokenizer, tmp_path, capsys):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert capsys.readouterr().out == ""  # nothing needed fixing
    assert loaded.chat_template == CHAT_TEMPLATE
    assert loaded.padding_side == "left" and loaded.pad_token_id == 1
    text = format_chat(tiny_tokenizer, MESSAGES)
    assert loaded.encode(text) == tiny_tokenizer.encode(text)


def test_foreign_tokenizer_gets_pad_and_template(tiny_tokenizer, tmp_path, capsys):
    """A gpt2-like tokenizer (no pad token, no chat template) is made usable, with a note."""
    tiny_tokenizer.save_pretrained(tmp_path / "ours")
    foreign = load_tokenizer(tmp_path / "ours")
    foreign.pad_token = None
    foreign.chat_template = None
    foreign.save_pretrained(tmp_path / "foreign")
    loaded = load_tokenizer(tmp_path / "foreign")
    out = capsys.readouterr().out
    assert "no pad token" in out and "no chat template" in out
    assert loaded.pad_token_id == loaded.eos_token_id
    assert format_prompt(loaded, [{"role": "user", "content": "hi"}]) == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_shipped_tokenizers_carry_the_current_template():
    """data/ ships tokenizers (and models with theirs): each must render chats as the code says."""
    from rlhf_lab import DATA_DIR

    for folder in ("tokenizer", "base-model", "base-model-large"):
        assert (DATA_DIR / folder / "chat_template.jinja").read_text(encoding="utf-8") == CHAT_TEMPLATE, folder
