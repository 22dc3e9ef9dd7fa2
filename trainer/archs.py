"""The face-model architectures by name and what each reads: a table apart from the models
(trainer.models needs torch), so the command line lists them without loading torch."""
from __future__ import annotations

ARCHS = ("resnet50", "cresnet39", "cresnet50")
INPUT_KIND = {"resnet50": "image", "cresnet39": "latent", "cresnet50": "latent"}
INPUT_SIZE = {"resnet50": 224, "cresnet39": 14, "cresnet50": 14}
