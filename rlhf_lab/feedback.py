"""The rankings log: every labeler action as one appended JSONL event, and the pairs it implies.

The log is append-only, so nothing a labeler did is ever lost or silently changed: a
mistake is undone by appending a `retract`, not by editing a line. Each append is fsynced
before the caller moves on, and a reader forgives only what a crash can leave behind (a
torn last line), so a broken file is reported with its line number rather than guessed at.

Event schema (one JSON object per line; every kind has `event`, `event_id`, `prompt_id`,
`labeler_id`, `timestamp`):
- submit: `ranking` (tiers best-first of output indices, ties share a tier),
  `display_order` (output indices in the order they were shown), `likert` (1-7 per output,
  by output index), `flags` (a {name: bool} dict per output, by output index),
  `annotation_id`;
- skip: `reason`;
- retract: `retracts` (the event_id of a live submit or skip by the same labeler and prompt).
A labeler has at most one live (not retracted) submit or skip per prompt.
"""
from __future__ import annotations

import json
import os
import string
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .jsonl import JSONLError

# The paper's metadata questions asked of every output (by the widget and the simulated panel alike),
# keyed by the flag names `world.checkers.score` uses, so a student's flags can be compared with gold.
FLAGS = {
    "fails_to_follow_instruction": "fails to follow instruction",
    "hallucination": "hallucination",
    "inappropriate_for_customer_assistant": "inappropriate for customer assistant",
    "toxic": "contains toxic content",
    "harmful_advice": "gives harmful advice",
}
LETTERS = string.ascii_uppercase  # outputs are shown as A, B, C, ...

_COMMON = ("event", "event_id", "prompt_id", "labeler_id", "timestamp")
FIELDS = {
    "submit": _COMMON + ("ranking", "display_order", "likert", "flags", "annotation_id"),
    "skip": _COMMON + ("reason",),
    "retract": _COMMON + ("retracts",),
}


# --- making events ----------------------------------------------------------------------

def _event(kind: str, prompt_id: str, labeler_id: str, **fields) -> dict:
    # uuid4, not a counter: several widgets or processes may append to one file and logs of
    # different labelers get concatenated; a counter read from the file would collide.
    # Nothing derived from the log contains event_id, so the datasets stay deterministic.
    return {"event": kind, "event_id": uuid.uuid4().hex, "prompt_id": prompt_id,
            "labeler_id": labeler_id,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), **fields}


def submit_event(prompt_id: str, labeler_id: str, ranking: list[list[int]], display_order: list[int],
                 likert: list[int], flags: list[dict]) -> dict:
    """A submit event; simulated labelers, who see no screen, pass `list(range(K))` as display_order.

    The annotation_id is `labeler_id/prompt_id`: unique among live submits (one per labeler
    and prompt) and reproducible, so the same rankings give byte-identical comparisons.
    """
    return _event("submit", prompt_id, labeler_id, ranking=ranking, display_order=display_order,
                  likert=likert, flags=flags, annotation_id=f"{labeler_id}/{prompt_id}")


def skip_event(prompt_id: str, labeler_id: str, reason: str) -> dict:
    return _event("skip", prompt_id, labeler_id, reason=reason)


def retract_event(target: dict) -> dict:
    """Undo `target` (a submit or skip): same labeler and prompt, so the log reads per prompt."""
    return _event("retract", target["prompt_id"], target["labeler_id"], retracts=target["event_id"])


# --- validating events ------------------------------------------------------------------

def _coverage(name: str, indices: list, k: int) -> None:
    """Raise unless `indices` are the ints 0..k-1, each once; the message lists what is off."""
    bad = [i for i in indices if type(i) is not int]  # bool is an int subclass: refuse it too
    if bad:
        raise ValueError(f"{name} must hold output indices (ints); got {bad}")
    problems = []
    for label, found in (("missing", sorted(set(range(k)) - set(indices))),
                         ("repeated", sorted({i for i in indices if indices.count(i) > 1})),
                         ("out of range", sorted({i for i in indices if not 0 <= i < k}))):
        if found:
            problems.append(f"{label} {found}")
    if problems:
        raise ValueError(f"{name} must cover outputs 0..{k - 1} exactly once; {', '.join(problems)}")


def validate_ranking(tiers: list[list[int]], k: int) -> None:
    """Raise ValueError unless `tiers` ranks outputs 0..k-1: non-empty tiers, each output once."""
    if k < 2:
        raise ValueError(f"a ranking needs at least 2 outputs, got k={k}")
    if not isinstance(tiers, list) or not all(isinstance(t, list) for t in tiers):
        raise ValueError(f"ranking must be a list of tiers (lists of output indices), got {tiers!r}")
    empty = [n for n, tier in enumerate(tiers, start=1) if not tier]
    if empty:
        raise ValueError(f"ranking has empty tier(s) {empty} (tiers count from 1, best first)")
    _coverage("ranking", [i for tier in tiers for i in tier], k)


def _text(event: dict, key: str) -> None:
    if not isinstance(event[key], str) or not event[key].strip():
        raise ValueError(f"{key} must be a non-empty string, got {event[key]!r}")


def validate_event(event: dict) -> None:
    """Raise ValueError naming the first thing wrong with one event on its own."""
    if not isinstance(event, dict):
        raise ValueError(f"an event must be a JSON object, got {type(event).__name__}")
    kind = event.get("event")
    if kind not in FIELDS:
        raise ValueError(f"event must be one of {', '.join(FIELDS)}; got {kind!r}")
    missing = [f for f in FIELDS[kind] if f not in event]
    unknown = [f for f in event if f not in FIELDS[kind]]
    problems = [f"{label} field(s) {names}"
                for label, names in (("missing", missing), ("unknown", unknown)) if names]
    if problems:
        raise ValueError(f"{kind} event: {'; '.join(problems)}")
    for key in ("event_id", "prompt_id", "labeler_id"):
        _text(event, key)
    try:
        utc = datetime.fromisoformat(event["timestamp"]).utcoffset() == timedelta(0)
    except (TypeError, ValueError):
        utc = False
    if not utc:
        raise ValueError(f"timestamp must be ISO 8601 in UTC (+00:00), got {event['timestamp']!r}")
    if kind == "skip":
        _text(event, "reason")
    elif kind == "retract":
        _text(event, "retracts")
    else:
        _validate_submit(event)


def _validate_submit(event: dict) -> None:
    _text(event, "annotation_id")
    order = event["display_order"]
    if not isinstance(order, list):
        raise ValueError(f"display_order must be a list of output indices, got {order!r}")
    k = len(order)
    _coverage("display_order", order, k)
    validate_ranking(event["ranking"], k)
    likert, flags = event["likert"], event["flags"]
    if not isinstance(likert, list) or len(likert) != k:
        raise ValueError(f"likert must be a list of {k} ratings (one per output), got {likert!r}")
    for i, rating in enumerate(likert):
        if type(rating) is not int or not 1 <= rating <= 7:
            raise ValueError(f"likert[{i}] must be an int in 1..7, got {rating!r}")
    if not isinstance(flags, list) or len(flags) != k:
        raise ValueError(f"flags must be a list of {k} dicts (one per output), got {flags!r}")
    for i, f in enumerate(flags):
        if not isinstance(f, dict) or not all(isinstance(n, str) and type(v) is bool for n, v in f.items()):
            raise ValueError(f"flags[{i}] must map flag names to true/false, got {f!r}")


def _live(events: list[dict]) -> dict[str, dict]:
    """The submits and skips not retracted, by event_id in log order.

    Raises ValueError for a history that cannot happen: a reused event_id, a retract of
    something missing, already retracted or someone else's, or a second live answer by one
    labeler to one prompt (it would count that labeler's pairs twice).
    """
    live: dict[str, dict] = {}
    kinds: dict[str, str] = {}  # every event_id seen -> its kind
    holder: dict[tuple[str, str], str] = {}  # (labeler_id, prompt_id) -> its live event_id
    for e in events:
        eid, key = e["event_id"], (e["labeler_id"], e["prompt_id"])
        if eid in kinds:
            raise ValueError(f"event_id {eid} is used twice")
        kinds[eid] = e["event"]
        if e["event"] == "retract":
            target = e["retracts"]
            if target not in live:
                why = ("no earlier event has that id" if target not in kinds
                       else "a retract cannot be retracted" if kinds[target] == "retract"
                       else "it was already retracted")
                raise ValueError(f"retract {eid}: cannot retract {target}: {why}")
            if holder.get(key) != target:
                t = live[target]
                raise ValueError(f"retract {eid} (labeler {key[0]}, prompt {key[1]}) targets {target}, "
                                 f"which is labeler {t['labeler_id']}'s answer to prompt {t['prompt_id']}")
            del live[target], holder[key]
        elif key in holder:
            raise ValueError(f"{e['event']} {eid}: labeler {key[0]} already answered prompt {key[1]} "
                             f"({live[holder[key]]['event']} {holder[key]}); retract that first")
        else:
            live[eid], holder[key] = e, eid
    return live


# --- the file ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EventLog:
    events: list[dict]
    torn_line: int | None = None  # 1-based line of a partial last write that was ignored


def _parse(path: Path, data: bytes) -> EventLog:
    lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
    events = []
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError as e:  # bad JSON or bad UTF-8
            if lineno == len(lines):  # unterminated last line: a write cut short by a crash
                return EventLog(events, torn_line=lineno)
            raise JSONLError(f"{path}:{lineno}: not a complete JSON line ({e})") from None
        try:
            validate_event(event)
        except ValueError as e:
            raise JSONLError(f"{path}:{lineno}: {e}") from None
        events.append(event)
    return EventLog(events)


def read_events(path: str | os.PathLike) -> EventLog:
    """Read the log (a missing file is an empty log).

    A torn last line is skipped and reported in `torn_line`; any other bad line raises
    JSONLError naming `path:line`.
    """
    path = Path(path)
    return _parse(path, path.read_bytes() if path.exists() else b"")


def append_events(path: str | os.PathLike, events: list[dict]) -> None:
    """Validate `events` against themselves and the log, then append them in one fsynced write.

    On any error nothing is written. A torn last line (never acknowledged: its fsync did not
    return) is cut off first, so it cannot become a malformed line in the middle.
    """
    path = Path(path)
    data = path.read_bytes() if path.exists() else b""
    log = _parse(path, data)  # a log broken in the middle raises here: never append to it
    refused = f"not appended to {path}: "
    for i, event in enumerate(events):
        try:
            validate_event(event)
        except ValueError as e:
            raise ValueError(refused + (f"event {i}: " if len(events) > 1 else "") + str(e)) from None
    try:
        _live(log.events + list(events))
    except ValueError as e:
        raise ValueError(refused + str(e)) from None
    keep = len(data) if log.torn_line is None else data.rfind(b"\n") + 1
    newline = b"\n" if keep and data[keep - 1:keep] != b"\n" else b""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        if keep < len(data):
            f.truncate(keep)
        lines = (json.dumps(e, ensure_ascii=False).encode("utf-8") + b"\n" for e in events)
        f.write(newline + b"".join(lines))
        f.flush()
        os.fsync(f.fileno())


def append_event(path: str | os.PathLike, event: dict) -> None:
    """Append one event; when this returns, it is on disk."""
    append_events(path, [event])


# --- what the log means -----------------------------------------------------------------

def active_annotations(events: list[dict]) -> list[dict]:
    """The submits that are not retracted, in log order."""
    return [e for e in _live(events).values() if e["event"] == "submit"]


@dataclass(frozen=True)
class LabelerProgress:
    """What one labeler has answered, so any widget on the same log resumes where they stopped."""
    labeler_id: str
    done: dict[str, dict]  # prompt_id -> its live submit or skip, in log order

    @classmethod
    def from_events(cls, events: list[dict], labeler_id: str) -> LabelerProgress:
        return cls(labeler_id, {e["prompt_id"]: e for e in _live(events).values()
                                if e["labeler_id"] == labeler_id})

    def todo(self, prompt_ids: list[str]) -> list[str]:
        """The prompts not yet submitted or skipped, in the order given."""
        return [p for p in prompt_ids if p not in self.done]

    def last(self, prompt_ids: list[str]) -> dict | None:
        """The latest live answer to one of `prompt_ids`: what "undo" retracts."""
        return next((e for e in reversed(self.done.values()) if e["prompt_id"] in prompt_ids), None)


def tiers_from_ranks(ranks: list[int]) -> list[list[int]]:
    """Rank numbers per output (1 = best; equal numbers tie; gaps are fine) -> tiers best-first."""
    return [[i for i, r in enumerate(ranks) if r == value] for value in sorted(set(ranks))]


def ranking_to_pairs(tiers: list[list[int]]) -> list[tuple[int, int]]:
    """(winner, loser) for every pair in different tiers: C(K,2) minus tied pairs.

    Ordered by the winner's tier, then the loser's tier, then index, whatever the order inside
    a tier, so one ranking always gives the same list.
    """
    tiers = [sorted(t) for t in tiers]
    return [(w, l) for a, tier in enumerate(tiers) for w in tier
            for lower in tiers[a + 1:] for l in lower]


def comparisons(events: list[dict], outputs_by_prompt: dict[str, dict]) -> list[dict]:
    """Pairwise comparisons in TRL's conversational form, from the live submits.

    `outputs_by_prompt[prompt_id]` = {"prompt": messages, "outputs": [str, ...]}. Records come
    in log order, then pair order; ranks are tier numbers (1 = best). The annotation_id lets
    the reward model keep all pairs of one ranking in one batch element, as the paper did.
    """
    records = []
    for e in active_annotations(events):
        item = outputs_by_prompt.get(e["prompt_id"])
        if item is None:
            raise ValueError(f"annotation {e['annotation_id']}: no outputs for prompt {e['prompt_id']!r}")
        outputs, k = item["outputs"], len(e["display_order"])
        if len(outputs) != k:
            raise ValueError(f"annotation {e['annotation_id']} ranks {k} outputs, "
                             f"but prompt {e['prompt_id']!r} has {len(outputs)}")
        rank = {i: n for n, tier in enumerate(e["ranking"], start=1) for i in tier}
        for w, l in ranking_to_pairs(e["ranking"]):
            records.append({
                "prompt": item["prompt"],
                "chosen": [{"role": "assistant", "content": outputs[w]}],
                "rejected": [{"role": "assistant", "content": outputs[l]}],
                "prompt_id": e["prompt_id"], "annotation_id": e["annotation_id"],
                "labeler_id": e["labeler_id"], "chosen_rank": rank[w], "rejected_rank": rank[l],
            })
    return records
