"""The stages end to end, with their artifacts cached in runs/.

Every notebook can run alone: it asks here for what an earlier stage made, which is
loaded from runs/ when present and built (with a progress bar) when not. The CLI
(`python -m rlhf_lab sft`, ...) calls the same functions, so an instructor can prepare
a class ahead of time.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .config import ComparisonsConfig, ModelConfig, RewardConfig, SFTConfig
from .jsonl import read_jsonl, write_jsonl
from .models import load_policy, save_model
from .utils import DATA_DIR, RUNS_DIR
from .world import load_world

SFT_DIR = RUNS_DIR / "sft"
COMPARISONS_DIR = RUNS_DIR / "comparisons"
RM_DIR = RUNS_DIR / "rm"


def records(kind: str, split: str) -> list[dict]:
    """data/<kind>/<split>.jsonl, e.g. records("demonstrations", "train")."""
    return read_jsonl(DATA_DIR / kind / f"{split}.jsonl")


def base_model(model_config: ModelConfig | None = None):
    """(model, tokenizer) of the configured base model: the shipped one unless an instructor
    names another Hugging Face causal LM in ModelConfig.base_model."""
    return load_policy((model_config or ModelConfig()).base_model)


def train_sft_model(config: SFTConfig | None = None, model_config: ModelConfig | None = None,
                    out_dir: Path = SFT_DIR, callback=None, progress: bool = True):
    """Fine-tune the base model on the demonstrations; save model + history to `out_dir`."""
    from .sft import train_sft

    config = config or SFTConfig()
    model, tokenizer = base_model(model_config)
    train = records("demonstrations", "train")[: config.n_train]
    valid = records("demonstrations", "validation")
    score_on = records("prompts", "validation")[: config.n_score]
    model, history = train_sft(model, tokenizer, train, valid, config, load_world(0), score_on,
                               callback=callback, progress=progress)
    save_model(model, tokenizer, out_dir / "model")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    return model, tokenizer, history


def sft_model(config: SFTConfig | None = None, progress: bool = True):
    """(model, tokenizer) of the SFT stage: from runs/sft when it is there, trained if not."""
    if (SFT_DIR / "model" / "model.safetensors").exists():
        return load_policy(SFT_DIR / "model")
    model, tokenizer, _ = train_sft_model(config, progress=progress)
    return model, tokenizer


def save_comparisons(data: dict, out_dir: Path = COMPARISONS_DIR) -> None:
    """Write a `comparisons.collect` result: answers, rankings logs, TRL pairs, panel noise."""
    from .feedback import comparisons

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {i["prompt_id"]: i for i in data["items"]}
    write_jsonl(out_dir / "items.jsonl", data["items"])
    write_jsonl(out_dir / "rankings.jsonl", data["events"])
    write_jsonl(out_dir / "comparisons.jsonl", comparisons(data["events"], outputs))
    write_jsonl(out_dir / "valid-items.jsonl", data["valid_items"])
    write_jsonl(out_dir / "valid-rankings.jsonl", data["valid_events"])
    (out_dir / "panel.json").write_text(json.dumps({"noise": data["noise"]}) + "\n", encoding="utf-8")


def collect_comparisons(config: ComparisonsConfig | None = None, out_dir: Path = COMPARISONS_DIR,
                        progress: bool = True) -> dict:
    """Sample K answers per prompt with the SFT model, have the panel rank them, save to `out_dir`."""
    from .comparisons import collect

    config = config or ComparisonsConfig()
    model, tokenizer = sft_model(progress=progress)
    data = collect(load_world(0), model, tokenizer, records("prompts", "train")[-config.n_train:],
                   records("prompts", "validation")[:config.n_valid], config, progress)
    save_comparisons(data, out_dir)
    return data


def comparison_data(config: ComparisonsConfig | None = None, out_dir: Path = COMPARISONS_DIR,
                    progress: bool = True) -> dict:
    """The comparisons stage's files (collected with the SFT model if missing), read back:
    items, events, valid_items, valid_events, noise, and the student's own rankings."""
    from .feedback import read_events

    if not (out_dir / "valid-rankings.jsonl").exists():
        collect_comparisons(config, out_dir, progress)
    student = out_dir / "student.jsonl"
    return {"items": read_jsonl(out_dir / "items.jsonl"), "events": read_events(out_dir / "rankings.jsonl").events,
            "valid_items": read_jsonl(out_dir / "valid-items.jsonl"),
            "valid_events": read_events(out_dir / "valid-rankings.jsonl").events,
            "noise": json.loads((out_dir / "panel.json").read_text(encoding="utf-8"))["noise"],
            "student_events": read_events(student).events if student.exists() else []}


def reward_groups(data: dict, include_student: bool = True) -> tuple[list[dict], list[dict]]:
    """(training, validation) ranking groups; the student's rankings from notebook 03 join training."""
    from .feedback import comparisons
    from .reward import ranking_groups

    outputs = {i["prompt_id"]: i for i in data["items"]}
    train = comparisons(data["events"], outputs)
    if include_student:
        train += comparisons([e for e in data["student_events"] if e["prompt_id"] in outputs], outputs)
    valid = comparisons(data["valid_events"], {i["prompt_id"]: i for i in data["valid_items"]})
    return ranking_groups(train), ranking_groups(valid)


def train_reward(config: RewardConfig | None = None, out_dir: Path = RM_DIR, callback=None, progress: bool = True):
    """Train the reward model from the SFT weights, shift it so demonstrations average 0, and
    save model + history to `out_dir`. Returns (model, tokenizer, history, offset)."""
    from .reward import normalize, reward_model_from_policy, train_reward_model

    config = config or RewardConfig()
    train, valid = reward_groups(comparison_data(progress=progress))
    _, tokenizer = sft_model(progress=progress)
    model = reward_model_from_policy(SFT_DIR / "model")
    model, history = train_reward_model(model, tokenizer, train[:config.max_rankings], valid, config,
                                        callback=callback, progress=progress)
    removed = normalize(model, tokenizer, records("demonstrations", "train")[:config.n_normalize], config.max_length)
    save_model(model, tokenizer, out_dir / "model")
    summary = {"history": history, "removed_mean": removed}
    (out_dir / "history.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return model, tokenizer, history, removed


def reward_model(config: RewardConfig | None = None, progress: bool = True):
    """(reward model, tokenizer): from runs/rm when it is there, trained if not."""
    from .reward import load_reward_model
    from .tokenizer import load_tokenizer

    if not (RM_DIR / "model" / "model.safetensors").exists():
        train_reward(config, progress=progress)
    return load_reward_model(RM_DIR / "model"), load_tokenizer(RM_DIR / "model")


PPO_DIR = RUNS_DIR / "ppo"
PTX_DIR = RUNS_DIR / "ppo-ptx"  # notebook 06's PPO-ptx policy


def gold_scores(records: list[dict], texts: list[str]) -> list[float]:
    """The gold 3H score of each answer: what the labelers' preferences stand for, never trained on."""
    world = load_world(0)
    return [world.score(world.task_from_record(r), t).overall() for r, t in zip(records, texts, strict=True)]


def ppo_prompts() -> list[dict]:
    """The RL prompts: the training prompts the reward model's rankings did not use."""
    from .config import ComparisonsConfig

    return records("prompts", "train")[:-ComparisonsConfig().n_train]


def _rl_start(progress: bool):
    """What every RL run starts from: the frozen RM, its score function, and the SFT model twice
    (the policy to train and the frozen KL reference), with the tokenizer."""
    from .reward import rewards
    from .unpadded import GROUP_SIZE

    rm, _ = reward_model(progress=progress)
    rm.requires_grad_(False)
    policy, tokenizer = sft_model(progress=progress)
    reference, _ = load_policy(SFT_DIR / "model")
    return rm, (lambda seq, mask, texts: rewards(rm, seq, mask, GROUP_SIZE)), policy, reference, tokenizer


def ppo_trainer(config=None, progress: bool = True):
    """A PPOTrainer wired up: policy and KL reference from SFT, value model from the RM."""
    import copy

    from .config import PPOConfig
    from .ppo import PPOTrainer
    from .pretrain import pack_documents

    config = config or PPOConfig()
    rm, score_fn, policy, reference, tokenizer = _rl_start(progress)
    ptx = None
    if config.ptx_coef > 0:
        ptx = pack_documents(tokenizer, [r["text"] for r in records("corpus", "train")[:3000]], config.ptx_block_size)
    return PPOTrainer(policy, reference, copy.deepcopy(rm), tokenizer, score_fn, ppo_prompts(), config,
                      gold_fn=gold_scores, ptx_blocks=ptx)


def rloo_trainer(config=None, progress: bool = True):
    """An RLOOTrainer wired up like PPO's, on the same prompts and RM, with no value model."""
    from .config import RLOOConfig
    from .rloo import RLOOTrainer

    _, score_fn, policy, reference, tokenizer = _rl_start(progress)
    return RLOOTrainer(policy, reference, tokenizer, score_fn, ppo_prompts(), config or RLOOConfig(),
                       gold_fn=gold_scores)


def train_ppo(config=None, out_dir: Path = PPO_DIR, callback=None, progress: bool = True):
    """Run PPO (or PPO-ptx when config.ptx_coef > 0); save the policy and history to `out_dir`."""
    return _train_rl(ppo_trainer(config, progress), out_dir, callback, progress)


def train_rloo(config=None, out_dir: Path = RUNS_DIR / "rloo", callback=None, progress: bool = True,
               eval_records: list[dict] | None = None):
    """Run RLOO; save the policy and history (with fixed-prompt evaluations if asked) to `out_dir`."""
    return _train_rl(rloo_trainer(config, progress), out_dir, callback, progress, eval_records)


def _train_rl(trainer, out_dir: Path, callback, progress: bool, eval_records: list[dict] | None = None):
    history = trainer.train(callback=callback, progress=progress, eval_records=eval_records, eval_every=10)
    save_ppo(trainer, history, out_dir)
    return trainer.policy, trainer.tokenizer, history


def save_ppo(trainer, history: list[dict], out_dir: Path = PPO_DIR) -> None:
    """The trained policy, and the step history plus any fixed-prompt evaluations, in `out_dir`."""
    save_model(trainer.policy, trainer.tokenizer, out_dir / "model")
    summary = {"history": history, "evaluations": trainer.evaluations}
    (out_dir / "history.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def ppo_model(config=None, out_dir: Path = PPO_DIR, progress: bool = True):
    """(policy, tokenizer) after PPO: from `out_dir` when it is there, trained if not."""
    if (out_dir / "model" / "model.safetensors").exists():
        return load_policy(out_dir / "model")
    policy, tokenizer, _ = train_ppo(config, out_dir, progress=progress)
    return policy, tokenizer


def frontier_prompts() -> list[dict]:
    """The fixed prompts of every reward-vs-KL curve: notebook 05's PPO evaluation set."""
    return records("prompts", "validation")[:64]


def fixed_prompt_evaluation(policy, prompt_records: list[dict], seed: int = 0) -> dict:
    """RM score, gold score and KL from SFT (k1 summed per answer) of `policy`'s answers to fixed prompts,
    sampled at T = 1 with a fixed seed: PPOTrainer.evaluate, for a policy trained any way."""
    from .config import PPOConfig
    from .ppo import PPOTrainer

    _, score_fn, _, reference, tokenizer = _rl_start(progress=False)
    config = PPOConfig(seed=seed)
    trainer = PPOTrainer(policy, reference, None, tokenizer, score_fn, prompt_records, config, gold_fn=gold_scores)
    return trainer.evaluate(prompt_records)


def train_dpo_policy(config=None, out_dir: Path = RUNS_DIR / "dpo", callback=None, progress: bool = True):
    """DPO from the SFT model on the reward model's own rankings; save policy and history to `out_dir`."""
    from .config import DPOConfig
    from .dpo import train_dpo

    config = config or DPOConfig()
    train, valid = reward_groups(comparison_data(progress=progress))
    policy, tokenizer = sft_model(progress=progress)
    reference, _ = load_policy(SFT_DIR / "model")
    policy, history = train_dpo(policy, reference, tokenizer, train, valid, config, callback, progress)
    save_model(policy, tokenizer, out_dir / "model")
    (out_dir / "history.json").write_text(json.dumps({"history": history}, indent=1) + "\n", encoding="utf-8")
    return policy, tokenizer, history


def best_of_n_frontier(prompt_records: list[dict], n_max: int = 32, seed: int = 0, out_dir: Path = RUNS_DIR / "bon",
                       progress: bool = True) -> dict:
    """n_max SFT answers per prompt (T = 1), each scored by the RM and the gold checker, and the best-of-n
    curve for n = 1, 2, 4, ... n_max: analytic KL, mean RM score and gold of the RM's pick (over all
    subsets), and "oracle", the gold of gold's own pick: what a perfect reward model would get from the
    same answers. Candidates and curve are written to `out_dir`."""
    from .best_of_n import expected_best_of, sample_candidates
    from .config import PPOConfig
    from .losses import best_of_n_kl
    from .reward import score_texts

    rm, _, policy, _, tokenizer = _rl_start(progress)
    candidates = sample_candidates(policy, tokenizer, prompt_records, n_max, PPOConfig().max_new_tokens, seed=seed,
                                   progress=progress)
    rm_scores = [score_texts(rm, tokenizer, [(r["prompt"], c) for c in cs]) for r, cs in zip(prompt_records, candidates)]
    gold = [gold_scores([r] * len(cs), cs) for r, cs in zip(prompt_records, candidates)]
    ns = [2 ** k for k in range(int(math.log2(n_max)) + 1)]
    curve = [{"n": n, "kl": best_of_n_kl(n),
              "rm": sum(expected_best_of(s, s, n) for s in rm_scores) / len(rm_scores),
              "gold": sum(expected_best_of(s, g, n) for s, g in zip(rm_scores, gold)) / len(gold),
              "oracle": sum(expected_best_of(g, g, n) for g in gold) / len(gold)} for n in ns]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "candidates.jsonl", [{"prompt_id": r["prompt_id"], "answers": cs, "rm": s, "gold": g}
                                                for r, cs, s, g in zip(prompt_records, candidates, rm_scores, gold)])
    (out_dir / "frontier.json").write_text(json.dumps(curve, indent=1) + "\n", encoding="utf-8")
    return {"curve": curve, "candidates": candidates, "rm": rm_scores, "gold": gold}


LARGE_BASE = ModelConfig.large().base_model  # `python -m rlhf_lab pretrain --large`
EVAL_DIR = RUNS_DIR / "evaluation"


def rm_agreement() -> dict:
    """The reward model's accuracy on the validation pairs both labelers ranked, beside their agreement."""
    from .reward import agreement_with_ceiling, score_groups

    data = comparison_data(progress=False)
    model, tokenizer = reward_model(progress=False)
    items = data["valid_items"]
    scores = score_groups(model, tokenizer, [{"prompt": i["prompt"], "completions": i["outputs"]} for i in items])
    ceiling = agreement_with_ceiling(data["valid_events"], {i["prompt_id"]: s for i, s in zip(items, scores)})
    return {"rm": ceiling["rm"], "labelers": ceiling["labelers"]}


def evaluate(progress: bool = True, seed: int = 0) -> tuple[list, dict]:
    """Every finding of notebook 07, measured on the course's models (PPO-ptx and the alignment tax too when
    notebook 06 has saved them); also written to runs/evaluation/. `seed` seeds the answers and the judges.
    Returns (findings, raw numbers)."""
    from .findings import measure, table, to_json

    models = {"base": base_model()[0], "large base": load_policy(LARGE_BASE)[0], "SFT": sft_model(progress=progress)[0],
              "PPO": ppo_model(progress=progress)[0]}
    if (PTX_DIR / "model" / "model.safetensors").exists():
        models["PPO-ptx"] = load_policy(PTX_DIR / "model")[0]
    _, tokenizer = sft_model(progress=False)
    tax_file = PPO_DIR / "alignment_tax.json"
    tax = json.loads(tax_file.read_text(encoding="utf-8")) if tax_file.exists() else None
    noise = comparison_data(progress=False)["noise"]
    findings, numbers = measure(load_world(0), models, tokenizer, records("prompts", "test"),
                                records("demonstrations", "train"), noise, rm_agreement(), tax, progress=progress, seed=seed)
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    (EVAL_DIR / "findings.json").write_text(to_json(findings, numbers), encoding="utf-8")
    (EVAL_DIR / "findings.txt").write_text(table(findings) + "\n", encoding="utf-8")
    return findings, numbers
