"""The hand-off to TRL, and through it to Accelerate and DeepSpeed: the course's own demonstrations,
rankings and models go unchanged into TRL's SFTTrainer, RewardTrainer, DPOTrainer and RLOOTrainer.

`python -m rlhf_lab trl STAGE` runs one here; `accelerate launch --config_file
rlhf_lab/accelerate/<setup>.yaml -m rlhf_lab trl STAGE` runs the same code on one CPU, on several
GPUs (DDP) or with DeepSpeed ZeRO-2. Each stage starts where the course's does: SFT from the base
model, the reward model and DPO from the SFT model, RLOO from the SFT model against the course's
reward model, which TRL scores through plain transformers at the same token as the package does
(see `reward.score_token_index`).

One difference is deliberate: TRL's RewardTrainer and DPOTrainer take a ranking of K answers as
C(K, 2) separate, shuffled pairs, where the course keeps a ranking in one batch element (the paper
found shuffled pairs overfit; notebook 04 measures it).
"""
from __future__ import annotations

import os
from pathlib import Path

STAGES = ("sft", "reward", "dpo", "rloo")
ACCELERATE_CONFIGS = Path(__file__).parent / "accelerate"  # cpu.yaml, multi_gpu.yaml, deepspeed_zero2.yaml


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown TRL stage {stage!r}; use one of {', '.join(STAGES)}")


def sft_dataset(demonstrations: list[dict]):
    """TRL's conversational prompt-completion format: our demonstration records already are it."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": d["prompt"], "completion": d["completion"]} for d in demonstrations])


def preference_dataset(pairs: list[dict]):
    """TRL's conversational preference format from our pairs (`feedback.comparisons`), extra keys dropped."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                              for p in pairs])


def prompt_dataset(prompt_records: list[dict]):
    """Prompts only, for RL: TRL samples the answers itself."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"]} for r in prompt_records])


def course_inputs(stage: str) -> tuple[dict, dict[str, Path]]:
    """(datasets, model folders) that `stage` starts from: demonstrations and the base model (sft);
    the reward model's training rankings as pairs and the SFT model (reward, dpo); the RL prompts,
    the SFT model and the reward model (rloo). Course artifacts that are missing are built first,
    which takes minutes, and only in a single process: under a multi-process launch, build them before."""
    from .config import ModelConfig
    from .feedback import comparisons
    from .pipeline import COMPARISONS_DIR, RM_DIR, SFT_DIR, comparison_data, ppo_prompts, records, reward_model, sft_model

    _check_stage(stage)
    if stage == "sft":
        return {"sft": sft_dataset(records("demonstrations", "train"))}, {"base": Path(ModelConfig().base_model)}
    needed = [SFT_DIR / "model", RM_DIR / "model" if stage == "rloo" else COMPARISONS_DIR / "rankings.jsonl"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit(f"error: {', '.join(missing)} missing; build the course's artifacts once, in one process "
                         f"(python -m rlhf_lab sft, comparisons, rm), then launch again")
    if missing:  # built here, in this one process (present ones are only loaded by the trainer)
        sft_model()
        if stage == "rloo":
            reward_model()
    if stage == "rloo":
        return {"prompts": prompt_dataset(ppo_prompts())}, {"sft": SFT_DIR / "model", "reward": RM_DIR / "model"}
    data = comparison_data(progress=False)
    pairs = comparisons(data["events"], {item["prompt_id"]: item for item in data["items"]})
    return {"preference": preference_dataset(pairs)}, {"sft": SFT_DIR / "model"}


def build_trainer(stage: str, datasets: dict, models: dict[str, Path], output_dir: Path, max_steps: int = -1,
                  seed: int = 0, batch_size: int = 8, **overrides):
    """The TRL trainer of `stage` on our data and models, with our knobs where the course has one
    (DPO's β, RLOO's k, KL coefficient, answer length and temperature). `max_steps` -1: one epoch;
    `overrides` go to TRL's config as they are (e.g. learning_rate=1e-5)."""
    from .config import DPOConfig, PPOConfig, RLOOConfig
    from .models import load_policy
    from .reward import load_reward_model

    _check_stage(stage)
    import torch
    from accelerate.utils import parse_flag_from_env

    # `accelerate launch` with cpu.yaml keeps even a GPU machine's model on the CPU; transformers' batches
    # follow torch to the GPU unless the trainer is told so too.
    use_cpu = parse_flag_from_env("ACCELERATE_USE_CPU")
    bf16 = not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()  # TRL's default; a CPU cannot
    common = {"output_dir": str(output_dir), "seed": seed, "per_device_train_batch_size": batch_size,
              "use_cpu": use_cpu, "bf16": bf16,
              "max_steps": max_steps, "num_train_epochs": 1, "report_to": "none", "save_strategy": "no",
              "logging_steps": 10, **overrides}
    if stage == "sft":
        from trl import SFTConfig, SFTTrainer

        model, tokenizer = load_policy(models["base"], "cpu")
        return SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=datasets["sft"],
                          processing_class=tokenizer)
    if stage == "reward":
        from trl import RewardConfig, RewardTrainer

        from .reward import reward_model_from_policy
        from .tokenizer import load_tokenizer

        return RewardTrainer(model=reward_model_from_policy(models["sft"], "cpu"), args=RewardConfig(**common),
                             train_dataset=datasets["preference"], processing_class=load_tokenizer(models["sft"]))
    policy, tokenizer = load_policy(models["sft"], "cpu")
    if stage == "dpo":
        from trl import DPOConfig as TRLDPOConfig
        from trl import DPOTrainer

        return DPOTrainer(model=policy, ref_model=load_policy(models["sft"], "cpu")[0],
                          args=TRLDPOConfig(**{"beta": DPOConfig().beta, **common}), train_dataset=datasets["preference"],
                          processing_class=tokenizer)
    from trl import RLOOConfig as TRLRLOOConfig
    from trl import RLOOTrainer

    ours, ppo = RLOOConfig(), PPOConfig()
    knobs = {"num_generations": ours.samples_per_prompt, "beta": ppo.kl_coef, "temperature": ppo.temperature,
             "max_completion_length": ppo.max_new_tokens}
    args = TRLRLOOConfig(**{**knobs, **common})
    return RLOOTrainer(model=policy, reward_funcs=load_reward_model(models["reward"], "cpu"), args=args,
                       train_dataset=datasets["prompts"], processing_class=tokenizer,
                       reward_processing_classes=tokenizer)


def run(stage: str, output_dir: Path, max_steps: int = -1, seed: int = 0, batch_size: int = 8) -> dict:
    """Train `stage` with TRL on the course's data and models; save the result to `output_dir`.
    Returns TRL's training metrics."""
    datasets, models = course_inputs(stage)
    trainer = build_trainer(stage, datasets, models, output_dir, max_steps, seed, batch_size)
    result = trainer.train()
    trainer.save_model(str(output_dir))
    return result.metrics
