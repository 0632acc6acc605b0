import copy
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2ForSequenceClassification, LlamaConfig, LlamaForCausalLM
from transformers.activations import ACT2FN

from rlhf_lab.data import IGNORE_INDEX, collate, encode_example
from rlhf_lab.models import (count_parameters, labelled_logits, load_policy, save_model, stop_token_ids,
                             train_top_blocks)
from rlhf_lab.tokenizer import CHAT_TEMPLATE, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_build_policy_uses_our_token_ids(tiny_model, tiny_tokenizer):
    config = tiny_model.config
    assert config.vocab_size == len(tiny_tokenizer)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 0, 1)  # not GPT-2's 50256
    assert tiny_model.generation_config.eos_token_id == [tiny_tokenizer.convert_tokens_to_ids("<|end|>"), 0]
    assert tiny_model.generation_config.pad_token_id == 1
    assert (config.n_embd, config.n_layer, config.n_head, config.n_positions) == (32, 2, 2, 64)


def test_count_parameters_counts_tied_weights_once(tiny_model):
    c = tiny_model.config
    d, v, p, n_layer = c.n_embd, c.vocab_size, c.n_positions, c.n_layer
    per_block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert count_parameters(tiny_model) == v * d + p * d + n_layer * per_block + 2 * d


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits


def test_save_and_load_round_trip(tiny_model, tiny_tokenizer, tmp_path):
    path = tmp_path / "policy"
    save_model(tiny_model, tiny_tokenizer, path)
    files = {f.name for f in path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert [f.name for f in tmp_path.iterdir()] == ["policy"]  # no temporary folder left behind
    model, loaded_tok = load_policy(path, device="cpu")
    assert not model.training
    assert loaded_tok.chat_template == CHAT_TEMPLATE
    assert model.generation_config.eos_token_id == tiny_model.generation_config.eos_token_id
    ids = tiny_tokenizer.encode("The cat is red.")
    torch.testing.assert_close(_logits(model, ids), _logits(tiny_model, ids))


def test_save_model_failure_keeps_previous_checkpoint(tiny_model, tiny_tokenizer, tmp_path):
    path = tmp_path / "policy"
    save_model(tiny_model, tiny_tokenizer, path)
    before = {f.name: f.read_bytes() for f in path.iterdir()}

    class BrokenTokenizer:
        def save_pretrained(self, _):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_model(tiny_model, BrokenTokenizer(), path)
    assert {f.name: f.read_bytes() for f in path.iterdir()} == before
    assert [f.name for f in tmp_path.iterdir()] == ["policy"]


def test_load_policy_any_causal_lm(tiny_tokenizer, tmp_path, capsys):
    """A non-GPT-2 architecture whose tokenizer lacks a pad token and a chat template
    (like most base models on the hub) loads and is made usable."""
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=0,
    ))
    llama.save_pretrained(tmp_path)
    foreign = _save_without_pad(tiny_tokenizer, tmp_path)
    model, tok = load_policy(tmp_path, device="cpu")
    assert isinstance(model, LlamaForCausalLM)
    assert "no pad token" in capsys.readouterr().out
    assert tok.pad_token_id == tok.eos_token_id == 0 and model.config.pad_token_id == 0
    assert stop_token_ids(tok, model) == [tiny_tokenizer.convert_tokens_to_ids("<|end|>"), 0]
    ids = foreign.encode("A grey owl.")
    torch.testing.assert_close(_logits(model, ids), _logits(llama, ids))


def _save_without_pad(tokenizer, path):
    """Save a copy of `tokenizer` without a pad token into `path`."""
    tokenizer.save_pretrained(path / "_src")
    copy = load_tokenizer(path / "_src")
    copy.pad_token = None
    copy.save_pretrained(path)
    return copy


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no tokenizer at '.*nowhere'.*Set base_model to a local folder"):
        load_policy(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"'data/no-such-model'.*not a local folder"):
        load_policy("data/no-such-model")  # looks like a path: never sent to the hub


def test_uncached_hub_name_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"'nobody/no-such-model'.*not a Hugging Face model in the local cache"):
        load_policy("nobody/no-such-model")



def test_fused_gelu_is_gpt2s_gelu(tiny_model):
    """The shipped models use torch's fused tanh-GELU; it is GPT-2's spelled-out "gelu_new", to float rounding."""

    x = torch.linspace(-6, 6, 1001)
    reference = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))  # GPT-2's formula
    torch.testing.assert_close(ACT2FN["gelu_pytorch_tanh"](x), reference, atol=1e-6, rtol=1e-5)
    for folder in ("data/base-model", "data/base-model-large"):
        assert json.loads((ROOT / folder / "config.json").read_text())["activation_function"] == "gelu_pytorch_tanh"
    assert tiny_model.config.activation_function == "gelu_pytorch_tanh"
    spelled_out = copy.deepcopy(tiny_model)
    for block in spelled_out.transformer.h:
        block.mlp.act = ACT2FN["gelu_new"]
    ids = torch.arange(12)[None]
    torch.testing.assert_close(spelled_out(ids).logits, tiny_model(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_train_top_blocks_trains_only_the_top_blocks_and_the_final_norm(tiny_model, tiny_tokenizer, arch):
    model = copy.deepcopy(tiny_model) if arch == "gpt2" else LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64))
    blocks = model.base_model.h if arch == "gpt2" else model.base_model.layers
    top = {id(p) for p in [*blocks[-1].parameters(), *(model.base_model.ln_f if arch == "gpt2" else model.base_model.norm).parameters()]}
    assert train_top_blocks(model, 1) == sum(p.numel() for p in model.parameters() if id(p) in top)
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss.backward()
    assert all((p.grad is not None) == (id(p) in top) for p in model.parameters())
    with pytest.raises(ValueError, match="has 3 blocks|has 2 blocks"):
        train_top_blocks(model, 4)


def test_train_top_blocks_keeps_a_reward_heads_score_trainable(tiny_model):
    rm = GPT2ForSequenceClassification(tiny_model.config.__class__(**{**tiny_model.config.to_dict(), "num_labels": 1}))
    trainable = train_top_blocks(rm, 1)
    assert rm.score.weight.requires_grad and not rm.transformer.wte.weight.requires_grad
    assert trainable == count_parameters(rm.transformer.h[-1]) + count_parameters(rm.transformer.ln_f) + rm.score.weight.numel()



def _right_padded_batch(tokenizer):
    prompt = [{"role": "user", "content": "Where does the cat live?"}]
    examples = [encode_example(tokenizer, prompt, answer, 64) for answer in ("The cat lives in the forest.", "Hi.")]
    return collate(examples, tokenizer.pad_token_id)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_labelled_logits_are_the_full_forwards_logits_where_a_label_is_read(tiny_model, tiny_tokenizer, arch):
    model = tiny_model if arch == "gpt2" else LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, pad_token_id=tiny_tokenizer.pad_token_id)).eval()
    batch = _right_padded_batch(tiny_tokenizer)
    with torch.no_grad():
        logits, targets, rows = labelled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = [(b, t) for b in range(2) for t in range(batch["labels"].shape[1] - 1)
                if batch["labels"][b, t + 1] != IGNORE_INDEX]  # position t predicts label t + 1
    assert len(expected) == len(logits) < batch["attention_mask"].sum()  # the prompt's positions are left out
    assert torch.allclose(logits, torch.stack([full[b, t] for b, t in expected]), atol=1e-5)
    assert targets.tolist() == [int(batch["labels"][b, t + 1]) for b, t in expected]
    assert rows.tolist() == [b for b, _ in expected]


def test_labelled_logits_take_the_full_forward_where_the_model_caps_its_logits(tiny_model, tiny_tokenizer, monkeypatch):
    batch = _right_padded_batch(tiny_tokenizer)
    with torch.no_grad():
        plain = labelled_logits(tiny_model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0]
    model = copy.deepcopy(tiny_model)
    model.config.final_logit_softcapping = 30.0  # as Gemma 2: applied inside forward, after the head
    monkeypatch.setattr(model, "get_output_embeddings", lambda: pytest.fail("the head was applied by hand"))
    with torch.no_grad():
        assert torch.allclose(labelled_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0],
                              plain, atol=1e-5)
