"""Stage 2b: the reward model r(x, y), trained on rankings.

It is the SFT model with the unembedding replaced by a scalar head, read at the last real
token of prompt + answer (an `AutoModelForSequenceClassification` with num_labels=1, as TRL
and others do it). All C(K, 2) pairs of one ranking form one batch element, so each answer
is forwarded once per step; `as_pairs` gives the shuffled-pairs alternative that the paper
found to overfit.
"""
from __future__ import annotations

import math
import random
import time
from collections import defaultdict

import torch
from transformers import AutoModelForSequenceClassification

from . import unpadded
from .data import collate, encode_example
from .hub import from_pretrained
from .labelers import preferences
from .losses import ranking_loss
from .models import left_padded_positions, quiet_hf_loading
from .pretrain import cosine_schedule, gradient_step
from .tokenizer import load_tokenizer
from .utils import eval_mode, get_device, progress_bar, set_seed


def load_reward_model(name_or_path, device=None):
    """A reward model (num_labels=1) from a folder: a saved RM, or a causal LM whose
    unembedding is dropped and whose scalar head starts at zero (every answer scores 0)."""
    with quiet_hf_loading():
        model = from_pretrained(AutoModelForSequenceClassification, name_or_path, what="reward model",
                                num_labels=1, use_safetensors=True)
    if model.config.pad_token_id is None:  # e.g. a Llama checkpoint: its tokenizer knows (or pads with eos)
        model.config.pad_token_id = load_tokenizer(name_or_path).pad_token_id
    if model.config.pad_token_id is None:
        raise ValueError(f"{name_or_path}: neither the config nor the tokenizer has a pad token id. A reward model "
                         f"reads its score at the last token that is not padding (here and in transformers), so it "
                         f"needs one: set pad_token_id in {name_or_path}/config.json")
    return model.to(device or get_device()).eval()


def reward_model_from_policy(policy_path, device=None):
    """The paper's initialization: SFT weights, unembedding removed, a fresh zero scalar head."""
    model = load_reward_model(policy_path, device)
    with torch.no_grad():
        model.score.weight.zero_()
    model.config.architectures = [type(model).__name__]
    return model


def _final_norm(model) -> torch.nn.Module | None:
    """The norm right before the score head (GPT-2's ln_f, Llama's norm), if the model has one."""
    backbone = model.base_model
    return getattr(backbone, "ln_f", None) or getattr(backbone, "norm", None)


def token_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 group_size: int | None = None) -> torch.Tensor:
    """(B, T) the scalar head applied at every position; the reward is the one at the score
    token, the value function (PPO) uses them all. Position ids skip left padding. With a
    `group_size`, rows are forwarded in groups without their padding (`unpadded`; 0 at the columns
    cut off), as RL does with its left- and right-padded rollouts; without, in one forward, as
    reward-model training does (its batches are bucketed by length: 9% padding)."""
    def forward(ids, mask, n):
        hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=left_padded_positions(mask))
        return model.score(hidden.last_hidden_state[:, -n:]).squeeze(-1).float()

    if group_size is None:
        return forward(input_ids, attention_mask, input_ids.shape[1])
    return unpadded.per_position(forward, input_ids, attention_mask, group_size=group_size)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the rightmost real token per row, for left or right padding."""
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (columns * attention_mask).argmax(dim=-1)


def score_token_index(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Where the reward is read: the rightmost token that is not padding, transformers' own rule
    (`*ForSequenceClassification`), so TRL and any other consumer read the same score. With a
    distinct pad token that is the last real token; where pad = eos (gpt2), the token before a final eos."""
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (columns * (input_ids != pad_token_id)).argmax(dim=-1)


def rewards(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            group_size: int | None = None) -> torch.Tensor:
    """(B,) r(x, y): the score at each row's score token (`score_token_index`); `group_size` as in `token_scores`."""
    scores = token_scores(model, input_ids, attention_mask, group_size)
    return scores[torch.arange(len(scores)), score_token_index(input_ids, model.config.pad_token_id)]


def shift_rewards(model, offset: float) -> None:
    """Add `offset` to every score, folded exactly into the final norm's bias (w·(x + δ) = w·x +
    offset for δ = offset·w/|w|²), so transformers' own forward of the saved model gives the
    shifted scores. Raises ValueError where there is no such bias (RMSNorm: Llama, SmolLM2): a
    shift kept anywhere else would be a number only this package adds, and other readers miss."""
    norm, weight = _final_norm(model), model.score.weight.detach()[0]
    if norm is None or getattr(norm, "bias", None) is None or float(weight.norm()) == 0:
        raise ValueError(f"{type(model).__name__} has no bias before its score head (or the head is zero), so a "
                         f"shift of its scores cannot be stored in its weights; leave the scores unshifted")
    with torch.no_grad():
        norm.bias += offset * weight / weight.dot(weight)


# --- data: rankings as groups ------------------------------------------------------------

def _consistent_pairs(pairs: list[tuple[int, int]], texts: list[str]) -> list[tuple[int, int]]:
    """(winner, loser) pairs of one ranking without those a repeated text makes meaningless: a text
    against itself, and a pair of texts stated both ways (a labeler who put one text both above
    and below another has said neither). A pair stated twice is kept once."""
    stated = {(texts[w], texts[l]) for w, l in pairs}
    return [(w, l) for w, l in dict.fromkeys(pairs) if texts[w] != texts[l] and (texts[l], texts[w]) not in stated]


def ranking_groups(comparisons: list[dict]) -> list[dict]:
    """TRL pairs -> one group per annotation: its prompt, distinct answers, and (winner, loser)
    index pairs. Order follows the first appearance of each annotation and answer. One text
    ranked twice is one answer, so its pairs go through `_consistent_pairs`; a ranking left
    without pairs is dropped."""
    groups: dict[str, dict] = {}
    for c in comparisons:
        g = groups.setdefault(c["annotation_id"], {
            "annotation_id": c["annotation_id"], "prompt_id": c["prompt_id"], "labeler_id": c["labeler_id"],
            "prompt": c["prompt"], "completions": [], "pairs": []})
        index = []
        for side in ("chosen", "rejected"):
            text = c[side][-1]["content"]
            if text not in g["completions"]:
                g["completions"].append(text)
            index.append(g["completions"].index(text))
        g["pairs"].append(tuple(index))
    for g in groups.values():
        g["pairs"] = _consistent_pairs(g["pairs"], g["completions"])
    return [g for g in groups.values() if g["pairs"]]


def groups_from_rankings(events: list[dict], items_by_prompt: dict[str, dict]) -> list[dict]:
    """Submit events (with their items' outputs) -> groups, keeping repeated answers apart; pairs
    between repeated texts go through `_consistent_pairs`."""
    groups = []
    for e in events:
        item = items_by_prompt[e["prompt_id"]]
        pairs = [(i, j) if p > 0 else (j, i) for (i, j), p in preferences(e["ranking"]).items()]
        groups.append({"annotation_id": f"{e['labeler_id']}/{e['prompt_id']}", "prompt_id": e["prompt_id"],
                       "labeler_id": e["labeler_id"], "prompt": item["prompt"], "completions": item["outputs"],
                       "pairs": _consistent_pairs(pairs, item["outputs"])})
    return groups


def as_pairs(groups: list[dict]) -> list[dict]:
    """Every comparison as its own two-answer group: the shuffled-pairs alternative."""
    return [{**g, "completions": [g["completions"][w], g["completions"][l]], "pairs": [(0, 1)]}
            for g in groups for w, l in g["pairs"]]


def encode_groups(tokenizer, groups: list[dict], max_length: int) -> list[dict]:
    """Token ids of prompt + answer + end-of-turn for every answer of every group."""
    return [{**g, "encoded": [encode_example(tokenizer, g["prompt"], c, max_length) for c in g["completions"]]}
            for g in groups]


def group_batch(encoded_groups: list[dict], pad_token_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-padded answers of several groups (labels mark the answer tokens, for DPO), with
    winner/loser indices into the flat answer list and the group each pair belongs to (for the
    per-ranking average)."""
    examples, winners, losers, group_of_pair, offset = [], [], [], [], 0
    for n, g in enumerate(encoded_groups):
        examples += g["encoded"]
        for w, l in g["pairs"]:
            winners.append(offset + w)
            losers.append(offset + l)
            group_of_pair.append(n)
        offset += len(g["encoded"])
    return {**collate(examples, pad_token_id, device), "winners": torch.tensor(winners, device=device),
            "losers": torch.tensor(losers, device=device), "groups": torch.tensor(group_of_pair, device=device)}


@torch.no_grad()
def score_texts(model, tokenizer, prompt_completions: list[tuple[list[dict], str]], max_length: int = 256,
                batch_size: int = 64) -> list[float]:
    """r(x, y) for (prompt messages, answer) pairs, in eval mode."""
    encoded = [encode_example(tokenizer, p, c, max_length) for p, c in prompt_completions]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    out = [0.0] * len(encoded)
    device = next(model.parameters()).device
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = collate([encoded[i] for i in chunk], tokenizer.pad_token_id, device)
            values = rewards(model, batch["input_ids"], batch["attention_mask"])
            for i, v in zip(chunk, values.tolist()):
                out[i] = v
    return out


def score_groups(model, tokenizer, groups: list[dict], max_length: int = 256) -> list[list[float]]:
    """RM scores of every answer of every group (each distinct answer forwarded once)."""
    flat = [(g["prompt"], c) for g in groups for c in g["completions"]]
    scores, out = score_texts(model, tokenizer, flat, max_length), []
    for g in groups:
        out.append(scores[:len(g["completions"])])
        scores = scores[len(g["completions"]):]
    return out


def pair_metrics(groups: list[dict], scores: list[list[float]]) -> dict[str, float]:
    """Pairwise accuracy (exact score ties count half) and log loss -log σ(r_w − r_l), per pair."""
    correct, loss, n = 0.0, 0.0, 0
    for g, s in zip(groups, scores, strict=True):
        for w, l in g["pairs"]:
            margin = s[w] - s[l]
            correct += 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0
            loss += -torch.nn.functional.logsigmoid(torch.tensor(margin)).item()
            n += 1
    return {"accuracy": correct / n, "log_loss": loss / n, "pairs": n}


def agreement_with_ceiling(events: list[dict], scores_by_prompt: dict[str, list[float]]) -> dict[str, float]:
    """On prompts ranked by two labelers, over the pairs both ranked strictly: how often the RM
    agrees with a labeler (mean over both) and how often the two labelers agree (the ceiling)."""
    by_prompt = defaultdict(list)
    for e in events:
        by_prompt[e["prompt_id"]].append(e)
    rm_agree = labeler_agree = n = 0.0
    for prompt_id, (a, b) in ((p, es[:2]) for p, es in by_prompt.items() if len(es) >= 2):
        pa, pb, s = preferences(a["ranking"]), preferences(b["ranking"]), scores_by_prompt[prompt_id]
        for (i, j) in pa.keys() & pb.keys():
            rm = 1 if s[i] > s[j] else -1 if s[i] < s[j] else 0
            rm_agree += sum(1.0 if rm == p else 0.5 if rm == 0 else 0.0 for p in (pa[(i, j)], pb[(i, j)])) / 2
            labeler_agree += pa[(i, j)] == pb[(i, j)]
            n += 1
    return {"rm": rm_agree / n, "labelers": labeler_agree / n, "pairs": int(n)}


def calibration(groups: list[dict], scores: list[list[float]], bins: int = 10, seed: int = 0) -> list[dict]:
    """Predicted P(i ≻ j) = σ(r_i − r_j) against how often i was chosen, in equal-width bins.

    A seeded coin flip per pair picks which answer is i, so the orientation never depends on
    who won and both outcomes occur. (Index order would not do: `ranking_groups` numbers the
    answers roughly best first, so the lower index nearly always won.)"""
    rng = random.Random(seed)
    counts = [[0, 0.0, 0.0] for _ in range(bins)]
    for g, s in zip(groups, scores, strict=True):
        for w, l in g["pairs"]:
            i, j = (w, l) if rng.random() < 0.5 else (l, w)
            p = 1 / (1 + math.exp(-(s[i] - s[j])))
            b = counts[min(int(p * bins), bins - 1)]
            b[0] += 1
            b[1] += p
            b[2] += w == i
    return [{"predicted": c[1] / c[0], "observed": c[2] / c[0], "pairs": c[0]} for c in counts if c[0]]


# --- training ----------------------------------------------------------------------------

def ranking_batches(groups: list[dict], size: int, rng: random.Random) -> list[list[dict]]:
    """Shuffled batches of `size` groups, bucketed by answer length to save padding."""
    order = sorted(range(len(groups)), key=lambda i: (max(len(e["input_ids"]) for e in groups[i]["encoded"]),
                                                       rng.random()))
    batches = [[groups[i] for i in order[s:s + size]] for s in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def fit_rankings(model, optimizer, encoded_groups: list[dict], pad_token_id: int, per_batch: int, config, answer_scores,
                 valid_metrics, callback=None, progress: bool = True, desc: str = "reward model") -> list[dict]:
    """The loop the reward model and DPO share: length-bucketed batches of rankings in a seeded order,
    a cosine learning rate (times each parameter group's "scale", if it has one), the ranking loss on
    `answer_scores(batch, groups)` (one score per answer), and `valid_metrics()` (a `pair_metrics`
    result, or None to skip) logged `config.evals_per_epoch` times an epoch. Returns the history; its
    `train_seconds` counts the training steps alone, so what a step costs is not blurred by validation."""
    rng = random.Random(config.seed)
    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(encoded_groups) / per_batch)
    total = config.epochs * steps_per_epoch
    eval_at = {round(steps_per_epoch * k / config.evals_per_epoch) for k in range(1, config.evals_per_epoch + 1)}

    def evaluate(step, losses):
        metrics = valid_metrics()
        if metrics is None:
            return
        history.append({"step": step, "epoch": step / steps_per_epoch,
                        "train_loss": sum(losses) / len(losses) if losses else None,
                        "valid_loss": metrics["log_loss"], "valid_accuracy": metrics["accuracy"],
                        "train_seconds": train_seconds})
        if callback:
            callback(history)

    history, step, train_seconds = [], 0, 0.0
    evaluate(0, [])
    bar = progress_bar(total=total, desc=desc, disable=not progress, mininterval=1.0)
    for _ in range(config.epochs):
        losses = []
        for k, batch_groups in enumerate(ranking_batches(encoded_groups, per_batch, rng), start=1):
            start = time.perf_counter()
            batch = group_batch(batch_groups, pad_token_id, device)
            for group in optimizer.param_groups:
                group["lr"] = group.get("scale", 1.0) * cosine_schedule(step, total, config.warmup_steps, config.lr)
            loss = ranking_loss(answer_scores(batch, batch_groups), batch["winners"], batch["losers"], batch["groups"])
            gradient_step(model, optimizer, loss, config.grad_clip)
            losses.append(loss.item())
            train_seconds += time.perf_counter() - start
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if k in eval_at:
                evaluate(step, losses)
                losses = []
    bar.close()
    return history


def train_reward_model(model, tokenizer, train_groups: list[dict], valid_groups: list[dict], config,
                       callback=None, progress: bool = True):
    """Train in place on ranking groups (or on `as_pairs(...)` for the alternative); returns
    (model, history) with validation log loss and accuracy `config.evals_per_epoch` times an epoch."""
    set_seed(config.seed)
    train = encode_groups(tokenizer, train_groups, config.max_length)
    per_batch = config.groups_per_batch if max(len(g["pairs"]) for g in train_groups) > 1 else config.pairs_per_batch
    head = list(model.score.parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    optimizer = torch.optim.AdamW([{"params": body, "scale": 1.0}, {"params": head, "scale": config.head_lr_scale}],
                                  lr=config.lr, weight_decay=config.weight_decay)

    def answer_scores(batch, _groups):
        model.train()  # dropout as configured while training; scoring below puts eval mode back
        return rewards(model, batch["input_ids"], batch["attention_mask"])

    def valid_metrics():
        if valid_groups:
            return pair_metrics(valid_groups, score_groups(model, tokenizer, valid_groups, config.max_length))
        return None

    history = fit_rankings(model, optimizer, train, tokenizer.pad_token_id, per_batch, config, answer_scores,
                           valid_metrics, callback, progress, desc="reward model")
    model.eval()
    return model, history


def normalize(model, tokenizer, demonstrations: list[dict], max_length: int = 256) -> float:
    """Shift the scores so labeler demonstrations average 0 before RL (the paper's bias); returns
    the mean it removed (0.0, with a note, for a model whose weights cannot hold the shift)."""
    scores = score_texts(model, tokenizer, [(d["prompt"], d["completion"][-1]["content"]) for d in demonstrations],
                         max_length)
    mean = sum(scores) / len(scores)
    try:
        shift_rewards(model, -mean)
    except ValueError as why:
        print(f"rlhf_lab: scores left unnormalized ({why}); the demonstrations average {mean:+.3f}")
        return 0.0
    return mean


def labeler_folds(groups: list[dict], k: int = 5) -> list[set[str]]:
    """The labelers split into k groups (sorted ids dealt round-robin), for cross-validation."""
    labelers = sorted({g["labeler_id"] for g in groups})
    return [set(labelers[i::k]) for i in range(k)]


def cross_validate(policy_path, tokenizer, groups: list[dict], valid_groups: list[dict], config, k: int = 5,
                   progress: bool = False) -> list[dict]:
    """The paper's labeler cross-validation: train on k−1 labeler groups, then measure accuracy on
    the held-out group's rankings (new labelers) and on validation rankings by the training
    labelers (same labelers, new prompts)."""
    results = []
    for n, held_out in enumerate(labeler_folds(groups, k)):
        model = reward_model_from_policy(policy_path)
        train = [g for g in groups if g["labeler_id"] not in held_out]
        model, _ = train_reward_model(model, tokenizer, train, [], config, progress=progress)
        test = [g for g in groups if g["labeler_id"] in held_out]
        seen = [g for g in valid_groups if g["labeler_id"] not in held_out]
        results.append({"fold": n, "held_out_labelers": pair_metrics(test, score_groups(model, tokenizer, test))["accuracy"],
                        "training_labelers": pair_metrics(seen, score_groups(model, tokenizer, seen))["accuracy"]})
    return results
