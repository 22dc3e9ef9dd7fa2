"""Streaming samples from WebDataset shards: deterministic per-epoch shuffling, rank/worker split.

As timm's reader_wds does, the shard order and a sample buffer are shuffled from (seed, epoch),
and the index's per-shard counts (not the data) decide how much each reader takes: every rank
yields exactly the same number of samples per epoch, so no DDP rank starves or waits forever.
A reader that reaches the end of its shards wraps around onto the next ones in the epoch's order
instead of stopping early; a sample whose member cannot be decoded is skipped, counted, and
replaced by the next one.
"""
from __future__ import annotations

import itertools
import math
import random
import tarfile
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cdfv.shards import ShardSet, ShardSetError, spec
from cdfv.shards.reader import decode_member


@dataclass(frozen=True)
class InputProbe:
    """What the first sample of a shard set looks like."""

    kind: str  # "latent" | "image"
    channels: int  # M for latents, 3 for images
    size: int  # stored spatial side (14 or 16 for latents, 224 for images)


def probe_input(shard_set: ShardSet) -> InputProbe:
    """Reads the first decodable sample so shape problems surface before training starts."""
    member = spec.LATENT if shard_set.kind == "latent" else spec.IMAGE
    for url in shard_set.urls:
        for _key, members in iter_tar(url, (member,), errors=[]):
            if member not in members:
                continue
            try:
                value = decode_member(member, members[member])
            except Exception:
                continue
            if shard_set.kind == "latent":
                if value.ndim != 3 or value.shape[1] != value.shape[2]:
                    raise ShardSetError(f"{url}: latent.npy has shape {value.shape}, expected (M, H, H)")
                return InputProbe("latent", int(value.shape[0]), int(value.shape[1]))
            return InputProbe("image", int(value.shape[2]), int(value.shape[0]))
    raise ShardSetError(f"{shard_set.directory}: no decodable {member} member in any shard")


def iter_tar(url: str, members: tuple[str, ...], errors: list[str]) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yields (key, {ext: bytes}) for consecutive members sharing a key, reading only `members`.

    A truncated or corrupt tar ends the shard early; the error is appended to `errors`."""
    key, group = None, {}
    try:
        with tarfile.open(url, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name.rsplit("/", 1)[-1]
                k, _, ext = name.partition(".")
                if k != key:
                    if key is not None:
                        yield key, group
                    key, group = k, {}
                if ext in members:
                    group[ext] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        errors.append(f"{url}: {e}")
        return
    if key is not None:
        yield key, group


def scan_labels(shard_set: ShardSet) -> list[list[int]]:
    """Per shard, the labels of its samples in order (reads only the small `cls` members)."""
    errors: list[str] = []
    per_shard = [[int(m[spec.LABEL]) for _, m in iter_tar(u, (spec.LABEL,), errors) if spec.LABEL in m] for u in shard_set.urls]
    if errors:
        raise ShardSetError(f"corrupt shard(s) while scanning labels: {'; '.join(errors)}")
    return per_shard


class ShardStream(IterableDataset):
    """Decoded (input, label) pairs from a shard set, for one rank of `world`.

    `samples_per_rank` is fixed up front; the stream is cut into `steps` batches of
    `batch_size`, and reader r of a rank's workers produces batches r, r + workers, ... (the
    DataLoader's own round-robin order), so resuming at a step only needs each reader to skip
    its share.
    `keep` maps source labels to training labels (-1 drops the sample) for identity splits."""

    def __init__(
        self,
        shard_set: ShardSet,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world: int = 1,
        shuffle_buffer: int = 1000,
        keep: np.ndarray | None = None,
        counts: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.urls = shard_set.urls
        self.kind = shard_set.kind
        self.member = spec.LATENT if self.kind == "latent" else spec.IMAGE
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world = world
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.keep = keep
        counts = counts if counts is not None else shard_set.shard_sizes
        self.usable = [i for i, c in enumerate(counts) if c > 0]
        total = sum(counts)
        self.steps = total // world // batch_size
        if self.steps == 0:
            raise ShardSetError(
                f"{shard_set.directory}: {total} usable samples cannot fill one batch of {batch_size} on each of {world} rank(s)"
            )
        self.epoch = 0
        self.start_step = 0
        self.skipped = None  # shared counter of undecodable samples, set by make_loader

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Selects the epoch's shuffle and where in it to start (resume mid-epoch)."""
        self.epoch = epoch
        self.start_step = start_step

    def _worker_batches(self, reader: int, workers: int, upto: int) -> int:
        """How many of batches 0..upto-1 reader `reader` produces (round-robin)."""
        return max(0, math.ceil((upto - reader) / workers))

    def _decode(self, members: dict[str, bytes]) -> tuple[torch.Tensor, int] | None:
        label = int(members[spec.LABEL])
        if self.keep is not None:
            label = int(self.keep[label])
            if label < 0:
                return None
        value = decode_member(self.member, members[self.member])
        if self.kind == "latent":
            return torch.from_numpy(np.asarray(value, dtype=np.float32)), label
        return torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1))), label

    def _read(self, shards: Iterator[int], barren_limit: int) -> Iterator[tuple[torch.Tensor, int]]:
        """Decoded samples of the given shards in order."""
        errors: list[str] = []
        barren = 0  # consecutive shards that gave nothing: all-corrupt data must not loop forever
        for shard in shards:
            url, produced = self.urls[shard], False
            for key, members in iter_tar(url, (self.member, spec.LABEL), errors):
                try:
                    item = self._decode(members)
                except Exception as e:  # a corrupt member: skipped, counted, reported
                    self._count_skip(f"{url}:{key}: {type(e).__name__}: {e}")
                    continue
                if item is not None:
                    produced = True
                    yield item
            while errors:
                self._count_skip(errors.pop())
            barren = 0 if produced else barren + 1
            if barren > barren_limit:
                raise ShardSetError(f"no usable sample in any shard of {url.rsplit('/', 1)[0]}")

    def _shuffled(self, items: Iterator[tuple[torch.Tensor, int]], rng: random.Random) -> Iterator[tuple[torch.Tensor, int]]:
        """A shuffle buffer that drains when its source ends."""
        buffer: list[tuple[torch.Tensor, int]] = []
        for item in items:
            buffer.append(item)
            if len(buffer) > self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)) if self.shuffle else 0)
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)) if self.shuffle else 0)

    def _samples(self, slot: int, slots: int, rng: random.Random) -> Iterator[tuple[torch.Tensor, int]]:
        """Endless shuffled samples for one reader: all of its own shards of the epoch's order
        first, then the whole order again from its own place (wrapping onto other readers'
        shards) only if it still needs more."""
        order = list(self.usable)
        if self.shuffle:
            rng.shuffle(order)
        start = slot % len(order)
        own = self._read(iter(order[slot::slots]), len(order))
        wrap = self._read(itertools.cycle(order[start:] + order[:start]), len(order))
        return itertools.chain(self._shuffled(own, rng), self._shuffled(wrap, rng))

    def _count_skip(self, message: str) -> None:
        if self.skipped is not None:
            with self.skipped.get_lock():
                self.skipped.value += 1
        print(f"cdfv-train: skipped {message}", flush=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the DataLoader asks its worker 0 first; resuming at step s, batch s belongs to reader
        # s % workers, so worker i plays reader (i + s) % workers and the order is unchanged
        reader = (worker + self.start_step) % workers
        slot, slots = self.rank * workers + reader, self.world * workers
        rng = random.Random(f"{self.seed}-{self.epoch}-{slot}")
        target = self._worker_batches(reader, workers, self.steps) * self.batch_size
        skip = self._worker_batches(reader, workers, self.start_step) * self.batch_size
        stream = self._samples(slot, slots, rng)
        for produced in range(target):
            item = next(stream)
            if produced >= skip:
                yield item


def make_loader(stream: ShardStream, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over the stream whose batches all have stream.batch_size samples."""
    import multiprocessing

    stream.skipped = multiprocessing.Value("l", 0)
    workers = min(workers, max(1, stream.steps))
    return DataLoader(
        stream,
        batch_size=stream.batch_size,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        # the stream shuffles from (seed, epoch) itself; a private generator for the workers'
        # base seed keeps the DataLoader from drawing on the global torch RNG
        generator=torch.Generator().manual_seed(0),
    )


def identity_split(labels: list[list[int]], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Splits the identities present into train/validation (thesis: 90/10 at identity level).

    Returns (train_keep, val_keep, n_train, n_val): arrays mapping source labels to dense train
    (resp. validation) labels, -1 for identities on the other side."""
    present = sorted({label for shard in labels for label in shard})
    if len(present) < 2:
        raise ShardSetError(f"an identity split needs at least 2 identities, the shards hold {len(present)}")
    rng = random.Random(seed)
    shuffled = present[:]
    rng.shuffle(shuffled)
    n_val = max(1, round(fraction * len(present)))
    val_ids, train_ids = sorted(shuffled[:n_val]), sorted(shuffled[n_val:])
    size = max(present) + 1
    train_keep = np.full(size, -1, dtype=np.int64)
    val_keep = np.full(size, -1, dtype=np.int64)
    train_keep[train_ids] = np.arange(len(train_ids))
    val_keep[val_ids] = np.arange(len(val_ids))
    return train_keep, val_keep, len(train_ids), len(val_ids)


def kept_counts(labels: list[list[int]], keep: np.ndarray) -> list[int]:
    """Per-shard sample counts after an identity filter."""
    return [int(sum(1 for label in shard if keep[label] >= 0)) for shard in labels]


def describe(shard_set: ShardSet) -> dict[str, Any]:
    """The shard set's name and meta, as recorded in checkpoints and exported models."""
    return {"name": shard_set.name, "directory": str(shard_set.directory), "kind": shard_set.kind,
            "num_samples": shard_set.num_samples, "meta": shard_set.meta}
