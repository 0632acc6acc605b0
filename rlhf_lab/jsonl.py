"""JSONL on disk: deterministic writing, and reading that says *where* a file is bad.

`datasets` reports a malformed line with a pyarrow traceback that names neither the
file nor the line; students editing data by hand deserve better, so every file is
validated here first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .utils import RUNS_DIR, atomic_save_file


class JSONLError(ValueError):
    """A JSONL file is malformed; the message names the file and the 1-based line."""


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    """Write one JSON object per line, keys in the order given, UTF-8, atomically.

    Same records -> byte-identical file, so generated data can be committed and diffed.
    """
    path = Path(path)
    with atomic_save_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise TypeError(f"write_jsonl({path}): record {i} is a {type(record).__name__}, not a dict")
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[dict]:
    """Read a JSONL file into a list of dicts; blank lines are skipped.

    Raises JSONLError naming `path:line` for undecodable bytes, bad JSON, a value that
    is not an object, or a record missing any key in `required`.
    """
    path = Path(path)
    records = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise JSONLError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise JSONLError(f"{where}: invalid JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(record, dict):
                raise JSONLError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [k for k in required if k not in record]
            if missing:
                raise JSONLError(
                    f"{where}: missing required key(s) {', '.join(map(repr, missing))}; "
                    f"record has {', '.join(map(repr, record)) or 'no keys'}"
                )
            records.append(record)
    return records


def load_json_dataset(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike], required: Sequence[str] = ()):
    """Validate JSONL file(s) with `read_jsonl`, then load them as one `datasets.Dataset`.

    The Arrow cache goes to RUNS_DIR/hf_cache (not the home folder) and progress bars
    are off, so notebook outputs stay clean.
    """
    import datasets

    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    if not paths:
        raise ValueError("load_json_dataset: no files given")
    for p in paths:
        if not read_jsonl(p, required=required):
            raise JSONLError(f"{p}: no records (the file is empty)")
    datasets.disable_progress_bars()
    return datasets.load_dataset(
        "json",
        data_files=[str(Path(p).resolve()) for p in paths],
        split="train",
        cache_dir=str(RUNS_DIR / "hf_cache"),
    )
