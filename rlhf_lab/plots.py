"""Matplotlib figures for the notebooks and the training stages. Every function returns its Figure."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from .utils import atomic_save_file


def _plot_keys(ax, history: Sequence[dict], keys: Sequence[str], x: str) -> None:
    """One line per key of a training history (a list of dicts) against `x`, skipping missing points."""
    for key in keys:
        points = [(h[x], h[key]) for h in history if h.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker=".", label=key.replace("_", " "))
    ax.grid(alpha=0.3)


def _finish(fig, path):
    """Save `fig` as a PNG when `path` is given, close it (notebooks would draw it twice) and return it."""
    fig.tight_layout()
    if path is not None:
        with atomic_save_file(path) as tmp:
            fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return fig


def plot_history(history: Sequence[dict], keys: Sequence[str], x: str = "step", title: str = "", path: str | os.PathLike | None = None):
    """Line plot of `keys` from a training history against `x`; display the result with `display(fig)`."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    _plot_keys(ax, history, keys, x)
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.legend()
    return _finish(fig, path)


COLOURS = {"base": "#9e9e9e", "sft": "#4c78a8", "rm": "#f58518", "ppo": "#54a24b", "ptx": "#b279a2"}


def _box(ax, xy, text, colour, width=2.2, height=1.0):
    x, y = xy
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.08", fc=colour, ec="none", alpha=0.9))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=9, color="white")


def _arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#444444", lw=1.2))


def pipeline_diagram():
    """The paper's Figure 2 in three columns: SFT -> reward model -> PPO, with the course's notebooks."""
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.set_xlim(0, 11.5)
    ax.set_ylim(0, 4.2)
    ax.axis("off")
    steps = [
        ("Step 1: SFT  (notebook 02)", COLOURS["sft"],
         ["a prompt is sampled", "a labeler writes\nthe answer", "fine-tune the\nbase model on it"]),
        ("Step 2: reward model  (03, 04)", COLOURS["rm"],
         ["the SFT model writes\nK answers", "a labeler ranks them", "train r(x, y) on\nthe C(K,2) pairs"]),
        ("Step 3: PPO  (05, 06)", COLOURS["ppo"],
         ["a new prompt", "the policy answers;\nr(x, y) scores it", "PPO update with a\nKL penalty to SFT"]),
    ]
    for col, (title, colour, boxes) in enumerate(steps):
        x = 0.3 + col * 3.8
        ax.text(x + 1.1, 4.0, title, ha="center", va="center", fontsize=10, fontweight="bold")
        for row, text in enumerate(boxes):
            y = 2.8 - row * 1.3
            _box(ax, (x, y), text, colour)
            if row:
                _arrow(ax, (x + 1.1, y + 1.25), (x + 1.1, y + 1.1))
        if col < 2:
            _arrow(ax, (x + 2.35, 0.7), (x + 3.7, 0.7))
    ax.text(5.75, -0.15, "base model (notebook 01)  →  SFT  →  reward model  →  PPO / PPO-ptx  →  evaluation (07)",
            ha="center", fontsize=9, color="#444444")
    fig.tight_layout()
    return fig


def grouped_bars(groups: dict[str, dict[str, float]], title: str = "", ylabel: str = "", colours: dict | None = None):
    """Bars of {series: {category: value}} side by side per category (e.g. per task family)."""
    categories = list(next(iter(groups.values())))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(categories) * len(groups)), 3.5))
    width = 0.8 / len(groups)
    for k, (series, values) in enumerate(groups.items()):
        xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, [values.get(c, 0.0) for c in categories], width, label=series,
               color=(colours or {}).get(series))
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


PPO_PANELS = (
    ("reward", ("reward", "gold"), "RM reward (proxy) and gold 3H"),
    ("KL to SFT (nats per answer)", ("kl_k1", "kl_k3", "kl_exact"), "KL: k1 (in the reward), k3, exact"),
    ("tokens", ("length",), "answer length"),
    ("nats per token", ("entropy",), "policy entropy"),
    ("share of tokens", ("clip_fraction",), "clip fraction"),
    ("β", ("beta",), "KL coefficient β"),
)


def ppo_dashboard(history: Sequence[dict], title: str = "PPO", path: str | os.PathLike | None = None):
    """The six curves to watch during PPO, one panel each, against the step. Saves a PNG when `path` is given."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 5.5))
    for ax, (ylabel, keys, name) in zip(axes.flat, PPO_PANELS):
        _plot_keys(ax, history, keys, "step")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("PPO step")
    fig.suptitle(title)
    return _finish(fig, path)
