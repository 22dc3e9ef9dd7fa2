"""The training objectives as modules, so the loop (and DDP) treats every phase alike: each takes
a batch (inputs, labels, teacher embeddings) and returns its loss and batch sums to log.

Phase 1 (identification): the whole network, cross-entropy over all identities.
Phase 2 (verification): a fresh embedding FC on a frozen trunk, ArcFace with a classifier over
the training identities. The frozen trunk stays in eval mode (BatchNorm statistics fixed) and
runs without autograd, which also makes phase 2 several times cheaper per sample.
Distillation: the whole network maps its input to a pretrained face model's embedding of the
same face (1 - cosine), optionally with ArcFace over the identities on the same embedding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arcface import ArcFace
from .models import FaceResNet

Sums = dict[str, torch.Tensor]  # batch sums (correct predictions, cosines) the loop logs as means


class ClassifyTask(nn.Module):
    head = None  # the identity classifier is the model's own FC

    def __init__(self, model: FaceResNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, Sums]:
        logits = self.model(x).float()
        return F.cross_entropy(logits, labels), {"acc": (logits.argmax(1) == labels).sum()}


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

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, Sums]:
        with torch.no_grad():
            features = self.model.features(x)
        embeddings = self.model.fc(features.float())
        loss, cosine = self.head(embeddings, labels)
        return loss, {"acc": (cosine.argmax(1) == labels).sum()}


class DistillTask(nn.Module):
    """1 - cos(student, teacher), plus `identity_weight` x ArcFace over the identities when a head
    is given (labelled data)."""

    def __init__(self, model: FaceResNet, head: ArcFace | None = None, identity_weight: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.identity_weight = identity_weight

    def forward(self, x: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, Sums]:
        embeddings = self.model(x).float()
        cos = F.cosine_similarity(embeddings, teacher.float(), dim=1)
        loss = (1.0 - cos).mean()
        sums = {"cos": cos.detach().sum()}
        if self.head is not None:
            identity, cosine = self.head(embeddings, labels)
            loss = loss + self.identity_weight * identity
            sums["acc"] = (cosine.argmax(1) == labels).sum()
        return loss, sums
