"""`python -m rlhf_lab bench`: how fast each stage runs on this machine, in tokens (or answers) per second.

Each stage runs its real training code for a few steps on the course's models; the first step is
a warm-up and is not timed. Sampling (every row to the end, and answers that stop) is also timed against
transformers' `generate`, reward-model training against TRL's RewardTrainer and an RLOO step against
TRL's RLOOTrainer, in the same process, as ratios that a busy machine does not skew.
Needs runs/sft and runs/rm (built first if missing, which takes minutes).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .config import ModelConfig, PPOConfig, PretrainConfig, RewardConfig
from .data import collate, encode_demonstrations
from .generation import drop_padding_columns, encode_prompts, generate_ids
from .models import build_policy, context_length
from .pretrain import _optimizer, gradient_step, pack_documents
from .reward import train_reward_model
from .utils import RUNS_DIR, eval_mode, set_seed


def _timed(step, n: int) -> float:
    """Seconds per call of `step()`, over `n` calls after one untimed warm-up call."""
    step()
    return _seconds_per_call(step, n)


def _seconds_per_call(step, n: int) -> float:
    """Seconds per call of `step()`, over `n` calls, all timed."""
    start = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - start) / n


def bench_pretrain(tokenizer, texts: list[str], steps: int = 5) -> dict:
    """A freshly built course-size model on full 16 × 256-token batches."""
    config = PretrainConfig()
    model = build_policy(ModelConfig(), tokenizer)
    model.train()
    optimizer = _optimizer(model, config)
    blocks = pack_documents(tokenizer, texts, config.block_size)[:config.batch_size]
    seconds = _timed(lambda: gradient_step(model, optimizer, model(input_ids=blocks, labels=blocks).loss,
                                           config.grad_clip), steps)
    return {"stage": "pretraining", "per_step": f"{config.batch_size} × {config.block_size} tokens",
            "seconds_per_step": seconds, "throughput": blocks.numel() / seconds, "unit": "tokens/s"}


def bench_sft(model, tokenizer, demonstrations: list[dict], steps: int = 5) -> dict:
    """One batch of 32 demonstrations, trained in place (pass a model you do not need afterwards)."""
    batch = collate(encode_demonstrations(tokenizer, demonstrations[:32], max_length=192), tokenizer.pad_token_id,
                    model.device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    seconds = _timed(lambda: gradient_step(model, optimizer, model(**batch).loss, 1.0), steps)
    tokens = int(batch["attention_mask"].sum())
    return {"stage": "SFT", "per_step": "32 demonstrations", "seconds_per_step": seconds,
            "throughput": tokens / seconds, "unit": "tokens/s"}


def bench_reward(model, tokenizer, groups: list[dict], steps: int = 5) -> dict:
    """`train_reward_model` itself, on `steps` batches of rankings after a one-batch warm-up (no validation)."""
    config = RewardConfig(epochs=1)  # one pass: `steps` batches
    size = config.groups_per_batch
    train_reward_model(model, tokenizer, groups[:size], [], config, progress=False)
    chunk = groups[size:size * (steps + 1)]
    start = time.perf_counter()
    train_reward_model(model, tokenizer, chunk, [], config, progress=False)
    seconds = time.perf_counter() - start
    answers = sum(len(g["completions"]) for g in chunk)
    return {"stage": "reward model", "per_step": f"{size} rankings", "seconds_per_step": seconds / steps,
            "throughput": answers / seconds, "unit": "answers/s"}


def bench_reward_vs_trl(policy_path, tokenizer, groups: list[dict], n_rankings: int = 32) -> dict:
    """Our reward-model training against TRL's RewardTrainer on the same rankings, one pass each from the
    same SFT weights, in one process. Ours forwards each answer once per ranking (C(K, 2) pairs share
    those forwards); TRL forwards both answers of every pair: K(K − 1) forwards for a ranking of K."""
    import tempfile

    from .reward import reward_model_from_policy
    from .trl_handoff import build_trainer, preference_dataset

    chunk = groups[:n_rankings]
    pairs = [{"prompt": g["prompt"], "chosen": [{"role": "assistant", "content": g["completions"][w]}],
              "rejected": [{"role": "assistant", "content": g["completions"][l]}]} for g in chunk for w, l in g["pairs"]]
    config = RewardConfig(epochs=1, evals_per_epoch=1)
    model = reward_model_from_policy(policy_path, "cpu")  # loading is set-up, untimed for both (TRL's: build_trainer)
    start = time.perf_counter()
    train_reward_model(model, tokenizer, chunk, [], config, progress=False)
    ours = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer("reward", {"preference": preference_dataset(pairs)}, {"sft": policy_path}, out,
                                batch_size=config.pairs_per_batch, disable_tqdm=True)
        start = time.perf_counter()
        trainer.train()
        theirs = time.perf_counter() - start
    return {"stage": "reward model: ours vs TRL's RewardTrainer", "per_step": f"{len(chunk)} rankings = {len(pairs)} pairs",
            "seconds_per_step": ours, "throughput": len(pairs) / ours, "unit": "pairs/s",
            "trl_throughput": len(pairs) / theirs, "vs_trl": theirs / ours}


def _race(ours, theirs, repeats: int) -> tuple[float, float]:
    """Median seconds of `ours()` and `theirs()`, interleaved (ours, theirs, ours, ...) `repeats` times each after
    one untimed warm-up each: on a shared CPU absolute speeds drift with the other work on the machine."""
    seconds = {ours: [], theirs: []}
    for step in (ours, theirs):
        step()
    for _ in range(repeats):
        for step in (ours, theirs):
            start = time.perf_counter()
            step()
            seconds[step].append(time.perf_counter() - start)
    return statistics.median(seconds[ours]), statistics.median(seconds[theirs])


def _left_padded(model, tokenizer, prompts: list[str], max_new_tokens: int):
    """(ids, mask) as sample() and PPO build them, on the model's device."""
    device = next(model.parameters()).device
    ids, mask = drop_padding_columns(*encode_prompts(tokenizer, prompts, context_length(model) - max_new_tokens))
    return ids.to(device), mask.to(device)


def bench_sampling(model, tokenizer, prompts: list[str], batch_sizes=(32, 128, 512), max_new_tokens: int = 48,
                   repeats: int = 3) -> list[dict]:
    """Our sampler (`generate_ids`, KV cache) against transformers' `model.generate` on the same
    left-padded batches of `prompts`: `max_new_tokens` tokens for every prompt, temperature 1, no
    top-p or top-k (ours without stop tokens, generate with min_new_tokens, so no row stops early and
    both do the same work). Timed by `_race`; a row reports the medians and their ratio (`vs_generate`:
    above 1 means ours is faster).
    """
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    config = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                              min_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    rows = []
    with eval_mode(model):
        for size in batch_sizes:
            ids, mask = _left_padded(model, tokenizer, prompts[:size], max_new_tokens)
            new_tokens = ids.shape[0] * max_new_tokens

            def ours():
                generation = generate_ids(model, ids, mask, max_new_tokens, stop_ids=[],
                                          pad_token_id=tokenizer.pad_token_id, generator=torch.Generator(device=device).manual_seed(0))
                assert generation.response_mask.sum() == new_tokens

            def theirs():
                with torch.no_grad():
                    out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
                assert out.shape[1] == ids.shape[1] + max_new_tokens

            mine, generate = _race(ours, theirs, repeats)
            rows.append({"stage": "sampling: generate_ids vs transformers' generate",
                         "per_step": f"{ids.shape[0]} prompts × {max_new_tokens} tokens", "seconds_per_step": mine,
                         "throughput": new_tokens / mine, "unit": "tokens/s",
                         "generate_throughput": new_tokens / generate, "vs_generate": generate / mine})
    return rows


def bench_answering(model, tokenizer, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.7,
                    repeats: int = 3) -> dict:
    """Answering as the course does: both samplers stop a row at the model's stop tokens (`generate` runs until
    every row has stopped, computing the stopped ones; ours drops them from the batch). Each side draws its own
    answers, so the row also reports both mean answer lengths: the comparison is fair when they are close."""
    from transformers import GenerationConfig

    from .models import stop_token_ids

    device = next(model.parameters()).device
    stops = stop_token_ids(tokenizer, model)
    config = GenerationConfig(do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=stops, bos_token_id=tokenizer.bos_token_id)
    ids, mask = _left_padded(model, tokenizer, prompts, max_new_tokens)
    lengths = {"ours": [], "theirs": []}

    def ours():
        generation = generate_ids(model, ids, mask, max_new_tokens, stop_ids=stops, pad_token_id=tokenizer.pad_token_id,
                                  temperature=temperature, generator=torch.Generator(device=device).manual_seed(0))
        lengths["ours"].append(generation.response_mask.sum(dim=1).float().mean().item())

    def theirs():
        with torch.no_grad():
            answers = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1]:]
        stopped = torch.isin(answers, torch.tensor(stops, device=device))
        # tokens up to and including the first stop (all of them where a row never stopped)
        ends = torch.where(stopped.any(dim=1), stopped.long().argmax(dim=1) + 1, answers.shape[1])
        lengths["theirs"].append(ends.float().mean().item())

    with eval_mode(model):
        mine, generate = _race(ours, theirs, repeats)
    return {"stage": "answering: generate_ids vs transformers' generate, rows stop at the stop tokens",
            "per_step": f"{len(prompts)} prompts, T = {temperature}, up to {max_new_tokens} tokens "
                        f"(answers of {statistics.mean(lengths['ours']):.1f} tokens on average; generate's "
                        f"{statistics.mean(lengths['theirs']):.1f})",
            "seconds_per_step": mine, "throughput": len(prompts) / mine, "unit": "answers/s",
            "generate_throughput": len(prompts) / generate, "vs_generate": generate / mine,
            "answer_tokens": statistics.mean(lengths["ours"]), "generate_answer_tokens": statistics.mean(lengths["theirs"])}


def bench_ppo(steps: int = 3) -> list[dict]:
    """Sampling, rollout and update times of full PPO steps with the course's models and config."""
    from .pipeline import ppo_trainer

    config = PPOConfig()
    trainer = ppo_trainer(config, progress=False)
    trainer.step()  # warm-up
    stats = [trainer.step() for _ in range(steps)]

    def mean(key):
        return sum(s[key] for s in stats) / steps

    per_step = f"{config.batch_size} answers"
    return [{"stage": "sampling (KV cache)", "per_step": per_step, "seconds_per_step": None,
             "throughput": mean("sample_tokens_per_s"), "unit": "tokens/s"},
            {"stage": "PPO rollout (sample + 4 scoring forwards)", "per_step": per_step,
             "seconds_per_step": mean("rollout_s"), "throughput": config.batch_size / mean("rollout_s"),
             "unit": "answers/s"},
            {"stage": "PPO update", "per_step": f"{config.ppo_epochs} × {config.batch_size // config.minibatch_size} "
             f"minibatches", "seconds_per_step": mean("update_s"), "throughput": config.batch_size / mean("update_s"),
             "unit": "answers/s"}]


def trl_rloo_like(config, policy_path, reward_path, prompt_records: list[dict], output_dir, steps: int):
    """TRL's RLOOTrainer set up to do what `steps` steps of our RLOO (`config`) do: the same k answers
    per prompt, answers per step (one generation batch), minibatches, passes, clip ε, β, learning
    rate, answer length and temperature, on the same SFT policy and reward model."""
    from .trl_handoff import build_trainer, prompt_dataset

    minibatches = config.batch_size // config.minibatch_size
    return build_trainer("rloo", {"prompts": prompt_dataset(prompt_records)}, {"sft": policy_path, "reward": reward_path},
                         output_dir, max_steps=steps * minibatches * config.ppo_epochs, seed=config.seed,
                         batch_size=config.minibatch_size, steps_per_generation=minibatches,
                         num_generations=config.samples_per_prompt, num_iterations=config.ppo_epochs,
                         epsilon=config.clip, beta=config.kl_coef, learning_rate=config.lr, lr_scheduler_type="constant",
                         max_grad_norm=config.grad_clip, max_completion_length=config.max_new_tokens,
                         temperature=config.temperature, disable_tqdm=True,
                         gradient_checkpointing=False)  # TRL's RL default trades time for memory; ours keeps activations


def bench_rloo_vs_trl(trainer, trl_trainer, steps: int) -> dict:
    """Our RLOO (`trainer`) against TRL's RLOOTrainer doing the same work (`trl_rloo_like`, set up for `steps`
    steps), in one process. Each side's first step is a warm-up and is not timed; ours runs `steps` steps before
    TRL's and `steps` after, and their mean is our time, so a machine that speeds up or slows down during the
    race does not favour either side. TRL 1.x has no PPO trainer any more (`trl.experimental.ppo` is gone), so
    PPO cannot be set against TRL's; RLOO is the RL method both have."""
    from transformers import TrainerCallback

    if steps < 2:
        raise ValueError(f"the RLOO race needs steps >= 2 (each side's first step is an untimed warm-up), got {steps}")
    first = trl_trainer.args.steps_per_generation * trl_trainer.args.num_iterations  # optimizer steps per RL step

    class Clock(TrainerCallback):  # from the end of TRL's first RL step (a generation's minibatches, passes) to the last
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == first:
                self.start = time.perf_counter()

        def on_train_end(self, *args, **kwargs):
            self.seconds = time.perf_counter() - self.start

    before = _timed(trainer.step, steps)
    clock = Clock()
    trl_trainer.add_callback(clock)
    trl_trainer.train()
    theirs = clock.seconds / (steps - 1)
    mine = (before + _seconds_per_call(trainer.step, steps)) / 2
    answers = trainer.config.batch_size
    return {"stage": "RLOO step: ours vs TRL's RLOOTrainer", "per_step": f"{answers} answers "
            f"({answers // trainer.config.samples_per_prompt} prompts × {trainer.config.samples_per_prompt})",
            "seconds_per_step": mine, "throughput": answers / mine, "unit": "answers/s",
            "trl_throughput": answers / theirs, "vs_trl": theirs / mine}


def _rloo_rows(steps: int = 4) -> list[dict]:
    """Our RLOO against TRL's, on the course's SFT policy and reward model."""
    import tempfile

    from .config import RLOOConfig
    from .pipeline import RM_DIR, SFT_DIR, ppo_prompts, rloo_trainer

    config = RLOOConfig(steps=steps)
    with tempfile.TemporaryDirectory() as out:
        theirs = trl_rloo_like(config, SFT_DIR / "model", RM_DIR / "model", ppo_prompts(), out, steps)
        return [bench_rloo_vs_trl(rloo_trainer(config, progress=False), theirs, steps)]


def run_all() -> list[dict]:
    """Every stage, in pipeline order."""
    from .pipeline import SFT_DIR, comparison_data, records, reward_groups, sft_model
    from .reward import reward_model_from_policy
    from .tokenizer import format_prompt

    set_seed(0)
    model, tokenizer = sft_model(progress=False)
    rankings = reward_groups(comparison_data(progress=False))[0]
    prompts = [format_prompt(tokenizer, r["prompt"]) for r in records("prompts", "train")]
    stages = [
        lambda: bench_sampling(model, tokenizer, prompts),
        lambda: [bench_answering(model, tokenizer, prompts[:128])],
        lambda: [bench_pretrain(tokenizer, [r["text"] for r in records("corpus", "train")[:400]])],
        lambda: [bench_sft(model, tokenizer, records("demonstrations", "train"))],  # trains `model`: sampling went first
        lambda: [bench_reward(reward_model_from_policy(SFT_DIR / "model"), tokenizer, rankings),
                 bench_reward_vs_trl(SFT_DIR / "model", tokenizer, rankings)],
        bench_ppo,
        _rloo_rows]
    rows = []
    for stage in stages:
        rows += [{**row, "peak_rss_mb": peak_rss_mb()} for row in stage()]
    return rows


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far, in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KB; macOS: bytes
    return kilobytes / (1024 * 1024 if sys.platform == "darwin" else 1024)


def markdown(rows: list[dict]) -> str:
    lines = ["| stage | one step | seconds per step | throughput | peak memory so far |", "|---|---|---|---|---|"]
    for r in rows:
        seconds = "" if r["seconds_per_step"] is None else f"{r['seconds_per_step']:.2f}"
        versus = (f" ({r['vs_generate']:.2f}× generate's {r['generate_throughput']:,.0f})" if "vs_generate" in r else
                  f" ({r['vs_trl']:.2f}× TRL's {r['trl_throughput']:,.0f})" if "vs_trl" in r else "")
        memory = f"{r['peak_rss_mb']:,.0f} MB" if r.get("peak_rss_mb") else ""
        lines.append(f"| {r['stage']} | {r['per_step']} | {seconds} | {r['throughput']:,.0f} {r['unit']}{versus} "
                     f"| {memory} |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], out_dir: Path = RUNS_DIR) -> tuple[Path, Path]:
    """runs/bench.md (the table) and runs/bench.json (the numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "bench.md", out_dir / "bench.json"
    md.write_text(markdown(rows), encoding="utf-8")
    js.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return md, js
