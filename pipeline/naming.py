"""Default shard-set names, so `cdfv-prep encode --quality 6` and `cdfv-train --shards latents-q6`
meet without the user spelling paths."""
from __future__ import annotations

from .codecs import CodecSpec

DEFAULT_CODEC, DEFAULT_METRIC = "bmshj2018-hyperprior", "mse"
FACES = "faces"
DETECTIONS = "detections"


def set_name(stage: str, spec: CodecSpec) -> str:
    """`<stage>-q<q>` for bmshj2018-hyperprior/mse (the thesis codec), `<stage>-<variant>-q<q>` for a
    variant of it trained here, else `<stage>-<codec>-<metric>[-<variant>]-q<q>`; stage is encoded,
    latents-full, latents or decoded."""
    if (spec.name, spec.metric) == (DEFAULT_CODEC, DEFAULT_METRIC):
        return f"{stage}-{spec.variant}-q{spec.quality}" if spec.variant else f"{stage}-q{spec.quality}"
    return f"{stage}-{spec.family}-q{spec.quality}"
