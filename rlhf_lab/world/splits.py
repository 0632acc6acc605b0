"""Prompts as the paper collected them: from users, deduplicated, capped, split by user.

InstructGPT's prompts came from API users. The paper removed prompts sharing a long
common prefix, capped the number of prompts per user, and split train / validation /
test *by user*, so no test prompt comes from someone whose prompts were trained on.
"""
from __future__ import annotations

import random

from .tasks import Task

SPLITS = {"train": 0.8, "validation": 0.1, "test": 0.1}
PREFIX_CHARS = 100  # prompts whose first 100 characters agree count as duplicates
CAP_PER_USER = 20  # the paper capped at 200 prompts per user; our users are smaller


def _prompt_text(task: Task) -> str:
    return "\n".join(m["content"] for m in task.messages)


def make_prompts(world, n_users: int = 800) -> list[dict]:
    """Prompt records {"prompt_id", "user_id", "split", "family", "prompt", "spec"}."""
    rng = random.Random(f"prompts-{world.seed}")
    users = [f"u{i:04d}" for i in range(n_users)]
    order = users[:]
    rng.shuffle(order)
    cut1 = int(SPLITS["train"] * n_users)
    cut2 = cut1 + int(SPLITS["validation"] * n_users)
    split_of = {u: "train" if i < cut1 else "validation" if i < cut2 else "test" for i, u in enumerate(order)}

    records, seen_prefixes = [], set()
    for user_id in users:
        n_wanted = min(CAP_PER_USER, 1 + int(rng.expovariate(1 / 6)))
        for _ in range(n_wanted):
            task = world.sample_task(rng)
            prefix = _prompt_text(task)[:PREFIX_CHARS]
            if prefix in seen_prefixes:
                continue
            seen_prefixes.add(prefix)
            records.append({"prompt_id": f"p{len(records):05d}", "user_id": user_id, "split": split_of[user_id],
                            "family": task.family, "prompt": task.messages, "spec": task.spec})
    return records


def demonstration(world, record: dict) -> dict:
    """A labeler's demonstration for one prompt, in prompt/completion conversational form."""
    rng = random.Random(f"demo-{world.seed}-{record['prompt_id']}")
    task = world.task_from_record(record)
    return {"prompt_id": record["prompt_id"], "user_id": record["user_id"], "family": record["family"],
            "prompt": record["prompt"], "completion": [{"role": "assistant", "content": world.demonstrate(task, rng)}]}
