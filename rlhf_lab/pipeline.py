"""The stages end to end, with their artifacts cached in runs/.

Every notebook can run alone: it asks here for what an earlier stage made, which is
loaded from runs/ when present and built (with a progress bar) when not. The CLI
(`python -m rlhf_lab sft`, ...) calls the same functions, so an instructor can prepare
a class ahead of time.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import ModelConfig, SFTConfig
from .jsonl import read_jsonl
from .models import load_policy, save_model
from .utils import DATA_DIR, RUNS_DIR
from .world import load_world

SFT_DIR = RUNS_DIR / "sft"


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
