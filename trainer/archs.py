"""The face-model architectures by name and what each reads: a table apart from the models
(trainer.models needs torch), so the command line lists them without loading torch."""
from __future__ import annotations

ARCHS = ("resnet50", "cresnet39", "cresnet50")
JUNCTION_NAMES = ("level0", "level1", "level2")  # eval/dlib_arch.JUNCTIONS, listed here without torch


def transplant_arch(junction: str) -> str:
    """What --phase transplant trains (trainer/transplant.py), not an --arch choice: one name per junction,
    so the students of two junctions never share a run name, a scores file or a Table 7 row."""
    return f"dlib-transplant-{junction}"


TRANSPLANTS = {transplant_arch(j): j for j in JUNCTION_NAMES}
INPUT_KIND = {"resnet50": "image", "cresnet39": "latent", "cresnet50": "latent", **{a: "latent" for a in TRANSPLANTS}}
INPUT_SIZE = {"resnet50": 224, "cresnet39": 14, "cresnet50": 14, **{a: 14 for a in TRANSPLANTS}}
