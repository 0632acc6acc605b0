"""Repo-wide pytest set-up, shared by the package tests and the nbval notebook runs.

Imported before any test module, so the environment is set before matplotlib or
huggingface_hub read it; notebook kernels started by nbval inherit it too.
"""

import os
from pathlib import Path

# Plotting needs no setting: notebook kernels use the inline backend, which draws into the
# cell output without a display, and tests on a headless machine get Agg by default.
# Tests and CI never touch the network: an uncached model name fails at once instead of
# retrying for a minute. (Set these to 0 to let a notebook download a named model.)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Notebook kernels import this checkout's rlhf_lab even where it is not pip-installed.
_root = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH")) if p)


def pytest_configure(config):
    # nbval opens the sanitizer file relative to the current folder; resolve it against
    # the repo root so `pytest` works from any sub-folder.
    sanitize = getattr(config.option, "nbval_sanitize_with", None)
    if sanitize and not Path(sanitize).is_absolute():
        config.option.nbval_sanitize_with = str(config.rootpath / sanitize)
