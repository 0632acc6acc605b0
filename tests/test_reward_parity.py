"""A saved reward model gives the package's scores through plain transformers, which is what TRL and
every other consumer run: same score token, same positions, no offset kept outside the weights."""
import copy

import pytest
import torch
from transformers import (AutoModelForSequenceClassification, GPT2Config, GPT2ForSequenceClassification, LlamaConfig,
                          LlamaForSequenceClassification)

from rlhf_lab.models import save_model
from rlhf_lab.reward import load_reward_model, normalize, rewards, score_token_index, shift_rewards

TEXTS = ["The cat is red.", "A dog, 22 cm long, was seen near the sea.", "Q: Where?"]
DEMOS = [{"prompt": [{"role": "user", "content": f"Where does the {a} live?"}],
          "completion": [{"role": "assistant", "content": f"The {a} lives in the sea."}]} for a in ("cat", "owl")]


def _batch(tokenizer, side: str, pad_id: int, end_id: int):
    """TEXTS, each ending with `end_id`, padded with `pad_id` on `side`."""
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [end_id] for t in TEXTS]
    width = max(map(len, rows))
    ids, mask = torch.full((len(rows), width), pad_id), torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        ids[i, cols], mask[i, cols] = torch.tensor(row), 1
    return ids, mask


def _hf_scores(model, ids, mask, positions: bool = False):
    """transformers' own forward and pooling; TRL passes mask-aware position ids, a plain call does not."""
    extra = {"position_ids": (mask.cumsum(-1) - 1).clamp(min=0)} if positions else {}
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, **extra).logits[:, 0]


def _gpt2(tokenizer, pad_id):
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2,
                                                    n_positions=64, num_labels=1, pad_token_id=pad_id)).eval()


def _llama(tokenizer):
    torch.manual_seed(0)
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, num_labels=1, pad_token_id=tokenizer.pad_token_id)).eval()


def _saved_and_reloaded(model, tokenizer, tmp_path):
    save_model(model, tokenizer, tmp_path / "rm")
    return load_reward_model(tmp_path / "rm", "cpu"), AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_transformers_reads_the_package_scores_after_normalization(arch, tiny_tokenizer, tmp_path):
    model = _gpt2(tiny_tokenizer, tiny_tokenizer.pad_token_id) if arch == "gpt2" else _llama(tiny_tokenizer)
    removed = normalize(model, tiny_tokenizer, DEMOS, max_length=64)
    assert (removed != 0) == (arch == "gpt2")  # Llama's RMSNorm has no bias to hold the shift: left unshifted
    ours, theirs = _saved_and_reloaded(model, tiny_tokenizer, tmp_path)
    end = tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    right = _batch(tiny_tokenizer, "right", tiny_tokenizer.pad_token_id, end)
    left = _batch(tiny_tokenizer, "left", tiny_tokenizer.pad_token_id, end)
    with torch.no_grad():
        package = rewards(ours, *right)
        assert torch.allclose(rewards(ours, *left), package, atol=1e-5)  # the package ignores padding
    assert package.std() > 0.01  # a head that tells the texts apart
    assert torch.allclose(_hf_scores(theirs, *right), package, atol=1e-5)  # right padding: default positions fit
    assert torch.allclose(_hf_scores(theirs, *left, positions=True), package, atol=1e-5)  # left: TRL's positions


def test_pad_equal_to_eos_reads_where_transformers_reads(tiny_tokenizer, tmp_path):
    """gpt2 pads with eos. transformers then reads the score at the token before a final eos; so does the
    package (reading at the eos itself, as a mask-based index would, gives other scores)."""
    eos = tiny_tokenizer.eos_token_id
    model = _gpt2(tiny_tokenizer, eos)
    ours, theirs = _saved_and_reloaded(model, tiny_tokenizer, tmp_path)
    ids, mask = _batch(tiny_tokenizer, "right", eos, eos)
    assert (score_token_index(ids, eos) == mask.sum(dim=1) - 2).all()  # one before the eos
    with torch.no_grad():
        package = rewards(ours, ids, mask)
    assert torch.allclose(_hf_scores(theirs, ids, mask), package, atol=1e-5)
    left = _batch(tiny_tokenizer, "left", eos, eos)
    assert torch.allclose(_hf_scores(theirs, *left, positions=True), package, atol=1e-5)


def test_shift_refuses_a_model_without_a_bias_to_hold_it(tiny_tokenizer):
    model = _llama(tiny_tokenizer)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="no bias before its score head"):
        shift_rewards(model, 1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_config_without_pad_id_takes_the_tokenizers(tiny_tokenizer, tmp_path):
    model = _llama(tiny_tokenizer)
    model.config.pad_token_id = None
    save_model(model, tiny_tokenizer, tmp_path / "rm")
    assert load_reward_model(tmp_path / "rm", "cpu").config.pad_token_id == tiny_tokenizer.pad_token_id
