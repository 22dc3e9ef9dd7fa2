"""The identity term of codec training: a frozen face recogniser's distance between the original
face and the codec's reconstruction, beside rate and distortion (Xiao et al. 2022, "Identity
Preserving Loss for Learned Image Compression"), with dlib's network in torch (eval/dlib_arch.py)
as the recogniser, since it is the face model every cdfv report scores decoded faces with.

The reconstruction's chip is cut as the teacher's was cut from the original: by the face's own
face -> chip transform, which `cdfv-prep teacher` stores (json teacher.chip), applied by a bilinear
warp (grid_sample) to the 224 x 224 face inside the 256 x 256 picture the codec codes, so the
gradient reaches every pixel dlib reads. The targets are the teacher's embedding of the original
face (teacher.npy) and, with a junction, dlib's map there (teacher-<junction>.npy), made once by
cdfv-prep rather than recomputed each step.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cdfv.eval.dlib_arch import CHIP, JUNCTIONS, DlibResNet
from cdfv.shards import spec


from .transplant import centred_cosine, relative_map_error

DISTANCES = ("cos", "centred")  # 1 - cos to the teacher, or 1 - cos about the teacher embeddings' mean
PAD = (spec.CODED_SIZE - spec.FACE_SIZE) // 2


def chip_grid(face_to_chip: torch.Tensor, side: int = CHIP) -> torch.Tensor:
    """(N, side, side, 2) grid_sample coordinates (align_corners=False) in the zero-padded
    256 x 256 picture of each chip pixel's centre: chip pixel (u, v) is the face pixel the inverse
    of the face's (2 x 3) face -> chip transform takes it to, moved by the padding."""
    n = len(face_to_chip)
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=face_to_chip.device).expand(n, 1, 3)
    chip_to_face = torch.linalg.inv(torch.cat([face_to_chip.double(), bottom], 1))[:, :2]  # (N, 2, 3)
    centres = torch.arange(side, dtype=torch.float64, device=face_to_chip.device)
    v, u = torch.meshgrid(centres, centres, indexing="ij")  # v: rows (y), u: columns (x)
    points = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, -1, 3) @ chip_to_face.transpose(1, 2)
    normalised = (points + PAD + 0.5) / spec.CODED_SIZE * 2.0 - 1.0
    return normalised.reshape(n, side, side, 2).float()


def chips_of(pictures: torch.Tensor, face_to_chip: torch.Tensor) -> torch.Tensor:
    """(N, 3, 150, 150) chips, RGB 0..255 as dlib's network takes them, cut from (N, 3, 256, 256)
    padded pictures in [0, 1] (clamped, as a decoded face is stored) by each face's transform."""
    grid = chip_grid(face_to_chip).to(pictures.dtype)
    return F.grid_sample(pictures.clamp(0, 1) * 255.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class IdentityLoss(nn.Module):
    """distance(dlib(chip(x_hat)), teacher embedding) [+ map_weight x the map's relative squared
    error at `junction`], per face, averaged; dlib's weights frozen. `centre` (the teacher
    embeddings' mean) is needed by the centred distance."""

    def __init__(self, network: DlibResNet, distance: str = "cos", junction: str | None = None, map_weight: float = 1.0,
                 centre: torch.Tensor | None = None) -> None:
        super().__init__()
        if distance not in DISTANCES:
            raise ValueError(f"identity distance {distance!r}: one of {', '.join(DISTANCES)}")
        if distance == "centred" and centre is None:
            raise ValueError("the centred identity distance needs the teacher embeddings' mean")
        if junction is not None and junction not in JUNCTIONS:
            raise ValueError(f"unknown junction {junction!r}; dlib's are {', '.join(JUNCTIONS)}")
        self.network = network.eval().requires_grad_(False)
        self.distance = distance
        self.junction = junction
        self.map_weight = map_weight
        self.register_buffer("centre", centre if centre is not None else torch.zeros(network.fc.out_features))

    def train(self, mode: bool = True) -> "IdentityLoss":
        super().train(mode)
        self.network.eval()  # dlib's layers are fixed affines either way; keep it explicit
        return self

    def forward(self, x_hat: torch.Tensor, target: torch.Tensor, face_to_chip: torch.Tensor,
                target_map: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, per-batch means of its parts) for reconstructions (N, 3, 256, 256) in [0, 1], the
        teacher's unit embeddings of the originals (N, D), their (N, 2, 3) face -> chip transforms
        and, with a junction, the teacher's maps there."""
        if (target_map is None) != (self.junction is None):
            raise ValueError(f"the identity term at junction {self.junction or 'none'} was given "
                             f"{'no' if target_map is None else 'a'} teacher map")
        target = target.float()
        chips = chips_of(x_hat, face_to_chip)
        if self.junction is None:
            embeddings = self.network(chips).float()
        else:
            junction_map = self.network.junction_map(chips, self.junction)
            embeddings = self.network.from_map(junction_map, self.junction).float()
        cos = F.cosine_similarity(embeddings, target, dim=1)
        distance = 1.0 - (centred_cosine(embeddings, target, self.centre) if self.distance == "centred" else cos)
        loss = distance.mean()
        stats: dict[str, Any] = {"id_cos": cos.mean().item(), "id_distance": loss.item()}
        if self.junction is not None:
            relative = relative_map_error(junction_map, target_map).mean()
            loss = loss + self.map_weight * relative
            stats["id_map"] = relative.item()
        return loss, stats

