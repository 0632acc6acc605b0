"""rlhf_lab: the InstructGPT pipeline (pretrain -> SFT -> reward model -> PPO) in
miniature, small enough to run on a laptop CPU inside a Jupyter course.

Notebooks write each idea out first; this package holds the same code, tested, so later
notebooks can build on it.
"""

from .utils import DATA_DIR, REPO_ROOT, RUNS_DIR, get_device, set_seed

__all__ = ["set_seed", "get_device", "REPO_ROOT", "DATA_DIR", "RUNS_DIR"]
