"""Embeddings per image, not per pair: a shard set is streamed once and only the keys the pair
list names are embedded, so a face used by many pairs costs one forward pass.

Input preparation is what the thesis times (6.4.1): stored 8-bit faces become float RGB 0..255
on the device (the exported module subtracts its own mean), stored latents y_hat are centre
cropped to the model's input size (16 -> 14 when a set keeps the full grid) and become float32.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from cdfv.shards import Damage, ShardSet
from cdfv.shards import spec

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


class InputMismatch(ValueError):
    """A shard set that the model cannot take (wrong kind, channels or size)."""


def _side(size: Any) -> int:
    """The model's square input side from info['input_size'] (an int or an (H, W) pair)."""
    if isinstance(size, int):
        return size
    h, w = size[-2], size[-1]
    if h != w:
        raise InputMismatch(f"non-square model input {size}")
    return int(h)


def centre_crop(latents: np.ndarray, side: int) -> np.ndarray:
    """Centre crop of a (N, M, H, W) latent batch to side x side (16 -> 14 drops one row/column of
    each border, as the trainer's latents were cropped)."""
    h, w = latents.shape[-2:]
    if h < side or w < side:
        raise InputMismatch(f"latent grid {h}x{w} is smaller than the model's {side}x{side}")
    top, left = (h - side) // 2, (w - side) // 2
    return latents[..., top : top + side, left : left + side]


def prepare_images(faces: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, 224, 224, 3) uint8 RGB -> (N, 3, 224, 224) float32 0..255 on device; the copy crosses
    to the device as bytes, a quarter of the float traffic."""
    batch = torch.from_numpy(np.ascontiguousarray(faces)).to(device, non_blocking=True)
    return batch.permute(0, 3, 1, 2).float()


def prepare_latents(latents: np.ndarray, side: int, device: torch.device) -> torch.Tensor:
    """(N, M, H, W) stored y_hat (int16 or float32) -> centre-cropped float32 on device."""
    cropped = np.ascontiguousarray(centre_crop(latents, side))
    return torch.from_numpy(cropped).to(device, non_blocking=True).float()


class Embedder:
    """Turns raw stacked inputs into L2-normalised embeddings with one exported model.

    flip: test-time augmentation for images only: the embedding is the normalised sum of the
    normalised embeddings of the face and its mirror image. It is refused for latents: a mirrored
    latent grid is not the latent of the mirrored face (the analysis transform is not
    flip-equivariant), so it would feed the model an input it never saw."""

    def __init__(self, model: nn.Module, info: dict[str, Any], device: str | torch.device = "cpu",
                 flip: bool = False, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.kind = info["input_kind"]
        if flip and self.kind == "latent":
            raise ValueError("--flip is for image models: a mirrored latent grid is not the latent of the mirrored face")
        self.model = model.eval()
        self.info = info
        self.device = torch.device(device)
        self.flip = flip
        self.precision = precision
        self.side = _side(info["input_size"])

    def prepare(self, raw: np.ndarray) -> torch.Tensor:
        """Input preparation for one stacked batch (timed with the model in complexity)."""
        if self.kind == "image":
            return prepare_images(raw, self.device)
        return prepare_latents(raw, self.side, self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.model(x)
        return nn.functional.normalize(out.float(), dim=1)

    @torch.inference_mode()
    def embed_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings of a prepared (N, C, H, W) float batch on the device."""
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.precision == "tf32"
        try:
            emb = self._forward(x)
            if self.flip:
                emb = nn.functional.normalize(emb + self._forward(torch.flip(x, dims=[3])), dim=1)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        return emb

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        """Embeddings of a raw stacked batch, input preparation included."""
        return self.embed_prepared(self.prepare(raw))


@dataclass
class EmbeddedSet:
    """Embeddings of the requested keys of one shard set, and each sample's json metadata."""

    name: str
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # key -> why its sample could not be read


def check_compatible(embedder: Embedder, shard_set: ShardSet) -> None:
    """Fails early when the set's kind or latent channels do not fit the model."""
    if shard_set.kind != embedder.kind:
        raise InputMismatch(
            f"shard set {shard_set.name!r} holds {shard_set.kind}s but model {embedder.info['model_id']} takes {embedder.kind}s"
        )


def embed_keys(embedder: Embedder, shard_set: ShardSet, keys: set[str], batch_size: int = 128,
               damage: Damage | None = None) -> EmbeddedSet:
    """Streams the set once and embeds the samples whose key is in `keys`; absent or damaged keys
    are not in the result (the caller applies the missing-pair policy, with the damage as reason)."""
    damage = damage if damage is not None else Damage()
    seen = len(damage.lost)
    check_compatible(embedder, shard_set)
    member = spec.IMAGE if shard_set.kind == "image" else spec.LATENT
    result = EmbeddedSet(shard_set.name)
    pending: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        batch = np.stack([a for _, a in pending])
        if shard_set.kind == "latent" and batch.shape[1] != embedder.info["in_channels"]:
            raise InputMismatch(f"shard set {shard_set.name!r} has M={batch.shape[1]} latent channels, the model takes {embedder.info['in_channels']}")
        emb = embedder(batch).cpu().numpy()
        for (key, _), vector in zip(pending, emb):
            result.embeddings[key] = vector
        pending.clear()

    for sample in shard_set.samples((member, spec.META), damage=damage):
        key = sample["__key__"]
        if key not in keys or key in result.meta:
            continue
        result.meta[key] = sample.get(spec.META, {})
        pending.append((key, sample[member]))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    result.damaged = {x.key: f"damaged sample in {x.shard}: {x.problem}" for x in damage.lost[seen:] if x.key in keys}
    return result
