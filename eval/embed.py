"""Embeddings per image, not per pair: a shard set is streamed once and only the keys the pair
list names are embedded, so a face used by many pairs costs one forward pass. Any face model
(cdfv.eval.facemodels) takes each batch with its samples' json metadata (dlib and ONNX models
read the alignment and landmarks there). A progress bar counts the faces embedded, batch by batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cdfv import progress
from cdfv.shards import Damage, ShardSet
from cdfv.shards import spec

from .facemodels import FaceModel, InputMismatch


@dataclass
class EmbeddedSet:
    """Embeddings of the requested keys of one shard set, and each sample's json metadata."""

    name: str
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # key -> why its sample could not be read


def check_compatible(embedder: FaceModel, shard_set: ShardSet) -> None:
    """Fails early when the set's kind or latent channels do not fit the model."""
    if shard_set.kind != embedder.kind:
        raise InputMismatch(
            f"shard set {shard_set.name!r} holds {shard_set.kind}s but model {embedder.info['model_id']} takes {embedder.kind}s"
        )


def embed_keys(embedder: FaceModel, shard_set: ShardSet, keys: set[str], batch_size: int = 128,
               damage: Damage | None = None) -> EmbeddedSet:
    """Streams the set once and embeds the samples whose key is in `keys`; absent or damaged keys
    are not in the result (the caller applies the missing-pair policy, with the damage as reason)."""
    damage = damage if damage is not None else Damage()
    seen = len(damage.lost)
    check_compatible(embedder, shard_set)
    member = spec.IMAGE if shard_set.kind == "image" else spec.LATENT
    result = EmbeddedSet(shard_set.name)
    pending: list[tuple[str, np.ndarray]] = []
    bar = progress.bar(len(keys), f"embed {shard_set.name} ({embedder.info['arch']})", unit=shard_set.kind)

    def flush() -> None:
        batch = np.stack([a for _, a in pending])
        if shard_set.kind == "latent" and batch.shape[1] != embedder.info["in_channels"]:
            raise InputMismatch(f"shard set {shard_set.name!r} has M={batch.shape[1]} latent channels, the model takes {embedder.info['in_channels']}")
        try:
            emb = embedder.embed(batch, [{"key": key, **result.meta[key]} for key, _ in pending])
        except InputMismatch as e:
            raise InputMismatch(f"shard set {shard_set.name!r}, {e}") from e
        for (key, _), vector in zip(pending, emb):
            result.embeddings[key] = vector
        bar.update(len(pending))
        pending.clear()

    with bar:
        for sample in shard_set.samples((member, spec.META), damage=damage):
            key = sample["__key__"]
            if key not in keys or key in result.meta:
                continue
            result.meta[key] = sample.get(spec.META, {})
            pending.append((key, sample[member]))
            if len(pending) == batch_size:
                flush()
        if pending:
            flush()
        bar.set_postfix(absent=len(keys) - len(result.embeddings))
    lost = damage.lost[seen:]
    result.damaged = {x.key: f"damaged sample in {x.shard}: {x.problem}" for x in lost if x.key in keys}
    skipped = "; ".join(f"{x.shard}: {x.problem}" for x in lost if x.key is None and x.samples)
    if skipped:  # which keys a damaged shard held is unknown: every key not read may have been in it
        for key in keys - result.embeddings.keys() - result.damaged.keys():
            result.damaged[key] = f"not read; damaged shard(s) of {shard_set.name!r} skipped: {skipped}"
    return result
