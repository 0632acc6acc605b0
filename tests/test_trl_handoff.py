"""The hand-off to TRL: our data and models train in TRL's four trainers, TRL's DPO loss is ours on the
same batch, and `accelerate launch` runs the CLI stage with the shipped config."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from rlhf_lab import REPO_ROOT
from rlhf_lab.dpo import answer_logprobs
from rlhf_lab.losses import dpo_loss
from rlhf_lab.models import save_model
from rlhf_lab.reward import reward_model_from_policy
from rlhf_lab.trl_handoff import (ACCELERATE_CONFIGS, build_trainer, preference_dataset, prompt_dataset,
                                  sft_dataset)

ANIMALS = ["cat", "dog", "owl", "frog", "horse", "whale", "ant", "bee"]


def _prompt(a):
    return [{"role": "user", "content": f"Where does the {a} live?"}]


def _answer(text):
    return [{"role": "assistant", "content": text}]


DATASETS = {
    "sft": sft_dataset([{"prompt": _prompt(a), "completion": _answer(f"The {a} lives in the sea.")} for a in ANIMALS]),
    "preference": preference_dataset([{"prompt": _prompt(a), "chosen": _answer(f"The {a} lives in the sea."),
                                       "rejected": _answer(f"A {a} on a farm."), "labeler_id": "t1"}
                                      for a in ANIMALS]),
    "prompts": prompt_dataset([{"prompt": _prompt(a), "prompt_id": a} for a in ANIMALS]),
}


@pytest.fixture(scope="module")
def models(tiny_model, tiny_tokenizer, tmp_path_factory):
    """A tiny policy saved as the base and SFT model, and a reward model made from it."""
    root = tmp_path_factory.mktemp("trl-models")
    save_model(tiny_model, tiny_tokenizer, root / "policy")
    rm = reward_model_from_policy(root / "policy", "cpu")
    torch.manual_seed(0)
    torch.nn.init.normal_(rm.score.weight, std=0.5)
    save_model(rm, tiny_tokenizer, root / "rm")
    return {"base": root / "policy", "sft": root / "policy", "reward": root / "rm"}


def test_datasets_are_trls_conversational_formats():
    assert DATASETS["sft"].column_names == ["prompt", "completion"]
    assert DATASETS["preference"].column_names == ["prompt", "chosen", "rejected"]  # our extra keys dropped
    assert DATASETS["prompts"].column_names == ["prompt"]
    assert DATASETS["preference"][0]["chosen"] == [{"role": "assistant", "content": "The cat lives in the sea."}]


@pytest.mark.parametrize("stage", ["sft", "reward", "dpo", "rloo"])
def test_each_trl_trainer_trains_our_models_on_our_data(stage, models, tmp_path):
    extra = {"max_completion_length": 8, "num_generations": 2} if stage == "rloo" else {}
    trainer = build_trainer(stage, DATASETS, models, tmp_path, max_steps=2, batch_size=4, learning_rate=1e-3, **extra)
    before = copy.deepcopy(trainer.model.state_dict())
    metrics = trainer.train().metrics
    assert metrics["train_loss"] == metrics["train_loss"]  # a number, not NaN
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v.cpu(), before[k].cpu())]
    assert changed, f"TRL's {stage} trainer left every weight as it was"


@pytest.mark.parametrize("flag", ["true", "false"])
def test_accelerates_cpu_flag_reaches_the_trainer(flag, models, tmp_path, monkeypatch):
    """cpu.yaml sets ACCELERATE_USE_CPU; on a GPU machine the trainer must then batch on the CPU, where accelerate
    keeps the model (found on an H100: the model stayed on the CPU while transformers sent the batches to cuda)."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", flag)
    args = build_trainer("sft", DATASETS, models, tmp_path, max_steps=1, batch_size=4).args
    assert args.use_cpu == (flag == "true")
    assert not (args.use_cpu and args.bf16)


def test_unknown_stage_is_named():
    with pytest.raises(ValueError, match="unknown TRL stage 'ppo'.*sft, reward, dpo, rloo"):
        build_trainer("ppo", DATASETS, {}, "unused")


def test_trls_dpo_loss_is_ours_on_the_same_batch(models, tmp_path):
    """TRL's DPOTrainer loss on one of its batches (chosen rows, then rejected rows) equals
    `losses.dpo_loss` on our log-probs of the same tokens, with a policy that differs from the reference."""
    trainer = build_trainer("dpo", DATASETS, models, tmp_path, batch_size=4)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, batch)
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)

        def logps(model):
            return answer_logprobs(model, batch["input_ids"], batch["attention_mask"], labels)

        policy, reference = logps(trainer.model), logps(trainer.ref_model)
    n = len(policy) // 2
    ours, _ = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], trainer.beta)
    assert abs(float(ours) - float(torch.log(torch.tensor(2.0)))) > 1e-3  # the policy moved: not the trivial ln 2
    assert torch.allclose(theirs, ours, atol=1e-5)


@pytest.mark.parametrize("name", ["cpu.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml"])
def test_accelerate_configs_are_valid(name):
    """Each file loads as `accelerate launch` loads it (unknown keys or bad values would raise)."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE_CONFIGS / name))
    assert config.num_processes >= 1 and config.distributed_type in ("NO", "MULTI_GPU", "DEEPSPEED")


def test_accelerate_launch_runs_the_cli_stage(tmp_path):
    """What the README tells a student to run, on the shipped base model and demonstrations, two steps."""
    out = tmp_path / "sft"
    env = {**os.environ, "RLHF_LAB_RUNS": str(tmp_path / "runs")}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / "cpu.yaml"),
         "-m", "rlhf_lab", "trl", "sft", "--max-steps", "2", "--batch-size", "4", "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TRL sft:" in result.stdout and (out / "model.safetensors").exists()
