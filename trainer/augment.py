"""Batch augmentation on the training device (thesis 5.5.2 and 6.3.2).

Done per batch on the GPU rather than per sample in the loader, so the loader only decodes and
never becomes the bottleneck. Random draws come from one CPU generator whose state goes into
checkpoints, so a resumed run sees the same crops and grayscale flips.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as torchvision's Grayscale


@dataclass(frozen=True)
class AugmentConfig:
    resize: int = 256  # images: bilinear resize before the random crop (VGGFace2: 112 -> 256)
    crop: int = 224  # images: random crop side
    gray_p: float = 0.2  # images: probability of a grayscale copy
    latent_crop: int = 14  # latents: random crop side when larger latents (16x16) were stored


def _crop(x: torch.Tensor, size: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Per-sample crops of side `size` at (top, left) in one gather."""
    n, c = x.shape[:2]
    ar = torch.arange(size, device=x.device)
    rows = (top.to(x.device)[:, None] + ar)[:, None, :, None]
    cols = (left.to(x.device)[:, None] + ar)[:, None, None, :]
    return x[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], rows, cols]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    return x[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class ImageDraw:
    """The random part of one batch's image augmentation: crop corners and grayscale flags."""

    top: torch.Tensor
    left: torch.Tensor
    gray: torch.Tensor


def draw_images(n: int, cfg: AugmentConfig, gen: torch.Generator) -> ImageDraw:
    top = torch.randint(0, cfg.resize - cfg.crop + 1, (n,), generator=gen)
    left = torch.randint(0, cfg.resize - cfg.crop + 1, (n,), generator=gen)
    return ImageDraw(top, left, torch.rand(n, generator=gen) < cfg.gray_p)


def apply_images(x: torch.Tensor, cfg: AugmentConfig, draw: ImageDraw) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> float 0..255: resize, crop at the drawn corners, grayscale the
    drawn ones."""
    x = F.interpolate(x.float(), size=(cfg.resize, cfg.resize), mode="bilinear", align_corners=False)
    x = _crop(x, cfg.crop, draw.top, draw.left)
    gray = draw.gray.to(x.device)
    luma = torch.einsum("nchw,c->nhw", x, torch.tensor(GRAY_WEIGHTS, device=x.device))[:, None]
    return torch.where(gray[:, None, None, None], luma.expand_as(x), x).clamp_(0, 255)


def augment_images(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> float 0..255: resize, random crop, random grayscale (thesis
    5.5.2); the same function makes the pipeline's materialised views of faces."""
    return apply_images(x, cfg, draw_images(x.shape[0], cfg, gen))


def augment_latents(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Random latent_crop x latent_crop crops when the stored latents are larger."""
    n, _, h, w = x.shape
    if h == cfg.latent_crop and w == cfg.latent_crop:
        return x
    top = torch.randint(0, h - cfg.latent_crop + 1, (n,), generator=gen)
    left = torch.randint(0, w - cfg.latent_crop + 1, (n,), generator=gen)
    return _crop(x, cfg.latent_crop, top, left)


def prepare_eval(x: torch.Tensor, kind: str, cfg: AugmentConfig) -> torch.Tensor:
    """Evaluation inputs: images as float 0..255 unchanged, latents centre-cropped."""
    if kind == "image":
        return x.float()
    return center_crop(x, cfg.latent_crop)


def prepare_train(x: torch.Tensor, kind: str, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    return augment_images(x, cfg, gen) if kind == "image" else augment_latents(x, cfg, gen)
