"""The shipped data/: reproducible byte for byte, loadable with `datasets`, in TRL's formats."""
import pytest

from rlhf_lab import DATA_DIR
from rlhf_lab.jsonl import load_json_dataset, read_jsonl
from rlhf_lab.world import load_world
from rlhf_lab.world.export import write_data


def test_python_m_rlhf_lab_data_reproduces_data_exactly(tmp_path):
    counts = write_data(tmp_path, seed=0)
    for name in counts:
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), f"data/{name} differs"


def test_demonstrations_load_with_datasets_in_conversational_prompt_completion_form():
    ds = load_json_dataset(DATA_DIR / "demonstrations" / "validation.jsonl", required=("prompt", "completion"))
    row = ds[0]
    assert row["prompt"][-1]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    assert len(ds) == len(read_jsonl(DATA_DIR / "demonstrations" / "validation.jsonl"))


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_prompts_rebuild_tasks_that_the_checker_can_score(split):
    world = load_world(0)
    records = read_jsonl(DATA_DIR / "prompts" / f"{split}.jsonl", required=("prompt_id", "family", "prompt", "spec"))
    assert {r["split"] for r in records} == {split}
    for record in records[:50]:
        task = world.task_from_record(record)
        assert 0 <= world.score(task, "I do not know.").overall() <= 1


def test_facts_file_is_the_worlds_truth():
    assert read_jsonl(DATA_DIR / "world" / "facts.jsonl") == load_world(0).facts.to_records()


def test_shipped_base_models_share_the_tokenizer_and_the_large_one_is_several_times_bigger():
    """Notebook 07's stand-in for GPT-3: the config `pretrain --large` builds, a better validation loss."""
    import json

    from rlhf_lab.config import ModelConfig
    from rlhf_lab.models import count_parameters, load_policy

    small, small_tok = load_policy(DATA_DIR / "base-model", device="cpu")
    large, large_tok = load_policy(DATA_DIR / "base-model-large", device="cpu")
    config = ModelConfig.large()
    assert (large.config.n_embd, large.config.n_layer, large.config.n_head) == (config.n_embd, config.n_layer,
                                                                                config.n_head)
    assert count_parameters(large) > 3 * count_parameters(small)
    assert small_tok.get_vocab() == large_tok.get_vocab()
    loss = {name: json.loads((DATA_DIR / name / "pretrain_history.json").read_text())[-1]["valid_loss"]
            for name in ("base-model", "base-model-large")}
    assert loss["base-model-large"] < loss["base-model"]
