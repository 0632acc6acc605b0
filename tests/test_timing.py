"""The benchmark: each timed stage really trains (weights change), and the table is formatted right."""
import copy

import pytest
import torch

from rlhf_lab.timing import _timed, bench_pretrain, bench_sampling, bench_sft, markdown, peak_rss_mb


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
             "unit": "tokens/s", "peak_rss_mb": 812.4},
            {"stage": "sampling", "per_step": "32 answers", "seconds_per_step": None, "throughput": 1900.0,
             "unit": "tokens/s", "peak_rss_mb": None}]
    lines = markdown(rows).splitlines()
    assert lines[2] == "| SFT | 32 demonstrations | 0.50 | 12,346 tokens/s | 812 MB |"
    assert lines[3] == "| sampling | 32 answers |  | 1,900 tokens/s |  |"


def test_peak_memory_is_a_plausible_number_of_megabytes():
    assert 10 < peak_rss_mb() < 100_000


def test_bench_sampling_times_both_samplers_on_the_same_batches(tiny_model, tiny_tokenizer, sentences):
    tiny_model.train()
    try:
        rows = bench_sampling(tiny_model, tiny_tokenizer, [s[:20] for s in sentences], batch_sizes=(2, 5),
                              max_new_tokens=4, repeats=2)
        assert tiny_model.training  # mode restored
    finally:
        tiny_model.eval()
    assert [r["per_step"] for r in rows] == ["2 prompts × 4 tokens", "5 prompts × 4 tokens"]
    for r in rows:
        assert r["unit"] == "tokens/s" and r["seconds_per_step"] > 0
        assert r["throughput"] > 0 and r["generate_throughput"] > 0
        assert r["vs_generate"] == pytest.approx(r["throughput"] / r["generate_throughput"])
    line = markdown(rows[:1]).splitlines()[2]
    assert line.startswith("| sampling: generate_ids vs transformers' generate | 2 prompts × 4 tokens | ")
    assert line.endswith(f" tokens/s ({rows[0]['vs_generate']:.2f}× generate's {rows[0]['generate_throughput']:,.0f}) |  |")


def test_bench_answering_stops_rows_on_both_sides(tiny_model, tiny_tokenizer, sentences, monkeypatch):
    from collections import Counter

    from rlhf_lab.generation import encode_prompts, generate_ids
    from rlhf_lab.timing import bench_answering

    prompts = [s[:20] for s in sentences[:6]]
    free = generate_ids(tiny_model, *encode_prompts(tiny_tokenizer, prompts, 40), 12, stop_ids=[], pad_token_id=1,
                        temperature=0.7, generator=torch.Generator().manual_seed(0))
    common = [t for t, _ in Counter(free.response_ids.flatten().tolist()).most_common(3)]  # stops rows soon meet
    monkeypatch.setattr("rlhf_lab.models.stop_token_ids", lambda tokenizer, model=None: common)
    torch.manual_seed(0)  # generate draws from the global generator: the same draws in any test order
    row = bench_answering(tiny_model, tiny_tokenizer, prompts, max_new_tokens=12, repeats=1)
    assert row["unit"] == "answers/s" and row["vs_generate"] == pytest.approx(row["throughput"] / row["generate_throughput"])
    assert 1 <= row["answer_tokens"] < 12 and 1 <= row["generate_answer_tokens"] < 12  # both stopped rows early
    assert f"answers of {row['answer_tokens']:.1f} tokens" in row["per_step"]


def test_bench_reward_vs_trl_trains_both_on_the_same_pairs(tiny_model, tiny_tokenizer, tmp_path):
    from rlhf_lab.models import save_model
    from rlhf_lab.timing import bench_reward_vs_trl

    save_model(tiny_model, tiny_tokenizer, tmp_path / "sft")
    groups = [{"prompt": [{"role": "user", "content": f"Where does the {a} live?"}],
               "completions": [f"The {a} lives in the sea.", f"A {a} on a farm.", "No."], "pairs": [(0, 1), (0, 2), (1, 2)]}
              for a in ("cat", "dog", "owl", "frog")]
    row = bench_reward_vs_trl(tmp_path / "sft", tiny_tokenizer, groups, n_rankings=3)
    assert row["per_step"] == "3 rankings = 9 pairs" and row["unit"] == "pairs/s"
    assert row["vs_trl"] == pytest.approx(row["throughput"] / row["trl_throughput"])
    assert markdown([row]).splitlines()[2].endswith(f"({row['vs_trl']:.2f}× TRL's {row['trl_throughput']:,.0f}) |  |")


def test_bench_rloo_vs_trl_runs_both_for_the_same_work(tiny_model, tiny_tokenizer, tmp_path):
    """Our RLOO and TRL's RLOOTrainer, set up alike: same answers per step, minibatches and steps."""
    from rlhf_lab.config import RLOOConfig
    from rlhf_lab.models import load_policy, save_model
    from rlhf_lab.reward import load_reward_model, reward_model_from_policy, rewards
    from rlhf_lab.rloo import RLOOTrainer
    from rlhf_lab.timing import bench_rloo_vs_trl, trl_rloo_like

    save_model(tiny_model, tiny_tokenizer, tmp_path / "sft")
    save_model(reward_model_from_policy(tmp_path / "sft", "cpu"), tiny_tokenizer, tmp_path / "rm")
    prompts = [{"prompt": [{"role": "user", "content": f"Where does the {a} live?"}], "prompt_id": a}
               for a in ("cat", "dog", "owl", "frog")]
    config = RLOOConfig(steps=2, batch_size=8, minibatch_size=4, samples_per_prompt=4, max_new_tokens=4)
    rm = load_reward_model(tmp_path / "rm", "cpu")
    ours = RLOOTrainer(load_policy(tmp_path / "sft", "cpu")[0], load_policy(tmp_path / "sft", "cpu")[0], tiny_tokenizer,
                       lambda seq, mask, texts: rewards(rm, seq, mask), prompts, config)
    theirs = trl_rloo_like(config, tmp_path / "sft", tmp_path / "rm", prompts, tmp_path / "trl", config.steps)
    args = theirs.args
    assert (args.num_generations, args.per_device_train_batch_size, args.steps_per_generation) == (4, 4, 2)
    assert not args.gradient_checkpointing  # neither side recomputes activations
    assert (args.beta, args.epsilon, args.learning_rate, args.max_completion_length) == \
        (config.kl_coef, config.clip, config.lr, config.max_new_tokens)
    row = bench_rloo_vs_trl(ours, theirs, config.steps)
    # TRL: 2 steps = 2 generations of 8 answers, each in 2 minibatches; ours: a warm-up, then 2 before and 2 after
    assert ours.step_count == 5 and theirs.state.global_step == 4
    assert row["per_step"] == "8 answers (2 prompts × 4)" and row["unit"] == "answers/s"
    assert row["vs_trl"] == pytest.approx(row["throughput"] / row["trl_throughput"])


def test_bench_rloo_vs_trl_needs_a_timed_step_after_the_warm_up():
    from rlhf_lab.timing import bench_rloo_vs_trl

    with pytest.raises(ValueError, match="steps >= 2"):
        bench_rloo_vs_trl(None, None, 1)
