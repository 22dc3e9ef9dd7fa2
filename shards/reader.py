"""Reading shard sets: name resolution, index validation, sample decoding.

`--shards latents-q6` resolves to a directory holding index.json; the index (not a directory
listing) says which shards exist and how many samples each holds, as timm's reader_wds does.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import spec

ENV_ROOT = "CDFV_SHARDS"


class ShardSetError(ValueError):
    """A shard set that cannot be used: missing, foreign, or of another format version."""


@dataclass(frozen=True)
class ShardSet:
    directory: Path
    index: dict[str, Any]

    @property
    def name(self) -> str:
        return self.index["name"]

    @property
    def kind(self) -> str:
        return self.index["kind"]

    @property
    def members(self) -> list[str]:
        return self.index["members"]

    @property
    def meta(self) -> dict[str, Any]:
        return self.index["meta"]

    @property
    def identities(self) -> list[str]:
        return self.index["identities"]

    @property
    def num_samples(self) -> int:
        return self.index["num_samples"]

    @property
    def urls(self) -> list[str]:
        return [str(self.directory / e["url"]) for e in self.index["shards"]]

    @property
    def shard_sizes(self) -> list[int]:
        return [e["samples"] for e in self.index["shards"]]


def resolve(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Finds a shard set directory: the path itself, else <root>/<name>, root defaulting to
    $CDFV_SHARDS, else the current directory."""
    candidates = [Path(name_or_path)]
    base = root if root is not None else os.environ.get(ENV_ROOT)
    if base:
        candidates.append(Path(base) / name_or_path)
    for c in candidates:
        if (c / spec.INDEX_NAME).is_file():
            return c
    tried = ", ".join(str(c / spec.INDEX_NAME) for c in candidates)
    raise ShardSetError(f"no shard set {str(name_or_path)!r}: none of [{tried}] exists (set --root or ${ENV_ROOT})")


def open_shard_set(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> ShardSet:
    """Opens and validates a shard set; errors name the index file and the problem."""
    directory = resolve(name_or_path, root)
    path = directory / spec.INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ShardSetError(f"{path}: unreadable index: {e}") from e
    if index.get("format") != spec.FORMAT:
        raise ShardSetError(f"{path}: not a {spec.FORMAT} index (format={index.get('format')!r})")
    if index.get("version") != spec.VERSION:
        raise ShardSetError(f"{path}: format version {index.get('version')}, this cdfv reads {spec.VERSION}")
    missing = [e["url"] for e in index["shards"] if not (directory / e["url"]).is_file()]
    if missing:
        raise ShardSetError(f"{path}: {len(missing)} listed shard(s) missing, first {missing[0]}")
    if index["num_samples"] == 0:
        raise ShardSetError(f"{path}: shard set {index['name']!r} holds no samples")
    return ShardSet(directory, index)


def decode_member(ext: str, data: bytes) -> Any:
    """Turns one member's bytes into its value (numpy array, RGB uint8 image, int, dict, bytes)."""
    if ext == spec.LATENT:
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == spec.IMAGE:
        from cdfv.pipeline.images import decode_png

        return decode_png(data)
    if ext == spec.LABEL:
        return int(data)
    if ext == spec.META:
        return json.loads(data)
    return data


def decode_sample(raw: dict[str, Any]) -> dict[str, Any]:
    """Decodes a raw WebDataset sample dict (bytes per extension) in place of its values."""
    return {k: (v if k.startswith("__") else decode_member(k, v)) for k, v in raw.items()}


def iter_samples(urls: list[str], members: tuple[str, ...] | None = None, decode: bool = True) -> Iterator[dict[str, Any]]:
    """Reads samples in shard order, decoded (raw bytes with decode=False, for callers that decode
    only some); `members` limits which members are kept.

    Plain sequential reading for pipeline stages and evaluation; the trainer builds its own
    shuffled, rank-split WebDataset pipeline over the same urls."""
    import webdataset as wds

    ds = wds.WebDataset(urls, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
    for raw in ds:
        if members is not None:
            raw = {k: v for k, v in raw.items() if k.startswith("__") or k in members}
        yield decode_sample(raw) if decode else raw
