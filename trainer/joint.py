"""An encoder trained together with the compressed-domain student that reads its latents
(Torfason et al. 2018; thesis 7.2): codec training (trainer/codec_train.py) with a transplanted
student (trainer/transplant.py) in the loop, one objective of rate, distortion and the student's
teacher loss, so the latents carry identity where the student reads it. The decoder still
decodes (the distortion term keeps it honest) and the bitstream stays CompressAI's: only the
weights change.

The student reads what `cdfv-prep` would store: y rounded (the hyperprior codecs code round(y);
codecs that round about predicted means are refused), centre-cropped to its 14 x 14 input. The
rounding passes the gradient straight through (the identity derivative of Theis et al. 2017), so
the encoder learns from the student's loss on the latents it will really be given.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdfv.eval.facemodels import latents_label, same_latents, trained_latents
from cdfv.pipeline.codecs import CodecSpec

from .archs import TRANSPLANTS
from .export import embedding_info, load_embedding_model, save_embedding_model
from .transplant import TransplantStudent

ROUNDED_CODECS = ("bmshj2018-factorized", "bmshj2018-hyperprior")  # y_hat = round(y): no predicted means


def load_student(path: Path, codec: CodecSpec, channels: int, start: dict[str, Any]) -> tuple[TransplantStudent, dict[str, Any]]:
    """A transplanted student's model.pt, checked to read the latents of the codec training starts
    from (`start`, as a latent set records its codec): its adapter learned those, not another's."""
    if codec.name not in ROUNDED_CODECS:
        raise ValueError(f"--student: joint training feeds the student round(y); {codec.name} rounds about predicted "
                         f"means, which is not built (one of {', '.join(ROUNDED_CODECS)})")
    model, info = load_embedding_model(path)
    if info["arch"] not in TRANSPLANTS:
        raise ValueError(f"--student {path}: a {info['arch']}, not a transplanted student (cdfv-train --phase transplant)")
    if info["in_channels"] != channels:
        raise ValueError(f"--student {path}: reads latents of {info['in_channels']} channels; {codec.label} has {channels}")
    latents = trained_latents(info)
    if latents and not same_latents(latents, start):
        raise ValueError(f"--student {path}: trained on {latents_label(latents)}, not on the start codec's "
                         f"{latents_label(start)}")
    return model, info


class LatentTap:
    """Holds the analysis transform's output y of the codec's last forward pass (a forward hook on
    g_a, so the codec's own forward, DDP-wrapped or not, runs unchanged)."""

    def __init__(self, codec: nn.Module) -> None:
        self.y: torch.Tensor | None = None
        self.handle = codec.g_a.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.y = output

    def student_input(self, side: int) -> torch.Tensor:
        """round(y) with a straight-through gradient, centre-cropped to side x side."""
        if self.y is None:
            raise RuntimeError("no codec forward pass yet")
        y = self.y
        rounded = y + (torch.round(y) - y).detach()
        top, left = (y.shape[-2] - side) // 2, (y.shape[-1] - side) // 2
        return rounded[..., top : top + side, left : left + side]


def save_student(path: Path, student: TransplantStudent, info: dict[str, Any], codec_meta: dict[str, Any],
                 joint: dict[str, Any]) -> dict[str, Any]:
    """Writes the jointly trained student as a model.pt whose training latents are the new codec's
    (so cdfv-eval pairs it with latents coded by that codec alone) and its recipe; returns its info."""
    train_shards = {**(info.get("train_shards") or {}), "meta": {**((info.get("train_shards") or {}).get("meta") or {}),
                                                                  "codec": codec_meta}}
    kept = {k: v for k, v in info.items() if k not in ("arch", "input_kind", "in_channels", "input_size", "embedding_dim",
                                                       "width", "untrained", "model_id", "train_shards")}
    new = embedding_info(student, info["arch"], untrained=False, train_shards=train_shards,
                         **{**kept, "joint": joint, "started_from": info["model_id"]})
    save_embedding_model(path, student, new)
    return new
