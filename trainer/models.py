"""Face models: ResNet50 (VGGFace2's Caffe-style variant), cResNet39 and cResNet50 on latents.

Module names follow cydonia999/VGGFace2-pytorch (conv1, bn1, layer1.0.downsample.0, fc, ...), so
its converted Caffe weights load by name (cdfv.trainer.vggface2_weights) and cResNet50's stages take
ResNet50's weights unchanged. Every model maps RAW inputs (RGB 0..255 images, y_hat latents as
stored) to logits or embeddings: the input normalisation is a module inside the network, so an
exported model needs nothing else to be used.
"""
from __future__ import annotations

import torch
from torch import nn

from .archs import ARCHS
VGGFACE2_IDENTITIES = 8631
RGB_MEAN = (131.0912, 103.8827, 91.4953)  # VGGFace2 training-set mean, RGB order, 0..255 scale
EXPANSION = 4
STAGE_BLOCKS = (3, 4, 6, 3)


class Normalize(nn.Module):
    """(x - mean) / scale per channel, held as buffers so exported weights carry them."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.reshape(1, -1, 1, 1).float())
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class Bottleneck(nn.Module):
    """Caffe-style bottleneck (VGGFace2): the stride sits on the first 1x1 conv, not the 3x3."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_planes, planes, stride)]
    layers += [Bottleneck(planes * EXPANSION, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class FaceResNet(nn.Module):
    """A stem, a run of bottleneck stages, average pooling and one FC head (`fc`).

    `stem` is everything before the first kept stage (ResNet50: conv1/bn1/relu/maxpool; cResNet50:
    pixel shuffle and a conv; cResNet39: nothing). `stages` maps each kept stage's name
    (layer1..layer4) to its (planes, blocks, stride)."""

    def __init__(
        self,
        normalize: Normalize,
        stem: dict[str, nn.Module],
        stem_channels: int,
        stages: dict[str, tuple[int, int, int]],
        out_features: int,
    ) -> None:
        super().__init__()
        self.normalize = normalize
        for name, module in stem.items():
            self.add_module(name, module)
        self.stem_names = tuple(stem)
        in_planes = stem_channels
        for name, (planes, blocks, stride) in stages.items():
            self.add_module(name, make_stage(in_planes, planes, blocks, stride))
            in_planes = planes * EXPANSION
        self.stage_names = tuple(stages)
        self.feature_dim = in_planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled descriptor before the head (feature_dim wide)."""
        x = self.normalize(x)
        for name in self.stem_names + self.stage_names:
            x = getattr(self, name)(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def replace_head(model: FaceResNet, out_features: int) -> nn.Linear:
    """Puts a fresh FC (identification -> embedding, thesis phase 2) on the model; returns it."""
    model.fc = nn.Linear(model.feature_dim, out_features).to(model.fc.weight.device)
    return model.fc


def _stage_widths(width: int) -> list[int]:
    return [width, width * 2, width * 4, width * 8]


def build_model(
    arch: str,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    embedding_dim: int = 2048,
    width: int = 64,
) -> FaceResNet:
    """Builds one of ARCHS. With num_classes the head is the identification FC, otherwise the
    embedding FC. in_channels is M for latent models (required) and 3 for ResNet50; width scales
    every stage (64 is the thesis model; smaller values give tiny models for tests)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    out_features = num_classes if num_classes is not None else embedding_dim
    planes = _stage_widths(width)
    if arch == "resnet50":
        if in_channels not in (None, 3):
            raise ValueError(f"resnet50 takes 3-channel RGB images, not {in_channels} channels")
        stem = {
            "conv1": nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            "bn1": nn.BatchNorm2d(width),
            "relu": nn.ReLU(inplace=True),
            "maxpool": nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True),
        }
        normalize = Normalize(torch.tensor(RGB_MEAN), torch.ones(3))
        stages = {f"layer{i + 1}": (planes[i], STAGE_BLOCKS[i], 1 if i == 0 else 2) for i in range(4)}
        return FaceResNet(normalize, stem, width, stages, out_features)
    if in_channels is None:
        raise ValueError(f"{arch} needs in_channels (the latent's M)")
    normalize = Normalize(torch.zeros(in_channels), torch.ones(in_channels))
    if arch == "cresnet39":
        # thesis Table 6: root and stage 1 removed; stages 2 and 3 keep 14x14, stage 4 halves it
        stages = {"layer2": (planes[1], 4, 1), "layer3": (planes[2], 6, 1), "layer4": (planes[3], 3, 2)}
        return FaceResNet(normalize, {}, in_channels, stages, out_features)
    if in_channels % 16:
        raise ValueError(f"cresnet50's pixel shuffle x4 needs M divisible by 16, got {in_channels}")
    # thesis 7.2: M x 14 x 14 -> M/16 x 56 x 56, a conv to the stem width, then all four stages
    stem = {
        "shuffle": nn.PixelShuffle(4),
        "conv1": nn.Conv2d(in_channels // 16, width, 3, padding=1, bias=False),
        "bn1": nn.BatchNorm2d(width),
        "relu": nn.ReLU(inplace=True),
    }
    stages = {f"layer{i + 1}": (planes[i], STAGE_BLOCKS[i], 1 if i == 0 else 2) for i in range(4)}
    return FaceResNet(normalize, stem, width, stages, out_features)


def arch_kwargs(model: FaceResNet) -> dict[str, int]:
    """The build_model keyword arguments that rebuild `model` with its current head."""
    in_channels = model.normalize.mean.shape[1]
    width = model.layer4[0].conv1.out_channels // 8
    return {"in_channels": in_channels, "embedding_dim": model.fc.out_features, "width": width}
