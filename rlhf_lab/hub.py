"""Loading `from_pretrained` objects offline-first, with errors a student can act on.

A value such as `base_model` is either a local folder (relative paths are tried from
the current folder, then from the repo root, so notebooks in notebooks/ find data/) or a
Hugging Face name. Names are looked up in the local cache first; the network is only
tried when the cache misses and HF_HUB_OFFLINE is not set. Remote code never runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from .utils import REPO_ROOT


def resolve_local(name_or_path: str | os.PathLike) -> Path | None:
    """The local folder `name_or_path` names, or None if there is none."""
    path = Path(name_or_path).expanduser()
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _looks_like_path(name: str) -> bool:
    """True if `name` cannot be a Hugging Face id ("org/model"), so only a folder fits."""
    path = Path(name).expanduser()
    if path.is_absolute() or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1:
        return True
    first = path.parts[0] if path.parts else ""
    return "/" in name and any((base / first).is_dir() for base in (Path.cwd(), REPO_ROOT))


def from_pretrained(auto_cls, name_or_path: str | os.PathLike, what: str = "model", **kwargs):
    """`auto_cls.from_pretrained` for a local folder or a Hugging Face name, offline-first.

    Raises FileNotFoundError saying what to set when nothing usable is found.
    """
    kwargs["trust_remote_code"] = False
    name = str(name_or_path)
    local = resolve_local(name)
    if local is not None:
        return auto_cls.from_pretrained(str(local), **kwargs)
    is_path = _looks_like_path(name)
    looked_in = " and ".join(dict.fromkeys(str(p) for p in (Path.cwd(), REPO_ROOT)))
    advice = (
        f"no {what} at {name!r}: it is not a local folder (looked in {looked_in})"
        + ("" if is_path else " and not a Hugging Face model in the local cache")
        + ". Set base_model to a local folder, or to a Hugging Face name you have downloaded"
        " before (this course runs offline); rebuild the shipped model with"
        " `python -m rlhf_lab pretrain`."
    )
    if is_path:
        raise FileNotFoundError(advice)
    try:
        return auto_cls.from_pretrained(name, local_files_only=True, **kwargs)
    except OSError as cache_miss:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "false", ""):
            raise FileNotFoundError(advice) from cache_miss
    print(f"rlhf_lab: {name!r} is not in the local cache; trying the Hugging Face hub (set HF_HUB_OFFLINE=1 to fail fast)")
    try:
        return auto_cls.from_pretrained(name, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"{advice} (download failed: {e})") from e
