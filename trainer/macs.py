"""Multiply-accumulate counts the way the thesis (Table 7) reports them.

Only Conv2d, ConvTranspose2d and Linear are charged, as the JPEG AI framework the thesis used
does: a convolution costs H_out * W_out * C_out * (C_in / groups) * kh * kw (a transposed one at
its output resolution), a linear layer in * out. Pooling, norms and activations are free.
"""
from __future__ import annotations

import torch
from torch import nn


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kh, kw = module.kernel_size
        c_in = module.in_channels // module.groups
        return output.shape[-2] * output.shape[-1] * module.out_channels * c_in * kh * kw
    return module.in_features * module.out_features


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass of a single input of `input_shape` (C, H, W), batch of 1."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, output)

    counted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
