import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from rlhf_lab.config import ModelConfig, PretrainConfig
from rlhf_lab.pretrain import cosine_schedule, pack_documents, perplexity, pretrain


def test_pack_documents_concatenates_with_separators(tiny_tokenizer, sentences):
    texts = sentences[:20]
    blocks = pack_documents(tiny_tokenizer, texts, block_size=16)
    stream = []
    for text in texts:  # slow reference: one document at a time
        stream += tiny_tokenizer.encode(text, add_special_tokens=False) + [tiny_tokenizer.eos_token_id]
    assert blocks.shape == (len(stream) // 16, 16)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]
    assert torch.equal(pack_documents(tiny_tokenizer, texts, 16), blocks)  # deterministic
    with pytest.raises(ValueError, match="fewer than block_size=1000"):
        pack_documents(tiny_tokenizer, texts[:2], 1000)


def test_cosine_schedule_against_the_formula():
    lr, min_lr, warmup, total = 1e-3, 1e-4, 10, 110
    assert cosine_schedule(0, total, warmup, lr, min_lr) == pytest.approx(lr / warmup)
    assert cosine_schedule(4, total, warmup, lr, min_lr) == pytest.approx(lr * 5 / warmup)
    assert cosine_schedule(warmup - 1, total, warmup, lr, min_lr) == pytest.approx(lr)
    assert cosine_schedule(warmup, total, warmup, lr, min_lr) == pytest.approx(lr)
    assert cosine_schedule(60, total, warmup, lr, min_lr) == pytest.approx((lr + min_lr) / 2)
    step = 85  # a quarter of the way from the end of decay: cos(3 pi / 4)
    assert cosine_schedule(step, total, warmup, lr, min_lr) == pytest.approx(min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(0.75 * math.pi)))
    assert cosine_schedule(total, total, warmup, lr, min_lr) == pytest.approx(min_lr)
    assert cosine_schedule(total + 5, total, warmup, lr, min_lr) == pytest.approx(min_lr)
    assert cosine_schedule(0, 5, 0, lr) == pytest.approx(lr)  # no warmup starts at the peak
    rates = [cosine_schedule(s, total, warmup, lr, min_lr) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


SMOKE = replace(PretrainConfig.smoke(), max_steps=24, eval_every=8)


def _run(tokenizer, sentences, **changes):
    return pretrain(replace(SMOKE, **changes), ModelConfig.smoke(), tokenizer, sentences[:180], sentences[180:], progress=False)


def test_pretrain_is_deterministic_and_learns(tiny_tokenizer, sentences):
    model_a, history_a = _run(tiny_tokenizer, sentences)
    model_b, history_b = _run(tiny_tokenizer, sentences)
    assert history_a == history_b
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    _, history_c = _run(tiny_tokenizer, sentences, seed=1)
    assert history_c[-1]["train_loss"] != history_a[-1]["train_loss"]
    assert [h["step"] for h in history_a] == [8, 16, 24]
    assert [h["tokens"] for h in history_a] == [8 * 4 * 32, 16 * 4 * 32, 24 * 4 * 32]
    assert history_a[-1]["valid_loss"] < history_a[0]["valid_loss"] - 0.2
    assert history_a[-1]["valid_perplexity"] == pytest.approx(math.exp(history_a[-1]["valid_loss"]))
    assert not model_a.training


def test_outputs_and_callback(tiny_tokenizer, sentences, tmp_path):
    seen = []
    _, history = pretrain(
        SMOKE, ModelConfig.smoke(), tiny_tokenizer, sentences[:180], sentences[180:],
        out_dir=tmp_path, progress=False, callback=lambda h: seen.append(len(h)),
    )
    assert seen == [1, 2, 3]
    assert json.loads((tmp_path / "history.json").read_text()) == history
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_block_size_must_fit_the_model(tiny_tokenizer, sentences):
    with pytest.raises(ValueError, match="block_size=128 exceeds the model's n_positions=64"):
        _run(tiny_tokenizer, sentences, block_size=128)


def test_perplexity_against_a_token_by_token_reference(tiny_model, tiny_tokenizer, sentences):
    texts = sentences[:7]
    block = 24
    stream = []
    for text in texts:
        stream += tiny_tokenizer.encode(text, add_special_tokens=False) + [tiny_tokenizer.eos_token_id]
    assert len(stream) % block > 1  # the tail block is exercised
    nll = []
    with torch.no_grad():
        for start in range(0, len(stream), block):
            chunk = stream[start : start + block]
            for i in range(1, len(chunk)):  # predict token i from the tokens before it in its block
                logits = tiny_model(input_ids=torch.tensor([chunk[:i]])).logits[0, -1]
                nll.append(-F.log_softmax(logits, dim=-1)[chunk[i]].item())
    assert perplexity(tiny_model, tiny_tokenizer, texts, block, batch_size=3) == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-5)
