"""A model's linear layers on oneDNN while it samples.

torch computes a float32 linear layer on the CPU with MKL's matrix product, and MKL runs its AVX2 code on AMD
processors. oneDNN, also built into torch, uses the widest vector instructions the processor has. On the
course machines (AMD EPYC, AVX-512) it computed the course model's layers about 2x faster, in float32 as well:
on a 192-wide input exactly the same numbers, on the 768-wide one the same up to float rounding (a different
order of summation). Its kernel has no gradient, so `onednn_linears` is for sampling only.
"""
from __future__ import annotations

import platform
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D


# Below this many rows torch's own path is quicker: a oneDNN call costs about 10 µs more (measured on the course
# model's layers: 1 row 2.2x slower, 16 rows even, 128 rows 2x faster).
MIN_ROWS = 16


def _linear(x: torch.Tensor, *, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias, on oneDNN from MIN_ROWS rows of x on."""
    if x.numel() < MIN_ROWS * x.shape[-1]:
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _out_by_in_weight(module: nn.Module) -> torch.Tensor | None:
    """The layer's weight as (out, in), as a linear layer holds it; GPT-2's Conv1D holds it transposed."""
    if type(module) is nn.Linear:
        return module.weight
    if type(module) is Conv1D:
        return module.weight.t()
    return None


def onednn_usable(model: nn.Module) -> bool:
    """Whether `onednn_linears` changes anything for `model`: float32 weights on an x86-64 CPU, with a torch built
    with oneDNN. Elsewhere (ARM, Apple silicon) torch's own matrix product is the one tuned for the processor."""
    parameter = next(model.parameters(), None)
    return (parameter is not None and parameter.device.type == "cpu" and parameter.dtype == torch.float32
            and platform.machine().lower() in {"x86_64", "amd64"} and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


@contextmanager
def onednn_linears(model: nn.Module):
    """Within the block, the model's linear layers (torch's and GPT-2's Conv1D) compute on oneDNN; under no_grad or
    inference mode only. Yields whether any layer was switched. A layer whose forward is already replaced on the
    instance (accelerate's hooks do that) is left alone."""
    switched = []
    if onednn_usable(model):
        for module in model.modules():
            weight = _out_by_in_weight(module)
            if weight is not None and "forward" not in vars(module):
                module.forward = partial(_linear, weight=weight, bias=module.bias)
                switched.append(module)
    try:
        yield bool(switched)
    finally:
        for module in switched:
            del module.forward
