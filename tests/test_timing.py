"""The benchmark: each timed stage really trains (weights change), and the table is formatted right."""
import copy

import torch

from rlhf_lab.timing import _timed, bench_pretrain, bench_sft, markdown


def test_timed_skips_the_warm_up_call():
    calls = []
    assert _timed(lambda: calls.append(1), 3) >= 0 and len(calls) == 4


def test_bench_pretrain_and_sft_take_real_steps(tiny_model, tiny_tokenizer, sentences):
    model = copy.deepcopy(tiny_model)  # the shared fixture must stay untrained
    row = bench_pretrain(tiny_tokenizer, sentences, steps=1)
    assert row["unit"] == "tokens/s" and row["throughput"] > 0 and row["seconds_per_step"] > 0
    demos = [{"prompt": [{"role": "user", "content": s[:30]}], "completion": [{"content": s[30:60] or "ok"}]}
             for s in sentences[:8]]
    row = bench_sft(model, tiny_tokenizer, demos, steps=1)
    assert any(not torch.equal(a, b) for a, b in zip(tiny_model.parameters(), model.parameters()))
    assert row["stage"] == "SFT" and row["throughput"] > 0


def test_markdown_table():
    rows = [{"stage": "SFT", "per_step": "32 demonstrations", "seconds_per_step": 0.5, "throughput": 12345.6,
             "unit": "tokens/s"},
            {"stage": "sampling", "per_step": "32 answers", "seconds_per_step": None, "throughput": 1900.0,
             "unit": "tokens/s"}]
    lines = markdown(rows).splitlines()
    assert lines[2] == "| SFT | 32 demonstrations | 0.50 | 12,346 tokens/s |"
    assert lines[3] == "| sampling | 32 answers |  | 1,900 tokens/s |"
