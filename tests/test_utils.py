import io
import os
import re
import stat
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch

from rlhf_lab import REPO_ROOT, get_device, set_seed
from rlhf_lab.utils import atomic_save_dir, atomic_save_file, progress_bar, release_memory, set_num_threads


def test_set_seed_seeds_python_numpy_and_torch():
    import random

    set_seed(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    set_seed(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_get_device_prints_once(capsys):
    import rlhf_lab.utils as utils

    utils._device_announced = False
    device = get_device()
    get_device()
    assert capsys.readouterr().out == f"rlhf_lab: using device {device}\n"


def test_atomic_save_dir_replaces_or_keeps(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_save_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
        assert not target.exists()  # nothing visible until the block succeeds
    with pytest.raises(KeyboardInterrupt):
        with atomic_save_dir(target) as tmp:
            (tmp / "weights").write_text("half-writ")
            raise KeyboardInterrupt
    assert (target / "weights").read_text() == "v1"
    with atomic_save_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_atomic_save_file(tmp_path):
    target = tmp_path / "history.json"
    with atomic_save_file(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == tmp_path
        tmp.write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_save_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert target.read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_atomic_saves_get_the_usual_permissions(tmp_path):
    """Not tempfile's private 0600/0700: a shared data/ folder must stay readable."""
    umask = os.umask(0)
    os.umask(umask)
    with atomic_save_file(tmp_path / "f.jsonl") as tmp:
        tmp.write_text("{}\n")
    with atomic_save_dir(tmp_path / "model"):
        pass
    assert stat.S_IMODE((tmp_path / "f.jsonl").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask


def test_set_num_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("RLHF_LAB_THREADS", "1")
        assert set_num_threads() == 1 == torch.get_num_threads()
        monkeypatch.delenv("RLHF_LAB_THREADS")
        assert 1 <= set_num_threads() <= 4
        with pytest.raises(ValueError, match="at least 1"):
            set_num_threads(0)
    finally:
        torch.set_num_threads(before)


def test_runs_dir_env_override(tmp_path):
    env = dict(os.environ, RLHF_LAB_RUNS=str(tmp_path))
    code = "from rlhf_lab.utils import RUNS_DIR; print(RUNS_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path.resolve())


def test_progress_bar_is_text_on_stdout_when_asked(monkeypatch, capsys):
    """Executed for committing, a bar must leave its last state as text, not a widget's first frame."""
    monkeypatch.setenv("RLHF_LAB_TEXT_PROGRESS", "1")
    for _ in progress_bar(range(3), desc="demo", mininterval=0):
        pass
    out = capsys.readouterr().out
    assert "demo: 100%" in out and "3/3" in out.rsplit("\r", 1)[-1]
    assert out.startswith("demo: 100%") and out.count("\n") == 1 and "\r" not in out  # the final frame alone
    for _ in progress_bar(range(3), desc="gone", leave=False, mininterval=0):
        pass
    assert capsys.readouterr().out == ""  # a bar that clears itself leaves nothing behind
    for encoding, full in (("utf-8", "\u2588" * 10), ("ascii", "#" * 10)):  # the bar the stream itself would get
        stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
        monkeypatch.setattr(sys, "stdout", stream)
        for _ in progress_bar(range(3), desc="drawn", mininterval=0):
            pass
        stream.seek(0)
        assert f"|{full}|" in stream.read()
    monkeypatch.delenv("RLHF_LAB_TEXT_PROGRESS")
    from tqdm.auto import tqdm
    bar = progress_bar(range(3), disable=True)
    assert isinstance(bar, tqdm)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc (Linux)")
def test_release_memory_hands_freed_tensors_back():
    def resident_mb():
        return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

    # 600 MB in 60 kB tensors, each followed in the heap by a small one that stays: freeing the big ones leaves
    # holes that glibc keeps (no free space at the top of the heap to trim), as a deleted model's tensors do.
    pairs = [(torch.ones(15_000), torch.ones(4)) for _ in range(10_000)]
    kept = [small for _, small in pairs]
    del pairs
    held = resident_mb()
    release_memory()
    assert resident_mb() < held - 300 and len(kept) == 10_000



def test_shown_path_is_what_a_student_types(tmp_path):
    from rlhf_lab.utils import shown_path

    assert shown_path(REPO_ROOT / "runs" / "cache") == Path("runs/cache")
    assert shown_path(tmp_path / "x") == (tmp_path / "x").resolve()  # outside the repository: left whole


def test_eval_mode_restores_the_previous_mode_even_on_an_error(tiny_model):
    from rlhf_lab.utils import eval_mode

    tiny_model.train()
    try:
        with pytest.raises(RuntimeError), eval_mode(tiny_model):
            assert not tiny_model.training
            raise RuntimeError("boom")
        assert tiny_model.training
        tiny_model.eval()
        with eval_mode(tiny_model):
            pass
        assert not tiny_model.training
    finally:
        tiny_model.eval()
