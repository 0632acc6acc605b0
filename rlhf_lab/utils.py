"""Small helpers every stage needs: seeding, device choice, paths, safe writes.

Kept free of heavy imports beyond torch so that `import rlhf_lab` stays quick.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
# Generated artifacts (checkpoints, logs, caches) live here; an instructor can point
# it elsewhere (e.g. a shared disk) without editing code.
RUNS_DIR = Path(os.environ.get("RLHF_LAB_RUNS", REPO_ROOT / "runs")).resolve()


class _FinalFrames:
    """A stream for text progress bars that passes on only each bar's final frame. tqdm redraws a bar with
    carriage returns; saved in a notebook, those frames read as a bar stuck at 0% wherever '\r' is not
    interpreted (GitHub's viewer, nbviewer). A bar that clears itself (leave=False) leaves nothing. It carries
    the stream's encoding, which tqdm reads to choose block characters or ASCII '#'s for the bar."""

    def __init__(self, stream):
        self.stream, self.frame = stream, ""
        self.encoding = getattr(stream, "encoding", None)

    def write(self, text: str) -> None:
        *lines, tail = (self.frame + text).split("\n")
        for line in lines:
            self.stream.write(line.rsplit("\r", 1)[-1] + "\n")
        self.frame = tail.rsplit("\r", 1)[-1]  # the bar's latest frame, held until its line ends

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*args, **kwargs):
    """tqdm: a live widget in Jupyter, or, when RLHF_LAB_TEXT_PROGRESS=1, one text line per bar, written when
    it ends. The notebooks are executed with that set before their outputs are committed: a saved widget
    shows only its first frame ("0%") to a reader without a kernel, a bar's last line shows where it ended."""
    if os.environ.get("RLHF_LAB_TEXT_PROGRESS") == "1":
        import sys

        from tqdm.std import tqdm

        kwargs.setdefault("file", _FinalFrames(sys.stdout))
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch so a notebook run twice gives the same numbers."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


_device_announced = False


def get_device() -> torch.device:
    """cuda, then mps, then cpu; prints the choice once per process."""
    global _device_announced
    if torch.cuda.is_available():
        device = torch.device("cuda")
    elif torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if not _device_announced:
        print(f"rlhf_lab: using device {device}")
        _device_announced = True
    return device


def set_num_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads and return the number used.

    Tiny models gain nothing from many threads and oversubscribing a laptop makes
    everything slower, so the default is the CPUs this process may use, capped at 4
    (override with env `RLHF_LAB_THREADS`).
    """
    if n is None:
        env = os.environ.get("RLHF_LAB_THREADS")
        if env:
            n = int(env)
        elif hasattr(os, "sched_getaffinity"):  # Linux: respects container CPU limits
            n = min(4, len(os.sched_getaffinity(0)))
        else:  # macOS, Windows
            n = min(4, os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"set_num_threads: need at least 1 thread, got {n}")
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (no dropout) inside the block; its previous mode afterwards, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def shown_path(path: Path) -> Path:
    """`path` relative to the repository when it is inside it (what a student types), else as it is."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def release_memory() -> None:
    """Collect garbage and hand freed memory back to the operating system.

    glibc keeps freed blocks below its mmap threshold (up to 32 MB) in the process heap, and a model's
    tensors are that size: after deleting a 135M-parameter model and its gradients the process still
    held 1.1 GB here, and the next model stacked on top. `malloc_trim` releases it; elsewhere than glibc
    (macOS, Windows) only the garbage collection runs."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _temporary_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden, unique sibling of `path` that keeps its suffix (savefig reads it)."""
    return path.parent / f".{path.stem}.{kind}-{secrets.token_hex(6)}{path.suffix}"


@contextlib.contextmanager
def atomic_save_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; on success it replaces `path`.

    A crash or exception mid-save leaves the previous `path` untouched (the temporary
    folder is removed), so a checkpoint folder is never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    tmp.mkdir()  # unlike tempfile.mkdtemp (0700), honours the umask like any folder
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = _temporary_name(path, "old")
        path.rename(old)
    tmp.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_save_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path beside `path` (same suffix); on success it is
    fsynced and atomically renamed over `path`, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)  # created by the caller, so with the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
