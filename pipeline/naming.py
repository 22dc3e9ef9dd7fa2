"""Default shard-set names, so `cdfv-prep encode --quality 6` and `cdfv-train --shards latents-q6`
meet without the user spelling paths."""
from __future__ import annotations

from .codecs import CodecSpec

DEFAULT_CODEC, DEFAULT_METRIC = "bmshj2018-hyperprior", "mse"
FACES = "faces"
DETECTIONS = "detections"


def set_name(stage: str, spec: CodecSpec) -> str:
    """`<stage>-q<q>` for bmshj2018-hyperprior/mse (the thesis codec), else
    `<stage>-<codec>-<metric>-q<q>`; stage is encoded, latents-full, latents or decoded."""
    if (spec.name, spec.metric) == (DEFAULT_CODEC, DEFAULT_METRIC):
        return f"{stage}-q{spec.quality}"
    return f"{stage}-{spec.name}-{spec.metric}-q{spec.quality}"
