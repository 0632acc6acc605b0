import json

import pytest

from rlhf_lab import feedback, widgets
from rlhf_lab.feedback import read_events
from rlhf_lab.widgets import LETTERS, RankingWidget

ITEMS = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"Question {i} <b>?"}],
          "outputs": [f"answer {i}.{j}" for j in range(k)]}
         for i, k in enumerate([4, 5, 4])]


@pytest.fixture
def log(tmp_path):
    return tmp_path / "rankings.jsonl"


def _fill(widget, ranks_by_letter: str, likert: int = 5):
    """Rank by letter: "2132" gives A rank 2, B rank 1, C rank 3, D rank 2."""
    for p, r in enumerate(ranks_by_letter):
        widget.rank_buttons[p].value = int(r)
        widget.likert_buttons[p].value = likert


def test_full_ranking_by_clicks_writes_the_ranking_of_outputs_not_of_letters(log):
    rw = RankingWidget(ITEMS, log, "me", seed=3)
    order = rw.display_order
    assert rw.prompt_id == "p0" and sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]
    assert rw.submit_button.disabled
    _fill(rw, "2132")
    rw.likert_buttons[2].value = 1
    rw.flag_boxes[2]["hallucination"].value = True
    assert rw.preview.value == "B > A = D > C → 5 pairs"
    assert not rw.submit_button.disabled
    rw.submit_button.click()

    (event,) = read_events(log).events
    a, b, c, d = order  # the output index behind each letter
    assert event["event"] == "submit" and event["prompt_id"] == "p0" and event["labeler_id"] == "me"
    assert event["ranking"] == [[b], sorted([a, d]), [c]]
    assert event["display_order"] == order
    assert event["likert"][c] == 1 and sorted(event["likert"]) == [1, 5, 5, 5]
    assert [i for i, f in enumerate(event["flags"]) if f["hallucination"]] == [c]
    assert set(event["flags"][0]) == set(widgets.FLAGS)
    assert rw.prompt_id == "p1" and rw.progress_bar.value == 1 and rw.progress_label.value == "1 / 3 done"
    assert "Saved" in rw.status.value


def test_incomplete_ranking_is_refused_in_the_widget_and_nothing_written(log):
    rw = RankingWidget(ITEMS, log, "me")
    _fill(rw, "1234")
    rw.rank_buttons[2].value = None
    assert rw.submit_button.disabled
    assert rw.preview.value == "Submit needs a rank for C" == rw.submit_button.tooltip
    rw.submit_button.click()  # a click that slips through is refused too
    assert "Not saved: Submit needs a rank for C" in rw.status.value and "b00020" in rw.status.value
    rw.rank_buttons[2].value = 4
    rw.likert_buttons[0].value = None
    rw.likert_buttons[3].value = None
    assert rw.submit_button.disabled and rw.preview.value.endswith("Submit needs a rating for A, D")
    rw.submit_button.click()
    assert not log.exists() and rw.prompt_id == "p0"


def test_ties_show_in_the_preview(log):
    rw = RankingWidget(ITEMS[:1], log, "me")
    _fill(rw, "1111")
    assert rw.preview.value.startswith("A = B = C = D → 0 pairs  ·  every answer tied")
    assert not rw.submit_button.disabled  # allowed (the paper's UI allows ties), but flagged
    _fill(rw, "1112")
    assert rw.preview.value == "A = B = C > D → 3 pairs"


def test_a_failed_save_shows_the_error_and_does_not_advance(log, monkeypatch):
    def disk_full(path, event):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(feedback, "append_event", disk_full)
    rw = RankingWidget(ITEMS, log, "me")
    _fill(rw, "1234")
    rw.submit_button.click()
    assert "No space left on device" in rw.status.value
    assert rw.prompt_id == "p0" and rw.progress_bar.value == 0
    assert [d.value for d in rw.rank_buttons] == [1, 2, 3, 4]  # the answer is still there to retry


def test_skip_needs_a_reason(log):
    rw = RankingWidget(ITEMS, log, "me")
    assert rw.skip_button.disabled
    rw.skip_reason.value = "   "
    assert rw.skip_button.disabled
    rw.skip_reason.value = "I cannot judge this"
    assert not rw.skip_button.disabled
    rw.skip_button.click()
    (event,) = read_events(log).events
    assert (event["event"], event["prompt_id"], event["reason"]) == ("skip", "p0", "I cannot judge this")
    assert rw.prompt_id == "p1" and rw.skip_reason.value == "" and rw.skip_button.disabled


def test_undo_retracts_and_goes_back_with_the_answer_filled_in(log):
    rw = RankingWidget(ITEMS, log, "me")
    _fill(rw, "2132")
    rw.flag_boxes[1]["toxic"].value = True
    rw.submit_button.click()
    rw.skip_reason.value = "off topic"
    rw.skip_button.click()
    assert rw.prompt_id == "p2"

    rw.undo_button.click()
    assert rw.prompt_id == "p1" and rw.skip_reason.value == "off topic"
    rw.undo_button.click()
    assert rw.prompt_id == "p0" and rw.progress_label.value == "0 / 3 done"
    assert [d.value for d in rw.rank_buttons] == [2, 1, 3, 2] and rw.flag_boxes[1]["toxic"].value
    events = read_events(log).events
    assert [e["event"] for e in events] == ["submit", "skip", "retract", "retract"]
    assert [e["retracts"] for e in events[2:]] == [events[1]["event_id"], events[0]["event_id"]]
    assert feedback.active_annotations(events) == []
    rw.undo_button.click()
    assert "Nothing to undo" in rw.status.value and len(read_events(log).events) == 4


def test_second_widget_on_the_same_file_resumes(log):
    first = RankingWidget(ITEMS, log, "me")
    first.skip_reason.value = "unclear"
    first.skip_button.click()
    _fill(first, "12345")
    first.submit_button.click()
    assert first.prompt_id == "p2"

    again = RankingWidget(ITEMS, log, "me")
    assert again.prompt_id == "p2" and again.progress_label.value == "2 / 3 done"
    assert again.display_order == first.display_order  # the same letters for the same outputs
    other = RankingWidget(ITEMS, log, "someone else")
    assert other.prompt_id == "p0" and other.progress_bar.value == 0

    _fill(again, "1234")
    again.submit_button.click()
    assert again.prompt_id is None and again.form.layout.display == "none"
    assert "All 3 prompts are done" in again.header.value
    assert RankingWidget(ITEMS, log, "me").prompt_id is None


def test_two_widgets_cannot_answer_the_same_prompt_twice(log):
    one, two = RankingWidget(ITEMS, log, "me"), RankingWidget(ITEMS, log, "me")
    _fill(one, "1234")
    one.submit_button.click()
    _fill(two, "4321")
    two.submit_button.click()
    assert "already answered prompt p0" in two.status.value and two.prompt_id == "p0"
    assert len(read_events(log).events) == 1


def test_torn_last_line_is_reported_in_the_widget(log):
    rw = RankingWidget(ITEMS, log, "me")
    _fill(rw, "1234")
    rw.submit_button.click()
    with open(log, "a") as f:
        f.write('{"event": "submit", "event_id": "')
    again = RankingWidget(ITEMS, log, "me")
    assert again.prompt_id == "p1" and "Line 2" in again.status.value and "cut short" in again.status.value


def test_display_order_is_seeded_per_labeler_and_prompt():
    orders = {(s, lab, p): tuple(widgets.display_order(s, lab, p, 6))
              for s in (0, 1) for lab in ("a", "b") for p in ("p0", "p1")}
    assert orders == {key: tuple(widgets.display_order(*key, 6)) for key in orders}
    assert len(set(orders.values())) > 4


def test_prompt_and_outputs_are_shown_escaped(log):
    rw = RankingWidget(ITEMS, log, "me")
    assert "Question 0 &lt;b&gt;?" in rw.header.value
    texts = [card.children[0].value for card in rw.cards.children]
    assert [t.split("</b> ")[1].split("<")[0] for t in texts] == [f"answer 0.{i}" for i in rw.display_order]
    assert [t.split("<b>")[1][0] for t in texts] == list(LETTERS[:4])


def test_items_are_checked(log):
    with pytest.raises(ValueError, match="its own prompt_id"):
        RankingWidget(ITEMS + ITEMS[:1], log, "me")
    with pytest.raises(ValueError, match="prompt 'x' has 1 outputs"):
        RankingWidget([{"prompt_id": "x", "prompt": [], "outputs": ["only"]}], log, "me")


def test_widget_displays_as_an_ipywidget_with_a_static_picture_beside_it(log):
    rw = RankingWidget(ITEMS, log, "me", seed=3)
    bundle = rw._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert json.dumps(bundle["application/vnd.jupyter.widget-view+json"])
    static = bundle["text/html"]  # what a viewer without a kernel shows
    assert "Prompt 1 of 3" in static and "Question 0 &lt;b&gt;?" in static
    outputs = ITEMS[0]["outputs"]
    assert [static.index(f"<b>{LETTERS[p]}</b> {outputs[out]}") for p, out in enumerate(rw.display_order)] == sorted(
        static.index(f"<b>{LETTERS[p]}</b> {outputs[out]}") for p, out in enumerate(rw.display_order))


def test_reveal_shows_after_each_submission_and_clears_on_undo(log):
    seen = []
    rw = RankingWidget(ITEMS, log, "me", reveal=lambda event: seen.append(event) or f"gold for {event['prompt_id']}")
    _fill(rw, "1234")
    rw.submit_button.click()
    assert rw.feedback.value == "gold for p0" and seen[0]["event"] == "submit"
    rw.undo_button.click()
    assert rw.feedback.value == "" and rw.prompt_id == "p0"
