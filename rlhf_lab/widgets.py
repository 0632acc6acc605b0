"""RankingWidget: rank a prompt's K outputs in the notebook, as InstructGPT's labelers did.

A thin view over `feedback`: what a ranking is, what counts as done and what undo means all
live there, so a student's rankings and the simulated panel's are the same kind of event.
Every handler returns at once (no cell ever waits for a click), and a test or a CI cell can
drive the widget by setting `.value` on its controls and calling `.click()` on its buttons.
"""
from __future__ import annotations

import functools
import html
import os
import random
from pathlib import Path

import ipywidgets as w

from . import feedback
from .feedback import FLAGS, LETTERS


def display_order(seed: int, labeler_id: str, prompt_id: str, k: int) -> list[int]:
    """The output indices in the order shown, as letters A, B, ...

    Seeded by labeler and prompt, not by position in a session: resuming or undoing shows
    the same order again, while different labelers see different orders, so a taste for
    "the first answer" averages out.
    """
    order = list(range(k))
    random.Random(f"{seed}/{labeler_id}/{prompt_id}").shuffle(order)
    return order


def _shows_errors(handler):
    """Show any exception in the status area: a failed click must not vanish into a log."""
    @functools.wraps(handler)
    def wrapped(self, *args):
        try:
            handler(self, *args)
        except Exception as e:  # whatever it is, the labeler must see it
            self._say(f"{type(e).__name__}: {e}", error=True)
    return wrapped


class RankingWidget:
    """Rank, rate and flag each prompt's outputs; every answer is appended to `log_path`.

    `items`: [{"prompt_id", "prompt": messages, "outputs": [str, ...]}, ...]. The widget
    starts at the labeler's first prompt not yet answered in the log. `reveal(event)`, if
    given, returns HTML shown after each submission (e.g. how the panel and the gold checker
    ranked the same answers: the feedback the paper's labelers never got).
    """

    def __init__(self, items: list[dict], log_path: str | os.PathLike, labeler_id: str, seed: int = 0,
                 reveal=None):
        self.items = {item["prompt_id"]: item for item in items}
        if len(self.items) != len(items):
            raise ValueError("RankingWidget: each item needs its own prompt_id; some repeat")
        for pid, item in self.items.items():
            if not 2 <= len(item["outputs"]) <= len(LETTERS):
                raise ValueError(f"RankingWidget: prompt {pid!r} has {len(item['outputs'])} outputs; "
                                 f"ranking needs 2 to {len(LETTERS)}")
        self.log_path, self.labeler_id, self.seed, self.reveal = Path(log_path), labeler_id, seed, reveal
        self.prompt_id: str | None = None
        self.display_order: list[int] = []
        self.rank_buttons: list[w.ToggleButtons] = []
        self.likert_buttons: list[w.ToggleButtons] = []
        self.flag_boxes: list[dict[str, w.Checkbox]] = []

        self.progress_bar = w.IntProgress(min=0, max=len(items))
        self.progress_label = w.Label()
        self.header = w.HTML()
        self.cards = w.VBox()
        self.preview = w.Label()
        self.submit_button = w.Button(description="Submit", button_style="success", disabled=True)
        self.skip_reason = w.Text(placeholder="why skip? (e.g. I cannot judge this)")
        self.skip_button = w.Button(description="Skip", disabled=True)
        self.undo_button = w.Button(description="Undo last")
        self.status = w.HTML()
        self.feedback = w.HTML()
        instructions = w.HTML("<i>Rank every answer: 1 = best. Give answers you cannot tell apart the same rank. "
                              "Rate each 1–7 (7 = excellent) and tick any problem you see.</i>")
        self.form = w.VBox([instructions, self.cards, self.preview, self.submit_button,
                            w.HBox([self.skip_reason, self.skip_button])])
        self.widget = w.VBox([w.HBox([self.progress_bar, self.progress_label]), self.header,
                              self.form, self.undo_button, self.status, self.feedback],
                             layout=w.Layout(max_width="1100px"))

        self.submit_button.on_click(self._on_submit)
        self.skip_button.on_click(self._on_skip)
        self.undo_button.on_click(self._on_undo)
        self.skip_reason.observe(self._on_reason, "value")

        torn = feedback.read_events(self.log_path).torn_line
        self._go()
        if torn:
            self._say(f"Line {torn} of {self.log_path} was a write cut short by a crash; it is "
                      "ignored and will be cut off at the next save. Nothing submitted was lost.")

    def _repr_mimebundle_(self, **kwargs):
        """The live widget, plus a static HTML picture of the current prompt: what GitHub, nbviewer
        or a notebook opened without a kernel show instead of a widget they cannot run."""
        return {**self.widget._repr_mimebundle_(**kwargs), "text/html": self.snapshot_html()}

    def snapshot_html(self) -> str:
        """The current prompt and its answers as static HTML, letters in the order shown."""
        if self.prompt_id is None:
            return f"<p><b>All {len(self.items)} prompts are done.</b></p>"
        outputs = self.items[self.prompt_id]["outputs"]
        answers = "".join(f"<li><b>{LETTERS[p]}</b> {html.escape(outputs[out])}</li>"
                          for p, out in enumerate(self.display_order))
        return (f"<div>{self.header.value}<p><i>The ranking widget (run the notebook to use it): rank every "
                f"answer, 1 = best.</i></p><ul style='list-style: none'>{answers}</ul></div>")

    def _progress(self) -> feedback.LabelerProgress:
        """Read afresh on every action: another widget may have appended to the same log."""
        return feedback.LabelerProgress.from_events(feedback.read_events(self.log_path).events,
                                                    self.labeler_id)

    # --- showing --------------------------------------------------------------------------

    def _go(self, prompt_id: str | None = None, answer: dict | None = None) -> None:
        """Show `prompt_id` (default: the first not yet answered), pre-filled from `answer`."""
        todo = self._progress().todo(list(self.items))
        done = len(self.items) - len(todo)
        self.progress_bar.value = done
        self.progress_label.value = f"{done} / {len(self.items)} done"
        self.prompt_id = prompt_id or next(iter(todo), None)
        self.form.layout.display = "none" if self.prompt_id is None else None
        if self.prompt_id is None:
            self.header.value = f"<b>All {len(self.items)} prompts are done. Thank you!</b>"
            return
        item = self.items[self.prompt_id]
        number = list(self.items).index(self.prompt_id) + 1
        self.header.value = (f"<b>Prompt {number} of {len(self.items)}</b> "
                             f"<span style='color: #888'>({html.escape(self.prompt_id)})</span>") + "".join(
            _block(f"<b>{html.escape(m['role'])}:</b> {html.escape(m['content'])}") for m in item["prompt"])
        self._build_cards(item["outputs"])
        self.skip_reason.value = answer["reason"] if answer and answer["event"] == "skip" else ""
        if answer and answer["event"] == "submit":
            rank = {i: n for n, tier in enumerate(answer["ranking"], start=1) for i in tier}
            for p, out in enumerate(self.display_order):
                self.rank_buttons[p].value = rank[out]
                self.likert_buttons[p].value = answer["likert"][out]
                for name, box in self.flag_boxes[p].items():
                    box.value = answer["flags"][out].get(name, False)
        self._refresh()

    def _build_cards(self, outputs: list[str]) -> None:
        k = len(outputs)
        self.display_order = display_order(self.seed, self.labeler_id, self.prompt_id, k)
        # one click per choice: a row of small toggle buttons, none chosen at first
        compact = {"button_width": "30px"}
        self.rank_buttons = [w.ToggleButtons(options=range(1, k + 1), value=None, description="rank (1 = best)",
                                             style={**compact, "description_width": "110px"}) for _ in range(k)]
        self.likert_buttons = [w.ToggleButtons(options=range(1, 8), value=None, description="rating 1–7",
                                               style={**compact, "description_width": "110px"}) for _ in range(k)]
        self.flag_boxes = [{name: w.Checkbox(description=label, indent=False, layout=w.Layout(width="auto"))
                            for name, label in FLAGS.items()} for _ in range(k)]
        for d in self.rank_buttons + self.likert_buttons:
            d.observe(self._refresh, "value")
        self.cards.children = [
            w.VBox([w.HTML(_block(f"<b>{LETTERS[p]}</b> {html.escape(outputs[out])}")),
                    self.rank_buttons[p], self.likert_buttons[p],
                    w.HBox(list(self.flag_boxes[p].values()), layout=w.Layout(flex_flow="row wrap"))],
                   layout=w.Layout(border="1px solid #ccc", padding="4px", margin="4px 0"))
            for p, out in enumerate(self.display_order)]

    def _missing(self) -> str | None:
        """What still keeps Submit disabled, in the letters the labeler sees."""
        missing = []
        for what, buttons in (("a rank", self.rank_buttons), ("a rating", self.likert_buttons)):
            letters = [LETTERS[p] for p, d in enumerate(buttons) if d.value is None]
            if letters:
                missing.append(f"{what} for {', '.join(letters)}")
        return "Submit needs " + " and ".join(missing) if missing else None

    def _refresh(self, _change=None) -> None:
        """Live preview ("B > A = D > C → 5 pairs"), what Submit still needs, and Submit enabled only
        when complete; a ranking that ties everything is allowed but flagged (it has no pairs)."""
        ranks = [d.value for d in self.rank_buttons]
        missing = self._missing()
        parts = [missing] if missing else []
        if None not in ranks:
            tiers = feedback.tiers_from_ranks(ranks)
            pairs = len(feedback.ranking_to_pairs(tiers))
            parts.insert(0, " > ".join(" = ".join(LETTERS[p] for p in tier) for tier in tiers)
                         + f" → {pairs} pair{'s' * (pairs != 1)}")
            if pairs == 0:
                parts.append("every answer tied: this ranking teaches the reward model nothing")
        self.preview.value = "  ·  ".join(parts)
        self.submit_button.disabled = missing is not None
        self.submit_button.tooltip = missing or "save this ranking and show the next prompt"

    def _say(self, message: str, error: bool = False) -> None:
        colour = "#b00020" if error else "#555"
        self.status.value = f'<span style="color: {colour}">{html.escape(message, quote=False)}</span>'

    # --- actions: each appends to the log (fsynced) before the widget moves on ---------------

    @_shows_errors
    def _on_submit(self, _button) -> None:
        missing = self._missing()
        if missing:
            self._say(f"Not saved: {missing}.", error=True)  # a click that reached a disabled button
            return
        order = self.display_order
        position = {out: p for p, out in enumerate(order)}
        outputs = range(len(order))
        ranking = [sorted(order[p] for p in tier)
                   for tier in feedback.tiers_from_ranks([d.value for d in self.rank_buttons])]
        event = feedback.submit_event(
            self.prompt_id, self.labeler_id, ranking, order,
            likert=[self.likert_buttons[position[i]].value for i in outputs],
            flags=[{name: box.value for name, box in self.flag_boxes[position[i]].items()} for i in outputs])
        feedback.append_event(self.log_path, event)
        done = self.prompt_id
        self._go()
        self._say(f"Saved your ranking of {done}.")
        if self.reveal is not None:
            self.feedback.value = self.reveal(event)

    @_shows_errors
    def _on_skip(self, _button) -> None:
        reason = self.skip_reason.value.strip()
        if not reason:
            self._say("Not skipped: say why in the box first.", error=True)
            return
        feedback.append_event(self.log_path, feedback.skip_event(self.prompt_id, self.labeler_id, reason))
        skipped = self.prompt_id
        self._go()
        self._say(f"Skipped {skipped}.")

    @_shows_errors
    def _on_undo(self, _button) -> None:
        last = self._progress().last(list(self.items))
        if last is None:
            self._say("Nothing to undo: you have no answers here yet.", error=True)
            return
        feedback.append_event(self.log_path, feedback.retract_event(last))
        self._go(last["prompt_id"], answer=last)
        self.feedback.value = ""
        self._say(f"Retracted your {last['event']} of {last['prompt_id']}: change it and submit again.")

    def _on_reason(self, change) -> None:
        self.skip_button.disabled = not change["new"].strip()


def _block(inner_html: str) -> str:
    return f'<div style="white-space: pre-wrap; margin: 2px 0">{inner_html}</div>'
