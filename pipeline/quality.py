"""Reconstruction quality of decoded faces: PSNR and MS-SSIM on 8-bit RGB, as Figure 46 plots them."""
from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB over all RGB samples, peak 255; inf for identical pictures."""
    if reference.shape != decoded.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {decoded.shape}")
    mse = float(np.mean((reference.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(reference: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM (pytorch_msssim, 5 scales, Gaussian window 11) over RGB, data range 255."""
    if reference.shape != decoded.shape:
        raise ValueError(f"shape mismatch {reference.shape} vs {decoded.shape}")
    a = torch.from_numpy(np.ascontiguousarray(reference)).permute(2, 0, 1)[None].double()
    b = torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1)[None].double()
    return float(ms_ssim(a, b, data_range=255.0, size_average=True))
