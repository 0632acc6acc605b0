import copy

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from rlhf_lab import onednn
from rlhf_lab.onednn import onednn_linears, onednn_usable
from test_generation import _tiny_llama

needs_onednn = pytest.mark.skipif(not onednn_usable(nn.Linear(2, 2)), reason="this torch or CPU has no oneDNN path")


def _linear_layers(model) -> list[nn.Module]:
    return [m for m in model.modules() if type(m) in (nn.Linear, Conv1D)]


@needs_onednn
@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_every_linear_layer_runs_on_onednn_with_the_plain_outputs(tiny_model, tiny_tokenizer, monkeypatch, architecture):
    model = tiny_model if architecture == "gpt2" else _tiny_llama(tiny_tokenizer)
    kernel, calls = torch.ops.mkldnn._linear_pointwise, []
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda x, *args: calls.append(x.shape) or kernel(x, *args))
    for rows, expected_calls in ((onednn.MIN_ROWS, len(_linear_layers(model))), (onednn.MIN_ROWS - 1, 0)):
        ids = torch.randint(2, len(tiny_tokenizer), (1, rows))
        calls.clear()
        with torch.inference_mode():
            plain = model(input_ids=ids).logits
            with onednn_linears(model) as switched:
                fast = model(input_ids=ids).logits
        assert switched and len(calls) == expected_calls  # GPT-2's Conv1D layers, Llama's nn.Linear; few rows: none
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
        assert not any("forward" in vars(m) for m in model.modules())  # switched back


@needs_onednn
def test_a_layer_with_its_own_forward_is_left_alone(tiny_model):
    model = copy.deepcopy(tiny_model)
    layer = _linear_layers(model)[0]
    hooked = layer.forward  # as accelerate's hooks replace it on the instance
    layer.forward = hooked
    with onednn_linears(model):
        assert layer.forward is hooked
        assert "forward" in vars(_linear_layers(model)[1])
    assert layer.forward is hooked and "forward" not in vars(_linear_layers(model)[1])


def test_models_off_float32_are_left_as_they_are(tiny_model):
    model = copy.deepcopy(tiny_model).double()
    assert not onednn_usable(model)
    with onednn_linears(model) as switched:
        assert not switched and not any("forward" in vars(m) for m in model.modules())


@needs_onednn
def test_layers_switch_back_after_an_error(tiny_model):
    model = copy.deepcopy(tiny_model)
    with pytest.raises(RuntimeError, match="inside"), onednn_linears(model):
        raise RuntimeError("inside")
    assert not any("forward" in vars(m) for m in model.modules())
