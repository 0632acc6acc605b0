"""`python -m rlhf_lab data`: write the world to data/ as JSONL, byte for byte reproducible."""
from __future__ import annotations

from pathlib import Path

from ..jsonl import write_jsonl
from . import World
from .corpus import make_corpus
from .splits import demonstration, make_prompts

N_TRAIN_DOCUMENTS = 30_000
N_VALIDATION_DOCUMENTS = 1_000


def write_data(out_dir: str | Path, seed: int = 0) -> dict[str, int]:
    """Write facts, corpus, prompts and demonstrations under `out_dir`; returns line counts."""
    out = Path(out_dir)
    world = World(seed)
    prompts = make_prompts(world)
    files = {
        "world/facts.jsonl": world.facts.to_records(),
        "corpus/train.jsonl": make_corpus(world, N_TRAIN_DOCUMENTS, "train"),
        "corpus/validation.jsonl": make_corpus(world, N_VALIDATION_DOCUMENTS, "validation"),
    }
    for split in ("train", "validation", "test"):
        files[f"prompts/{split}.jsonl"] = [p for p in prompts if p["split"] == split]
    for split in ("train", "validation"):
        files[f"demonstrations/{split}.jsonl"] = [demonstration(world, p) for p in prompts if p["split"] == split]
    for name, records in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / name, records)
    return {name: len(records) for name, records in files.items()}
