"""What a cdfv-prep stage is asked to do: the option records and their choices, kept apart from
the stages that do it (pipeline.stages needs torch and OpenCV), so the command line lists them
without loading either."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cdfv import shards

NO_FACE_POLICIES = ("skip", "whole")  # skip: listed as reject; whole: treat the image as pre-aligned
STREAM_OUTPUTS = ("detections", "faces", "latents", "decoded")
ORDERS = ("align-then-encode", "encode-then-align")


@dataclass(frozen=True)
class RunOptions:
    out: Path
    part: int = 0
    parts: int = 1
    chunk_size: int = 1000
    batch_size: int = 32
    strict: bool = False
    damage: shards.Damage = field(default_factory=shards.Damage)  # damaged input shards: error or skip


@dataclass(frozen=True)
class StreamOptions:
    outputs: tuple[str, ...] = ("latents",)
    align: str = "thesis"
    no_face: str = "skip"
    off_centre: str = "reject"  # pictures whose faces all miss the image centre: no face, or the largest
    detect: bool = True  # False: inputs are pre-aligned (VGGFace2 loose crops)
    latent_size: int | None = 14
    with_bits: bool = False
    with_png: bool = False  # the decoded face inside each latent sample
    fast_path: bool = True
    verify: float = 0.01  # fraction of fast-path latents checked against entropy decoding
    order: str = "align-then-encode"
