"""Stage 2a: K answers per prompt from the SFT model, ranked by a simulated labeler panel.

The paper showed labelers K = 4 to 9 outputs of the SFT model per prompt and had them rank
all of them at once: one ranking gives C(K, 2) comparisons for the cost of reading K
answers. A subset of prompts was ranked by several labelers to measure agreement (72.6%).
"""
from __future__ import annotations

import html
import random
from collections import defaultdict
from itertools import combinations

from .feedback import FLAGS, LETTERS, submit_event
from .generation import sample
from .labelers import PAPER_AGREEMENT, agreement, make_panel
from .tokenizer import format_prompt


def sample_outputs(model, tokenizer, records: list[dict], k_range=(4, 9), temperatures=(1.0,),
                   top_p: float = 0.9, max_new_tokens: int = 64, seed: int = 0, progress: bool = False) -> list[dict]:
    """K sampled answers per prompt record (K drawn from k_range), answer i at temperatures[i % len]:
    a ranking that spans careful and careless answers teaches the reward model more than K alike
    ones (the paper's rankings spanned outputs of several models). Each answer's temperature is recorded."""
    rng = random.Random(f"k-{seed}")
    ks = [rng.randint(*k_range) for _ in records]
    temps = [[temperatures[i % len(temperatures)] for i in range(k)] for k in ks]
    texts = {}
    for t_index, t in enumerate(temperatures):
        slots = [(n, i) for n, ts in enumerate(temps) for i, u in enumerate(ts) if u == t]
        prompts = [format_prompt(tokenizer, records[n]["prompt"]) for n, _ in slots]
        answers = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=t, top_p=top_p,
                         seed=seed * 1000 + t_index, progress=progress)
        texts.update(zip(slots, answers))
    return [{"prompt_id": record["prompt_id"], "family": record["family"], "prompt": record["prompt"],
             "spec": record["spec"], "outputs": [texts[(n, i)].strip() for i in range(k)],
             "sampling": {"temperatures": temps[n], "top_p": top_p, "seed": seed}}
            for n, (record, k) in enumerate(zip(records, ks))]


def gold(world, items: list[dict]) -> list[list]:
    """The checker's Score of every output of every item (what the labelers' judgements start from)."""
    return [[world.score(world.task_from_record(item), o) for o in item["outputs"]] for item in items]


def panel_events(world, items: list[dict], panel: list, labelers_per_item: int = 1, seed: int = 0,
                 item_scores: list[list] | None = None) -> list[dict]:
    """Submit events: each item ranked (with Likert and flags per output) by distinct panel members.
    `item_scores` (from `gold`) saves re-scoring when the same items are ranked many times."""
    rng = random.Random(f"panel-events-{seed}")
    events = []
    for item, scores in zip(items, item_scores or gold(world, items), strict=True):
        for labeler in rng.sample(panel, labelers_per_item):
            tiers = labeler.rank(scores, item["outputs"], rng)
            likert = [labeler.likert(s, o, rng) for s, o in zip(scores, item["outputs"])]
            flags = [{name: bool(s.flags[name]) for name in FLAGS} for s in scores]
            events.append(submit_event(item["prompt_id"], labeler.labeler_id, tiers,
                                       list(range(len(item["outputs"]))), likert, flags))
    return events


def agreement_by_labeler(events: list[dict]) -> dict[str, float]:
    """Each labeler's agreement with the others on the pairs they both ranked (ties excluded)."""
    by_prompt = defaultdict(list)
    for e in events:
        by_prompt[e["prompt_id"]].append(e)
    agree, total = defaultdict(int), defaultdict(int)
    for group in by_prompt.values():
        for a, b in combinations(group, 2):
            n_agree, n = agreement(a["ranking"], b["ranking"])
            for labeler in (a["labeler_id"], b["labeler_id"]):
                agree[labeler] += n_agree
                total[labeler] += n
    return {labeler: agree[labeler] / total[labeler] for labeler in sorted(total) if total[labeler]}


def mean_and_sem(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error, the "72.6 ± 1.5%" form the paper reports."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, (var / n) ** 0.5


def panel_agreement(world, items: list[dict], kind: str = "training", noise: float = 0.1, seed: int = 0,
                    item_scores: list[list] | None = None) -> float:
    """Mean inter-labeler agreement when every item is ranked by two labelers of a panel."""
    events = panel_events(world, items, make_panel(kind, noise=noise, seed=seed), labelers_per_item=2, seed=seed,
                          item_scores=item_scores)
    return mean_and_sem(list(agreement_by_labeler(events).values()))[0]


def calibrate_noise(world, items: list[dict], target: float = 0.726, kind: str = "training",
                    low: float = 0.0, high: float = 1.0, steps: int = 10, seed: int = 0) -> float:
    """The panel noise at which labelers agree on `target` of pairs (bisection: more noise, less agreement)."""
    scores = gold(world, items)
    for _ in range(steps):
        middle = (low + high) / 2
        if panel_agreement(world, items, kind, middle, seed, scores) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def collect(world, model, tokenizer, train_records: list[dict], valid_records: list[dict], config,
            progress: bool = False) -> dict:
    """The whole stage headless: sample K answers per prompt, calibrate the training panel's
    noise to the paper's agreement, one ranking per training prompt and two per validation
    prompt (the reward model's held-out set, with its own agreement ceiling)."""
    def answers(records, seed):
        return sample_outputs(model, tokenizer, records, config.k_range, config.temperatures, config.top_p,
                              seed=seed, progress=progress)

    base = 4 * config.seed  # four independent streams per seed: answers and rankings, training and validation
    items = answers(train_records, seed=base)
    noise = calibrate_noise(world, items[:config.calibration_prompts], target=PAPER_AGREEMENT["training"][0],
                            seed=config.seed)
    panel = make_panel("training", noise=noise, seed=config.seed)
    valid_items = answers(valid_records, seed=base + 1)
    return {"noise": noise, "items": items, "events": panel_events(world, items, panel, 1, seed=base + 2),
            "valid_items": valid_items, "valid_events": panel_events(world, valid_items, panel, 2, seed=base + 3)}


def reveal_against_gold(world, items: list[dict], panel: list, seed: int = 0):
    """A `RankingWidget` reveal: after each submission, the student's ranking beside a panel labeler's
    and the gold scores of the same answers, letters in the order shown, with the share of pairs on
    which the student agrees with each (the feedback the paper's labelers never had)."""
    by_id = {item["prompt_id"]: item for item in items}
    rng = random.Random(f"reveal-{seed}")

    def reveal(event: dict) -> str:
        item = by_id[event["prompt_id"]]
        task = world.task_from_record(item)
        scores = [world.score(task, o) for o in item["outputs"]]
        gold = [s.overall() for s in scores]
        gold_tiers = [[i for i in range(len(gold)) if gold[i] == g] for g in sorted(set(gold), reverse=True)]
        panel_tiers = rng.choice(panel).rank(scores, item["outputs"], rng)
        ranks = {name: {i: n for n, tier in enumerate(tiers, start=1) for i in tier}
                 for name, tiers in (("you", event["ranking"]), ("labeler", panel_tiers), ("gold", gold_tiers))}
        rows = "".join(
            f"<tr><td><b>{LETTERS[p]}</b></td><td>{ranks['you'][i]}</td><td>{ranks['labeler'][i]}</td>"
            f"<td>{ranks['gold'][i]} ({gold[i]:.2f})</td><td>{html.escape(item['outputs'][i][:80])}</td></tr>"
            for p, i in enumerate(event["display_order"]))
        shares = []
        for name, tiers in (("a panel labeler", panel_tiers), ("the gold checker", gold_tiers)):
            agree, n = agreement(event["ranking"], tiers)
            shares.append(f"{name} on {agree} of {n} pairs" if n else f"{name}: no pairs to compare")
        return (f"<p>How others ranked <b>{html.escape(event['prompt_id'])}</b> (1 = best): you agree with "
                f"{' and with '.join(shares)}.</p><table><tr><th></th><th>you</th><th>labeler</th>"
                f"<th>gold (score)</th><th>answer</th></tr>{rows}</table>")
    return reveal
