"""Multiply-accumulate counts, the way the thesis (Table 7) reports them and as performed.

Only Conv2d, ConvTranspose2d and Linear are charged, as the JPEG AI framework the thesis used
does: a convolution costs H_out * W_out * C_out * (C_in / groups) * kh * kw, a linear layer
in * out. Pooling, norms and activations are free. A transposed convolution multiplies each INPUT
pixel by its kernel: H_in * W_in * C_in * (C_out / groups) * kh * kw (`transposed_at="input"`,
the multiplications done). Table 7 charges it at its output resolution instead
(`transposed_at="output"`), stride^2 times more: 4x for the codecs' stride-2 synthesis layers.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

TransposedAt = Literal["output", "input"]


def _layer_macs(module: nn.Module, input: torch.Tensor, output: torch.Tensor, transposed_at: TransposedAt) -> int:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        kh, kw = module.kernel_size
        per_pixel = module.out_channels * (module.in_channels // module.groups) * kh * kw
        at = input if isinstance(module, nn.ConvTranspose2d) and transposed_at == "input" else output
        return at.shape[-2] * at.shape[-1] * per_pixel
    return module.in_features * module.out_features


def count_macs(model: nn.Module, input_shape: tuple[int, ...], transposed_at: TransposedAt = "output") -> int:
    """MACs of one forward pass of a single input of `input_shape` (C, H, W), batch of 1;
    `transposed_at` says where transposed convolutions are charged (module docstring)."""
    if transposed_at not in ("output", "input"):
        raise ValueError(f"transposed_at must be 'output' or 'input', not {transposed_at!r}")
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs[0], output, transposed_at)

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
