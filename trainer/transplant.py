"""Transplanted students (issue 16): a compressed-domain face model made of a small trained adapter,
from a learned codec's latent (M x 14 x 14) to the feature map after one residual level of dlib's
ResNet (eval/dlib_arch.py: level0 32 x 35 x 35, level1 64 x 17 x 17, level2 128 x 8 x 8 on its
150 chip), and dlib's remaining levels and FC with dlib's own weights.

The grids differ: the 14 x 14 latent covers the 224 x 224 aligned face at 16 px a cell (the face
sits centred in the 256 x 256 picture the codec codes, and the 16 -> 14 crop drops one cell a
side), while dlib sees a 150 chip warped from that face by its own 5-point fit. The adapter
bridges them with a FIXED resampling: 1x1 and 3x3 convolutions on the 14 x 14 grid, a bilinear
resampling of their output at the face pixel under each junction cell's centre (the inverse of one
face -> chip transform, the median of the training faces' own, which `cdfv-prep teacher --maps`
stores per face), then a 3x3 convolution to the junction's channels and a ReLU (a residual level
ends in one). A per-face transform (each face's own chip transform applied to the map, a first
step of latent-domain alignment, thesis 7.2) is not built; results/transplant-curves/README.md
measures how far faces stray from the fixed one.

Training (trainer/train.py, phase "transplant") matches the teacher's map of the same augmented
view (relative squared error, scale-free across junctions) and its embedding (1 - cos), with the
tail frozen unless --tail-lr says otherwise.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cdfv.eval.dlib_arch import CHIP, JUNCTIONS, DlibResNet, junction_block
from cdfv.shards import Damage, ShardSet, spec

LATENT_SIDE = 14
ADAPTER_WIDTH = 128


def sampling_grid(face_to_chip: Sequence[Sequence[float]], side: int) -> torch.Tensor:
    """(1, side, side, 2) grid_sample coordinates (align_corners=False) in the 14 x 14 latent of
    the face pixel under each junction cell's centre: cell j's centre is chip pixel
    (j + 0.5) * 150 / side - 0.5, taken back to the face by the inverse of `face_to_chip` (2 x 3)."""
    matrix = np.vstack([np.asarray(face_to_chip, dtype=np.float64), [0.0, 0.0, 1.0]])
    chip_to_face = np.linalg.inv(matrix)[:2]
    centres = (np.arange(side) + 0.5) * CHIP / side - 0.5
    u, v = np.meshgrid(centres, centres)  # u: columns (x), v: rows (y)
    points = np.stack([u, v, np.ones_like(u)], axis=-1) @ chip_to_face.T  # (side, side, 2) face pixels (x, y)
    normalised = (points + 0.5) / spec.FACE_SIZE * 2.0 - 1.0
    return torch.from_numpy(normalised).float()[None]


def median_transform(transforms: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    """The element-wise median of face -> chip transforms: the fixed one a student resamples by."""
    if not len(transforms):
        raise ValueError("no face -> chip transform to take the median of (teacher.chip in the samples' json)")
    return np.median(np.asarray(transforms, dtype=np.float64), axis=0).round(6).tolist()


def _conv_bn(inputs: int, outputs: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)]


class Adapter(nn.Module):
    """Latent (M x 14 x 14, y_hat as stored) -> a junction's map (module docstring)."""

    def __init__(self, in_channels: int, junction: str, face_to_chip: Sequence[Sequence[float]], width: int) -> None:
        super().__init__()
        channels, side = JUNCTIONS[junction]
        self.latent = nn.Sequential(nn.BatchNorm2d(in_channels), *_conv_bn(in_channels, width, 1), *_conv_bn(width, width, 3),
                                    *_conv_bn(width, width, 3))
        self.register_buffer("grid", sampling_grid(face_to_chip, side))
        self.junction = nn.Sequential(nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.latent(x)
        y = F.grid_sample(y, self.grid.expand(len(y), -1, -1, -1).to(y.dtype), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        return self.junction(y)


class TransplantStudent(nn.Module):
    """Adapter, then dlib's residual blocks after the junction (`tail`) and its 128-d FC: raw
    latents in, (N, 128) descriptors (not normalised) out, as DlibResNet gives for chips."""

    def __init__(self, in_channels: int, junction: str, face_to_chip: Sequence[Sequence[float]],
                 adapter_width: int = ADAPTER_WIDTH) -> None:
        super().__init__()
        first = junction_block(junction)
        with torch.device("meta"):
            shape = DlibResNet()
        self.adapter = Adapter(in_channels, junction, face_to_chip, adapter_width)
        self.tail = nn.Sequential(*shape.blocks[first:]).to_empty(device="cpu")
        self.fc = nn.Linear(shape.fc.in_features, shape.fc.out_features, bias=False)
        self.kwargs = {"in_channels": in_channels, "junction": junction,
                       "face_to_chip": [list(map(float, row)) for row in face_to_chip], "adapter_width": adapter_width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_map(self.adapter(x))

    def from_map(self, junction_map: torch.Tensor) -> torch.Tensor:
        return self.fc(self.tail(junction_map).mean(dim=(2, 3)))

    def copy_teacher(self, teacher: DlibResNet) -> None:
        """dlib's weights into the tail and the FC."""
        first = junction_block(self.kwargs["junction"])
        with torch.no_grad():
            for own, theirs in zip(self.tail, teacher.blocks[first:], strict=True):
                own.load_state_dict(theirs.state_dict())
            self.fc.weight.copy_(teacher.fc.weight)

    def tail_parameters(self) -> list[nn.Parameter]:
        return [*self.tail.parameters(), *self.fc.parameters()]


def build_transplant(in_channels: int, junction: str, face_to_chip: Sequence[Sequence[float]],
                     adapter_width: int = ADAPTER_WIDTH) -> TransplantStudent:
    """The model a transplant model.pt rebuilds (its weights then loaded from the file)."""
    if junction not in JUNCTIONS:
        raise ValueError(f"unknown junction {junction!r}; dlib's are {', '.join(JUNCTIONS)}")
    if np.shape(face_to_chip) != (2, 3):
        raise ValueError(f"face_to_chip must be a 2 x 3 affine transform, got shape {np.shape(face_to_chip)}")
    return TransplantStudent(in_channels, junction, face_to_chip, adapter_width)


def teacher_mean(shard_set: ShardSet, damage: Damage) -> torch.Tensor:
    """The mean of a set's teacher embeddings (member teacher.npy)."""
    vectors = [s[spec.TEACHER] for s in shard_set.samples((spec.TEACHER,), damage=damage)]
    return torch.from_numpy(np.mean(np.stack(vectors).astype(np.float64), axis=0)).float()


def centred_cosine(embeddings: torch.Tensor, target: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Per face, the cosine of the normalised embedding and the (unit) teacher embedding after
    subtracting the teacher embeddings' mean from both (TransplantTask says why)."""
    return F.cosine_similarity(F.normalize(embeddings, dim=1) - centre, target - centre, dim=1)


def relative_map_error(junction_map: torch.Tensor, target_map: torch.Tensor) -> torch.Tensor:
    """Per face, ||s - t||^2 / ||t||^2 of a feature map against the teacher's: scale-free across
    junctions, so one weight serves each."""
    error = (junction_map.float() - target_map.float()).pow(2).flatten(1).sum(1)
    return error / target_map.float().pow(2).flatten(1).sum(1).clamp_min(1e-6)


class TransplantTask(nn.Module):
    """map_weight x relative squared error of the junction map (||s - t||^2 / ||t||^2 per face) +
    (1 - cos) to the teacher's embedding, + identity_weight x ArcFace with a head. The teacher
    tensor of a batch is the embedding followed by the flattened map (trainer/data.ShardStream).

    With `centre` (the teacher embeddings' mean) the cosine is taken after subtracting it from both
    embeddings: dlib's unit descriptors crowd in a narrow cone (on CelebA views the mean has norm
    0.92, two different people's cosine is 0.84 on average and 0.92 at the 99th percentile), so a
    plain cosine of 0.91 to the teacher is still as far as another person, and its loss has almost
    no gradient left to close the gap; about the mean, different people are at 0 and the loss sees
    the part of the embedding that tells people apart."""

    def __init__(self, model: TransplantStudent, head: nn.Module | None, identity_weight: float, map_weight: float,
                 frozen_tail: bool, centre: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.identity_weight = identity_weight
        self.map_weight = map_weight
        self.register_buffer("centre", centre if centre is not None else torch.zeros(model.fc.out_features))
        if frozen_tail:
            for p in model.tail_parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dim = self.model.fc.out_features
        channels, side = JUNCTIONS[self.model.kwargs["junction"]]
        target_map = teacher[:, dim:].reshape(len(x), channels, side, side)
        junction_map = self.model.adapter(x)
        embeddings = self.model.from_map(junction_map).float()
        target = teacher[:, :dim].float()
        cos = F.cosine_similarity(embeddings, target, dim=1)
        centred = centred_cosine(embeddings, target, self.centre)
        relative = relative_map_error(junction_map, target_map)
        loss = self.map_weight * relative.mean() + (1.0 - centred).mean()
        sums: dict[str, Any] = {"cos": cos.detach().sum(), "centred_cos": centred.detach().sum(), "map": relative.detach().sum()}
        if self.head is not None:
            identity, cosine = self.head(embeddings, labels)
            loss = loss + self.identity_weight * identity
            sums["acc"] = (cosine.argmax(1) == labels).sum()
        return loss, sums
