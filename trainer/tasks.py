"""The two training objectives as modules, so the loop (and DDP) treats both phases alike.

Phase 1 (identification): the whole network, cross-entropy over all identities.
Phase 2 (verification): a fresh embedding FC on a frozen trunk, ArcFace with a classifier over
the training identities. The frozen trunk stays in eval mode (BatchNorm statistics fixed) and
runs without autograd, which also makes phase 2 several times cheaper per sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arcface import ArcFace
from .models import FaceResNet


class ClassifyTask(nn.Module):
    def __init__(self, model: FaceResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (cross-entropy loss, logits)."""
        logits = self.model(x).float()
        return F.cross_entropy(logits, labels), logits


class ArcFaceTask(nn.Module):
    def __init__(self, model: FaceResNet, head: ArcFace) -> None:
        super().__init__()
        self.model = model
        self.head = head
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("fc."))

    def train(self, mode: bool = True) -> "ArcFaceTask":
        super().train(mode)
        self.model.eval()  # the trunk is frozen, BatchNorm included
        return self

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (ArcFace loss, cosine logits without margin)."""
        with torch.no_grad():
            features = self.model.features(x)
        embeddings = self.model.fc(features.float())
        return self.head(embeddings, labels)
