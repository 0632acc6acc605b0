import json
import math
import os
import random

import pytest

from rlhf_lab import feedback
from rlhf_lab.feedback import (LabelerProgress, active_annotations, append_event, append_events, comparisons,
                               ranking_to_pairs, read_events, retract_event, skip_event, submit_event,
                               tiers_from_ranks, validate_event, validate_ranking)
from rlhf_lab.jsonl import JSONLError
from rlhf_lab.labelers import preferences


def _submit(prompt_id="p0", labeler_id="s01", ranking=((1,), (0, 3), (2,))):
    ranking = [list(t) for t in ranking]
    k = sum(map(len, ranking))
    return submit_event(prompt_id, labeler_id, ranking, list(range(k)), [4] * k, [{"toxic": False}] * k)


@pytest.mark.parametrize("tiers,k,problem", [
    ([[0, 1], [], [2]], 3, r"empty tier\(s\) \[2\]"),
    ([[0], [1, 5], [2]], 3, r"out of range \[5\]"),
    ([[1], [0, 1], [2], [4]], 5, r"ranking must cover outputs 0\.\.4 exactly once; missing \[3\], repeated \[1\]"),
    ([[0], [2]], 3, r"missing \[1\]"),
    ([[0], ["1"]], 2, r"must hold output indices \(ints\); got \['1'\]"),
    ([[0], [True]], 2, r"must hold output indices"),
    ([0, 1], 2, r"must be a list of tiers"),
    ([[0]], 1, r"at least 2 outputs"),
])
def test_validate_ranking_names_the_problem(tiers, k, problem):
    with pytest.raises(ValueError, match=problem):
        validate_ranking(tiers, k)


def test_validate_ranking_accepts_ties_in_any_order():
    validate_ranking([[2], [3, 0], [1]], 4)
    validate_ranking([[0, 1, 2]], 3)


def test_tiers_from_ranks_groups_equal_ranks_and_ignores_gaps():
    assert tiers_from_ranks([2, 1, 2, 4]) == [[1], [0, 2], [3]]
    assert tiers_from_ranks([1, 1, 1]) == [[0, 1, 2]]


def test_ranking_to_pairs_order_and_ties():
    assert ranking_to_pairs([[1], [3, 0], [2]]) == [(1, 0), (1, 3), (1, 2), (0, 2), (3, 2)]
    assert ranking_to_pairs([[0, 1, 2]]) == []


def test_pair_count_is_k_choose_2_minus_tied_pairs_and_matches_labelers_preferences():
    rng = random.Random(0)
    for _ in range(200):
        k = rng.randint(2, 9)
        order = rng.sample(range(k), k)
        cuts = sorted(rng.sample(range(1, k), rng.randint(0, k - 1)))
        tiers = [order[a:b] for a, b in zip([0] + cuts, cuts + [k])]
        pairs = ranking_to_pairs(tiers)
        assert len(pairs) == math.comb(k, 2) - sum(math.comb(len(t), 2) for t in tiers)
        # the same preferences as labelers.preferences, an independent implementation
        assert {(min(a, b), max(a, b)): 1 if a < b else -1 for a, b in pairs} == preferences(tiers)
        assert ranking_to_pairs([t[::-1] for t in tiers]) == pairs  # order inside a tier is irrelevant


@pytest.mark.parametrize("change,problem", [
    ({"event": "rank"}, r"event must be one of submit, skip, retract; got 'rank'"),
    ({"rankng": [[0]]}, r"submit event: unknown field\(s\) \['rankng'\]$"),
    ({"labeler_id": ""}, r"labeler_id must be a non-empty string"),
    ({"timestamp": "2024-05-01T12:00:00"}, r"timestamp must be ISO 8601 in UTC"),
    ({"timestamp": "yesterday"}, r"timestamp must be ISO 8601 in UTC"),
    ({"display_order": [0, 1, 1, 3]},
     r"display_order must cover outputs 0\.\.3 exactly once; missing \[2\], repeated \[1\]"),
    ({"ranking": [[0, 1], [2]]}, r"ranking must cover outputs 0\.\.3 exactly once; missing \[3\]"),
    ({"likert": [4, 4, 9, 4]}, r"likert\[2\] must be an int in 1\.\.7, got 9"),
    ({"likert": [4, 4, 4]}, r"likert must be a list of 4 ratings"),
    ({"flags": [{}, {}, {"toxic": "yes"}, {}]}, r"flags\[2\] must map flag names to true/false"),
])
def test_validate_event_names_the_problem(change, problem):
    event = {**_submit(), **change}
    with pytest.raises(ValueError, match=problem):
        validate_event(event)


def test_validate_event_missing_fields_and_empty_skip_reason():
    event = _submit()
    del event["likert"]
    with pytest.raises(ValueError, match=r"missing field\(s\) \['likert'\]"):
        validate_event(event)
    with pytest.raises(ValueError, match="reason must be a non-empty string"):
        validate_event(skip_event("p0", "s01", "  "))


def test_append_writes_one_line_and_fsyncs_after_writing(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "log.jsonl"
    synced = []  # what the file held when fsync was called
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(path.read_bytes()), real_fsync(fd)))
    first, second = _submit("p0"), skip_event("p1", "s01", "cannot judge")
    append_event(path, first)
    append_event(path, second)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 2
    assert [json.loads(line) for line in text.splitlines()] == [first, second]
    assert len(synced) == 2 and synced[1] == text.encode("utf-8")  # each append hit the disk
    log = read_events(path)
    assert log.events == [first, second] and log.torn_line is None


def test_invalid_event_is_refused_and_nothing_written(tmp_path):
    path = tmp_path / "log.jsonl"
    bad = submit_event("p0", "s01", [[1], [1, 2]], [0, 1, 2], [4, 4, 4], [{}, {}, {}])
    with pytest.raises(ValueError, match=r"not appended to .*log\.jsonl: ranking must cover outputs 0\.\.2 "
                                         r"exactly once; missing \[0\], repeated \[1\]"):
        append_event(path, bad)
    assert not path.exists()
    append_event(path, _submit())
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"event 1: likert\[0\]"):
        append_events(path, [_submit("p1"), {**_submit("p2"), "likert": [0, 4, 4, 4]}])
    assert path.read_bytes() == before  # a batch is all or nothing


def test_retract_rules(tmp_path):
    path = tmp_path / "log.jsonl"
    mine, theirs = _submit("p0", "s01"), _submit("p0", "s02")
    append_events(path, [mine, theirs])
    with pytest.raises(ValueError, match="already answered prompt p0 .*retract that first"):
        append_event(path, _submit("p0", "s01"))
    with pytest.raises(ValueError, match="no earlier event has that id"):
        append_event(path, retract_event({**mine, "event_id": "nope"}))
    with pytest.raises(ValueError, match="labeler s02's answer"):
        append_event(path, {**retract_event(theirs), "labeler_id": "s01"})
    undo = retract_event(mine)
    append_event(path, undo)
    with pytest.raises(ValueError, match="already retracted"):
        append_event(path, retract_event(mine))
    with pytest.raises(ValueError, match="a retract cannot be retracted"):
        append_event(path, retract_event(undo))
    events = read_events(path).events
    assert active_annotations(events) == [theirs]
    append_event(path, _submit("p0", "s01", ranking=[[0], [1], [2], [3]]))  # answering again is fine now
    assert [e["labeler_id"] for e in active_annotations(read_events(path).events)] == ["s02", "s01"]


def test_torn_last_line_is_tolerated_then_cut_off_by_the_next_append(tmp_path):
    path = tmp_path / "log.jsonl"
    first = _submit("p0")
    append_event(path, first)
    with open(path, "ab") as f:
        f.write(json.dumps(_submit("p1")).encode()[:57])  # a crash mid-write
    log = read_events(path)
    assert log.events == [first] and log.torn_line == 2
    second = skip_event("p1", "s01", "too long")
    append_event(path, second)
    assert read_events(path) == feedback.EventLog([first, second])
    assert path.read_text().count("\n") == 2


def test_complete_last_line_without_newline_is_kept(tmp_path):
    path = tmp_path / "log.jsonl"
    first, second = _submit("p0"), _submit("p1")
    path.write_text(json.dumps(first))  # e.g. saved by an editor that adds no newline
    assert read_events(path).events == [first]
    append_event(path, second)
    assert read_events(path).events == [first, second]


@pytest.mark.parametrize("middle,problem", [
    ('{"event": "submit", "ev', "not a complete JSON line"),
    ('{"event": "skip"}',
     r"skip event: missing field\(s\) \['event_id', 'prompt_id', 'labeler_id', 'timestamp', 'reason'\]$"),
])
def test_malformed_middle_line_raises_with_file_and_line(tmp_path, middle, problem):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps(_submit("p0")), middle, json.dumps(_submit("p1"))]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(JSONLError, match=rf"log\.jsonl:2: {problem}"):
        read_events(path)
    with pytest.raises(JSONLError, match=r"log\.jsonl:2"):  # and nothing is appended after it
        append_event(path, _submit("p2"))


def test_missing_log_is_empty(tmp_path):
    assert read_events(tmp_path / "none.jsonl") == feedback.EventLog([])


def test_progress_counts_submits_and_skips_and_forgets_retracted():
    a, b, c = _submit("p0"), skip_event("p1", "s01", "unclear"), _submit("p2")
    events = [a, b, c, _submit("p3", "s02"), retract_event(c)]
    progress = LabelerProgress.from_events(events, "s01")
    assert progress.todo(["p0", "p1", "p2", "p3"]) == ["p2", "p3"]
    assert progress.last(["p0", "p1", "p2", "p3"]) == b
    assert progress.last(["p0"]) == a
    assert LabelerProgress.from_events(events, "s02").todo(["p0", "p3"]) == ["p0"]


def test_comparisons_records_are_trl_pairwise_and_deterministic():
    outputs = {
        "p0": {"prompt": [{"role": "user", "content": "Name a bird."}], "outputs": ["owl", "cat", "emu", "dog"]},
        "p1": {"prompt": [{"role": "user", "content": "Say hi."}], "outputs": ["hi", "hello", "bye"]},
    }
    gone = _submit("p1", "s01", ranking=[[0], [1], [2]])
    events = [_submit("p0", "s01", ranking=[[2], [0], [1, 3]]), gone, retract_event(gone),
              _submit("p1", "s02", ranking=[[1, 0], [2]]), _submit("p0", "s02", ranking=[[0, 1, 2, 3]])]
    records = comparisons(events, outputs)
    # (4 choose 2) - 1 tie, then (3 choose 2) - 1 tie, then (4 choose 2) - 6 ties; the retracted one is gone
    assert len(records) == 5 + 2 + 0
    assert records == comparisons(events, outputs)
    first = records[0]
    assert list(first) == ["prompt", "chosen", "rejected", "prompt_id", "annotation_id", "labeler_id",
                           "chosen_rank", "rejected_rank"]
    assert first["prompt"] == outputs["p0"]["prompt"]
    assert first["chosen"] == [{"role": "assistant", "content": "emu"}]
    assert first["rejected"] == [{"role": "assistant", "content": "owl"}]
    assert (first["prompt_id"], first["annotation_id"], first["labeler_id"]) == ("p0", "s01/p0", "s01")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["chosen_rank"], r["rejected_rank"])
            for r in records] == [("emu", "owl", 1, 2), ("emu", "cat", 1, 3), ("emu", "dog", 1, 3),
                                  ("owl", "cat", 2, 3), ("owl", "dog", 2, 3), ("hi", "bye", 1, 2),
                                  ("hello", "bye", 1, 2)]
    for r in records:  # one Arrow schema for every row: same keys, same types
        assert json.loads(json.dumps(r)) == r
        messages = r["prompt"] + r["chosen"] + r["rejected"]
        assert all(isinstance(m, dict) and set(m) == {"role", "content"} for m in messages)
        assert all(isinstance(r[k], str) for k in ("prompt_id", "annotation_id", "labeler_id"))
        assert all(type(r[k]) is int for k in ("chosen_rank", "rejected_rank"))


def test_comparisons_refuse_outputs_that_do_not_match_the_ranking():
    events = [_submit("p0")]
    with pytest.raises(ValueError, match="no outputs for prompt 'p0'"):
        comparisons(events, {})
    with pytest.raises(ValueError, match="ranks 4 outputs, but prompt 'p0' has 3"):
        comparisons(events, {"p0": {"prompt": [], "outputs": ["a", "b", "c"]}})
