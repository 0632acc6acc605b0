"""Prompt formats, scoring rows, win rates and the fact-completion benchmark."""
import math
import random

import pytest
import torch

from rlhf_lab.benchmarks import continuation_logprobs
from rlhf_lab.evaluation import by_family, mean_scores, respond, win_rate, wins
from rlhf_lab.prompting import few_shot, few_shot_within, zero_shot

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Can it fly?"}]


def test_plain_prompts_read_like_a_web_page():
    assert zero_shot(CHAT) == "Hi\nHello!\nCan it fly?\n"
    shots = [([{"role": "user", "content": "Add 1 and 2."}], "3")]
    assert few_shot(CHAT[-1:], shots) == "Q: Add 1 and 2.\nA: 3\n\nQ: Can it fly?\nA:"


def test_few_shot_drops_examples_until_the_prompt_fits(tiny_tokenizer):
    demos = [{"prompt_id": f"d{i}", "family": "f", "prompt": [{"role": "user", "content": "Sort 4 1 3 2. " * 3}],
              "completion": [{"role": "assistant", "content": "4 3 2 1"}]} for i in range(5)]
    record = {"prompt_id": "x", "family": "f", "prompt": CHAT[-1:]}
    long = few_shot_within(tiny_tokenizer, record, demos, max_tokens=10_000, k=3)
    assert long.count("Q:") == 4
    short = few_shot_within(tiny_tokenizer, record, demos, max_tokens=len(tiny_tokenizer(long)["input_ids"]) - 1, k=3)
    assert short.count("Q:") == 3 and short.endswith("Q: Can it fly?\nA:")


def test_unknown_mode_and_missing_demonstrations_are_named(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown mode 'chatty'"):
        respond(tiny_model, tiny_tokenizer, [{"prompt": CHAT}], mode="chatty")
    with pytest.raises(ValueError, match="few_shot needs `demonstrations`"):
        respond(tiny_model, tiny_tokenizer, [{"prompt": CHAT}], mode="few_shot")


def test_win_rate_counts_ties_half_and_needs_the_same_prompts():
    a = [{"prompt_id": i, "overall": v} for i, v in enumerate([1.0, 0.5, 0.2, 0.7])]
    b = [{"prompt_id": i, "overall": v} for i, v in enumerate([0.5, 0.5, 0.9, 0.1])]
    assert wins(a, b) == [1.0, 0.5, 0.0, 1.0]
    assert win_rate(a, b) == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert win_rate(a, b) + win_rate(b, a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same prompts, in the same order; got 0 beside 3"):
        win_rate(a, b[::-1])


def test_means_and_families():
    rows = [{"family": "x", "helpful": 1.0, "toxic": True}, {"family": "y", "helpful": 0.0, "toxic": False},
            {"family": "x", "helpful": 0.5, "toxic": False}]
    assert mean_scores(rows, ("helpful", "toxic")) == {"helpful": 0.5, "toxic": pytest.approx(1 / 3)}
    assert by_family(rows) == {"x": 0.75, "y": 0.0}


def test_continuation_logprobs_match_a_direct_computation(tiny_model, tiny_tokenizer):
    prompt, options = "The cat lives in", [" the forest", " a pond."]
    got = continuation_logprobs(tiny_model, tiny_tokenizer, prompt, options)
    for option, value in zip(options, got):
        p = tiny_tokenizer(prompt)["input_ids"]
        c = tiny_tokenizer(option)["input_ids"]
        total = 0.0
        for k, token in enumerate(c):  # one forward per token: the slow way
            with torch.no_grad():
                logits = tiny_model(input_ids=torch.tensor([p + c[:k]])).logits[0, -1]
            total += float(torch.log_softmax(logits, -1)[token])
        assert value == pytest.approx(total, abs=1e-4)
    assert all(v < 0 and math.isfinite(v) for v in got)


class _Score:
    def __init__(self, value):
        self.value = value

    def overall(self, weights=None):
        return self.value


class _World:
    """Gold score = the answer's number; the task is ignored."""

    @staticmethod
    def task_from_record(record):
        return None

    @staticmethod
    def score(task, response):
        return _Score(float(response))


def test_panel_preferences_follow_the_gold_score_ties_count_half():
    from rlhf_lab.evaluation import panel_preferences
    from rlhf_lab.labelers import make_panel

    records = [{"prompt_id": f"p{i}"} for i in range(4)]
    panel = make_panel("held_out", noise=0.0)  # noiseless judges: the better answer always wins
    outcomes = panel_preferences(_World, records, ["0.9", "0.1", "0.5", "0.7"], ["0.2", "0.8", "0.5", "0.3"], panel)
    assert outcomes == [1.0, 0.0, 0.5, 1.0]
    noisy = make_panel("held_out", noise=10.0)  # judges who mostly guess: close to a coin flip on many prompts
    many = [{"prompt_id": f"p{i}"} for i in range(400)]
    rate = sum(panel_preferences(_World, many, ["0.6"] * 400, ["0.4"] * 400, noisy)) / 400
    assert 0.4 < rate < 0.65


def test_bootstrap_interval_against_the_normal_approximation():
    from rlhf_lab.evaluation import bootstrap_ci, panel_win_rate
    from rlhf_lab.labelers import make_panel

    values = [1.0] * 300 + [0.0] * 100 + [0.5] * 100  # mean 0.7
    low, high = bootstrap_ci(values)
    n = len(values)
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    assert low == pytest.approx(mean - 1.96 * se, abs=0.01) and high == pytest.approx(mean + 1.96 * se, abs=0.01)
    assert bootstrap_ci(values) == (low, high)  # seeded: the same interval twice
    records = [{"prompt_id": f"p{i}"} for i in range(3)]
    result = panel_win_rate(_World, records, ["1", "1", "0"], ["0", "0", "1"], make_panel("held_out", noise=0.0))
    assert result["win_rate"] == pytest.approx(2 / 3) and result["n"] == 3 and result["low"] <= 2 / 3 <= result["high"]
