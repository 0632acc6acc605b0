"""Stage 2a: K samples per prompt, panel rankings, agreement and its calibration."""
import math

import pytest

from rlhf_lab.comparisons import (agreement_by_labeler, calibrate_noise, mean_and_sem, panel_agreement,
                                  panel_events, sample_outputs)
from rlhf_lab.feedback import comparisons
from rlhf_lab.labelers import make_panel
from rlhf_lab.world import load_world

RECORDS = [{"prompt_id": f"p{i}", "family": "open_qa", "prompt": [{"role": "user", "content": f"Where does the cat {i} live?"}],
            "spec": {"subject": "x", "attribute": "habitat"}} for i in range(6)]


@pytest.fixture(scope="module")
def world_items():
    """Real world tasks with hand-made answers of varied quality (no model needed)."""
    world = load_world(0)
    import random
    rng = random.Random(0)
    items = []
    for i in range(60):
        task = world.sample_task(rng, "open_qa")
        c = world.facts[task.spec["subject"]]
        outputs = [world.demonstrate(task, random.Random(j)) for j in range(2)] + [
            f"The {c.name} is {'red' if c.colour != 'red' else 'blue'}.", f"What does the {c.name} eat?",
            f"{world.demonstrate(task, rng)} You are stupid."]
        items.append({"prompt_id": f"q{i}", "family": task.family, "prompt": task.messages, "spec": task.spec,
                      "outputs": outputs})
    return world, items


def test_k_answers_per_prompt_with_settings_recorded(tiny_model, tiny_tokenizer):
    items = sample_outputs(tiny_model, tiny_tokenizer, RECORDS, k_range=(4, 9), temperatures=(0.7, 1.3),
                           max_new_tokens=4, seed=3)
    assert [i["prompt_id"] for i in items] == [r["prompt_id"] for r in RECORDS]
    assert all(4 <= len(i["outputs"]) <= 9 for i in items)
    k = len(items[0]["outputs"])
    assert items[0]["sampling"] == {"temperatures": [(0.7, 1.3)[i % 2] for i in range(k)], "top_p": 0.9, "seed": 3}
    assert items == sample_outputs(tiny_model, tiny_tokenizer, RECORDS, k_range=(4, 9), temperatures=(0.7, 1.3),
                                   max_new_tokens=4, seed=3)
    greedy = sample_outputs(tiny_model, tiny_tokenizer, RECORDS, k_range=(4, 9), temperatures=(0.0,), max_new_tokens=4)
    assert all(len(set(i["outputs"])) == 1 for i in greedy)  # each answer really used its own temperature


def test_panel_events_rank_every_item_by_distinct_labelers(world_items):
    world, items = world_items
    events = panel_events(world, items, make_panel("training"), labelers_per_item=2)
    assert len(events) == 2 * len(items)
    for a, b in zip(events[::2], events[1::2]):
        assert a["prompt_id"] == b["prompt_id"] and a["labeler_id"] != b["labeler_id"]
        assert sorted(i for tier in a["ranking"] for i in tier) == list(range(5))
    pairs = comparisons(events[::2], {i["prompt_id"]: i for i in items})
    tied = sum(math.comb(len(t), 2) for e in events[::2] for t in e["ranking"])
    assert len(pairs) == len(items) * math.comb(5, 2) - tied


def test_agreement_by_labeler_counts_shared_strict_pairs():
    events = [{"prompt_id": "p", "labeler_id": "a", "ranking": [[0], [1], [2]]},
              {"prompt_id": "p", "labeler_id": "b", "ranking": [[0], [2], [1]]},
              {"prompt_id": "q", "labeler_id": "a", "ranking": [[1], [0]]}]
    assert agreement_by_labeler(events) == {"a": 2 / 3, "b": 2 / 3}
    assert mean_and_sem([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(0.1))


def test_more_noise_less_agreement_and_calibration_hits_its_target(world_items):
    world, items = world_items
    rates = [panel_agreement(world, items, noise=n) for n in (0.0, 0.1, 1.0)]
    assert rates[0] > rates[1] > rates[2]
    noise = calibrate_noise(world, items, target=0.8)
    assert panel_agreement(world, items, noise=noise) == pytest.approx(0.8, abs=0.03)


def test_reveal_puts_the_students_ranking_beside_a_labeler_and_the_gold(world_items, tmp_path):
    from rlhf_lab.comparisons import reveal_against_gold
    from rlhf_lab.feedback import submit_event

    world, items = world_items
    item = items[0]
    gold = [world.score(world.task_from_record(item), o).overall() for o in item["outputs"]]
    best_first = sorted(range(len(gold)), key=lambda i: -gold[i])
    distinct = sorted(set(gold), reverse=True)
    gold_tiers = [[i for i in best_first if gold[i] == g] for g in distinct]
    shown = list(reversed(range(len(gold))))
    event = submit_event(item["prompt_id"], "student", gold_tiers, shown, [4] * len(gold), [{}] * len(gold))
    page = reveal_against_gold(world, items, make_panel("training"))(event)
    pairs = sum(len(a) * len(b) for k, a in enumerate(gold_tiers) for b in gold_tiers[k + 1:])
    assert f"the gold checker on {pairs} of {pairs} pairs" in page  # ranked as gold does: full agreement
    rows = page.split("<tr>")[2:]
    assert len(rows) == len(gold) and rows[0].startswith("<td><b>A</b></td>")
    first = shown[0]  # letter A is the output shown first
    assert f"({gold[first]:.2f})" in rows[0] and item["outputs"][first][:20] in rows[0]
