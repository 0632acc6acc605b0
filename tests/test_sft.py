"""The SFT loop end to end on the shipped base model (a smoke run of a few seconds)."""
import pytest
import torch

from rlhf_lab.config import SFTConfig
from rlhf_lab.models import load_policy
from rlhf_lab.pipeline import train_sft_model
from rlhf_lab.sft import set_dropout


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    model, tokenizer, history = train_sft_model(SFTConfig.smoke(), out_dir=out, progress=False)
    return out, model, tokenizer, history


def test_history_has_loss_and_score_each_epoch_and_selects_the_best_score(smoke_run):
    _, _, _, history = smoke_run
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert h["train_loss"] > 0 and h["valid_loss"] > 0 and 0 <= h["valid_overall"] <= 1
    selected = [h for h in history if h["selected"]]
    assert len(selected) == 1
    assert selected[0]["valid_overall"] == max(h["valid_overall"] for h in history)


def test_checkpoint_round_trips_with_from_pretrained(smoke_run):
    out, model, tokenizer, _ = smoke_run
    loaded, loaded_tokenizer = load_policy(out / "model", device=model.device)
    ids = tokenizer("The zibbet lives in the", return_tensors="pt")["input_ids"].to(model.device)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    assert (out / "history.json").exists()


def test_returned_model_has_dropout_off(smoke_run):
    _, model, _, _ = smoke_run
    assert not model.training
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_set_dropout_reaches_every_dropout_layer(tiny_model):
    set_dropout(tiny_model, 0.2)
    layers = {name: m.p for name, m in tiny_model.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert "transformer.drop" in layers and any(n.endswith("attn.resid_dropout") for n in layers)
    assert all(p == 0.2 for p in layers.values())  # embeddings, attention weights and residual
    set_dropout(tiny_model, 0.0)
