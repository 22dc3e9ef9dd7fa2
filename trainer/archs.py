"""The face-model architectures by name and what each reads: a table apart from the models
(trainer.models needs torch), so the command line lists them without loading torch."""
from __future__ import annotations

ARCHS = ("resnet50", "cresnet39", "cresnet50")
TRANSPLANT = "dlib-transplant"  # what --phase transplant trains (trainer/transplant.py); not an --arch choice
INPUT_KIND = {"resnet50": "image", "cresnet39": "latent", "cresnet50": "latent", TRANSPLANT: "latent"}
INPUT_SIZE = {"resnet50": 224, "cresnet39": 14, "cresnet50": 14, TRANSPLANT: 14}
JUNCTION_NAMES = ("level0", "level1", "level2")  # eval/dlib_arch.JUNCTIONS, listed here without torch
