"""ArcFace additive angular margin (Deng et al.; thesis eq. 6), as insightface's arcface_torch.

The classifier weights and the embeddings are L2-normalised, the target logit cos(theta) becomes
cos(theta + m) and every logit is scaled by s. The classifier exists only for training the
embedding FC; it is dropped at export.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    """Margin-penalised cosine classifier over `num_classes` training identities."""

    def __init__(self, embedding_dim: int, num_classes: int, s: float = 64.0, m: float = 0.5) -> None:
        super().__init__()
        self.s = s
        self.m = m
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim).normal_(0, 0.01))
        # past theta = pi - m, cos(theta + m) stops decreasing; insightface falls back to a linear
        # penalty there so the target logit stays monotonic in theta
        self.threshold = math.cos(math.pi - m)
        self.fallback = math.sin(math.pi - m) * m

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float()))

    def margin_logits(self, cosine: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """s * cos(theta_j), with cos(theta_y + m) in the target column."""
        target = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - target * target)
        with_margin = target * math.cos(self.m) - sine * math.sin(self.m)
        with_margin = torch.where(target > self.threshold, with_margin, target - self.fallback)
        return self.s * cosine.scatter(1, labels[:, None], with_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (ArcFace loss, logits without margin for accuracy)."""
        cosine = self.cosine(embeddings)
        return F.cross_entropy(self.margin_logits(cosine, labels), labels), cosine
