"""Streaming samples from WebDataset shards: deterministic per-epoch shuffling, rank/worker split.

Every reader (each DataLoader worker of each torchrun rank) shuffles the shard order from (seed,
epoch) alone, so all of them see one and the same order, and takes its own contiguous, disjoint
share of the samples in it, sized from the index's per-shard counts (not the data): one epoch reads
every sample exactly once (the remainder that fills no batch on every rank is left out, a different
one each epoch), and every rank yields the same number of batches, so no DDP rank starves or waits
forever. A reader's samples then pass through a shuffle buffer of its own. A sample whose member
cannot be decoded is skipped, counted, and replaced by the next one of the order after the
reader's share.
"""
from __future__ import annotations

import itertools
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cdfv.shards import Damage, Lost, ShardSet, ShardSetError, atomic_write_bytes, read_shard, spec


CHIP_VALUES = 6  # a face's 2 x 3 face -> chip transform, flattened, at the end of its teacher row (ShardStream chip=True)


@dataclass(frozen=True)
class InputProbe:
    """What the first sample of a shard set looks like."""

    kind: str  # "latent" | "image"
    channels: int  # M for latents, 3 for images
    size: int  # stored spatial side (14 or 16 for latents, 224 for images)
    teacher_dim: int = 0  # length of its teacher embedding, 0 without one


def probe_input(shard_set: ShardSet, damage_policy: str = "error") -> InputProbe:
    """Reads the first sample so shape problems surface before training starts."""
    member = spec.LATENT if shard_set.kind == "latent" else spec.IMAGE
    reads = (member, *([spec.TEACHER] if spec.TEACHER in shard_set.members else []))
    for sample in shard_set.samples(reads, damage=Damage(damage_policy)):
        value = sample[member]
        teacher_dim = int(sample[spec.TEACHER].shape[0]) if spec.TEACHER in sample else 0
        if shard_set.kind == "latent":
            if value.ndim != 3 or value.shape[1] != value.shape[2]:
                raise ShardSetError(f"{shard_set.directory / sample['__shard__']}:{sample['__key__']}: latent.npy has shape "
                                    f"{value.shape}, expected (M, H, H)")
            return InputProbe("latent", int(value.shape[0]), int(value.shape[1]), teacher_dim)
        return InputProbe("image", int(value.shape[2]), int(value.shape[0]), teacher_dim)
    raise ShardSetError(f"{shard_set.directory}: no readable {member} member in any shard")


def scan_labels(shard_set: ShardSet, damage: Damage) -> list[list[int]]:
    """Per shard, the labels of its samples in order (reads only the small `cls` members)."""
    return [[s[spec.LABEL] for s in read_shard(shard, (spec.LABEL,), damage=damage)] for shard in shard_set.shards]


class ShardStream(IterableDataset):
    """Decoded (input, label, teacher embedding) triples from a shard set, for one rank of
    `world`: the label is -1 and the embedding empty where `labels` / `teacher` are off. With
    `teacher_map` (a member teacher-<junction>.npy) the embedding is followed by the flattened
    float32 map, so a transplant batch's dense target travels in the same tensor; with `chip`, by
    the face's 2 x 3 face -> chip transform too (an identity-preserving codec's warp).

    The stream is cut into `steps` batches of `batch_size` per rank, and reader r of a rank's
    workers produces batches r, r + workers, ... (the DataLoader's own round-robin order) from
    its own share of the epoch's samples, so resuming at a step only needs each reader to skip
    the batches of its share already taken.
    `keep` maps source labels to training labels (-1 drops the sample) for identity splits.
    A damaged shard stops the run (policy `error`) or is skipped; a damaged sample is skipped. Each
    one is logged once per reader and, with `damage_log`, appended to that file by name."""

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
        damage_policy: str = "error",
        damage_log: Path | None = None,
        labels: bool = True,
        teacher: int = 0,
        teacher_map: str | None = None,
        chip: bool = False,
    ) -> None:
        super().__init__()
        self.shards = shard_set.shards
        self.kind = shard_set.kind
        self.member = spec.LATENT if self.kind == "latent" else spec.IMAGE
        self.reads = (self.member, *([spec.LABEL] if labels else []), *([spec.TEACHER] if teacher else []),
                      *([teacher_map] if teacher_map else []), *([spec.META] if chip else []))
        self.teacher_dim = teacher
        self.teacher_map = teacher_map
        self.chip = chip
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world = world
        self.shuffle_buffer = shuffle_buffer if shuffle else 0
        self.keep = keep
        counts = counts if counts is not None else [s.samples for s in self.shards]
        self.counts = counts
        self.usable = [i for i, c in enumerate(counts) if c > 0]
        total = sum(counts)
        self.steps = total // world // batch_size
        if self.steps == 0:
            raise ShardSetError(
                f"{shard_set.directory}: {total} usable samples cannot fill one batch of {batch_size} on each of {world} rank(s)"
            )
        self.epoch = 0
        self.start_step = 0
        self.damage_policy = damage_policy
        self.damage_log = damage_log

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Selects the epoch's shuffle and where in it to start (resume mid-epoch)."""
        self.epoch = epoch
        self.start_step = start_step

    def _worker_batches(self, reader: int, workers: int, upto: int) -> int:
        """How many of batches 0..upto-1 reader `reader` produces (round-robin)."""
        return max(0, math.ceil((upto - reader) / workers))

    def _item(self, sample: dict[str, Any]) -> tuple[torch.Tensor, int, torch.Tensor] | None:
        label = sample.get(spec.LABEL, -1)
        if self.keep is not None:
            label = int(self.keep[label])
            if label < 0:
                return None
        value = sample[self.member]
        teacher = torch.from_numpy(self._teacher(sample)) if self.teacher_dim else torch.zeros(0)
        if self.teacher_map:
            teacher = torch.cat([teacher, torch.from_numpy(np.asarray(sample[self.teacher_map], dtype=np.float32).ravel())])
        if self.chip:
            teacher = torch.cat([teacher, torch.from_numpy(self._chip(sample))])
        if self.kind == "latent":
            return torch.from_numpy(np.asarray(value, dtype=np.float32)), label, teacher
        return torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1))), label, teacher

    def _teacher(self, sample: dict[str, Any]) -> np.ndarray:
        """The sample's teacher embedding, refused by name unless it is a finite, non-zero vector of
        the set's teacher width (a wrong one would stop training with a collate or NaN error that
        names nothing)."""
        target = np.asarray(sample[spec.TEACHER], dtype=np.float32)
        if target.shape != (self.teacher_dim,) or not np.isfinite(target).all() or not target.any():
            what = f"shape {target.shape}" if target.shape != (self.teacher_dim,) else "non-finite or all-zero values"
            raise ShardSetError(f"{sample['__shard__']}:{sample['__key__']}: {spec.TEACHER} has {what}; the set's teacher "
                                f"embeddings are finite vectors of {self.teacher_dim} (remake it with `cdfv-prep teacher`)")
        return target

    def _chip(self, sample: dict[str, Any]) -> np.ndarray:
        """The sample's face -> chip transform (json teacher.chip), refused by name where its
        teacher set was made without one."""
        chip = ((sample.get(spec.META) or {}).get("teacher") or {}).get("chip")
        transform = np.asarray(chip if chip is not None else [], dtype=np.float32)
        if transform.shape != (2, 3) or not np.isfinite(transform).all():
            raise ShardSetError(f"{sample['__shard__']}:{sample['__key__']}: no face -> chip transform (json teacher.chip); "
                                f"made by `cdfv-prep teacher --model dlib`")
        return transform.ravel()

    def _read(self, spans: Iterator[tuple[int, int, int | None]], barren_limit: int) -> Iterator[tuple[torch.Tensor, int, torch.Tensor]]:
        """Decoded samples of the given shards in order: of shard `index`, its usable samples
        `lo` to `hi` (None: to its end)."""
        damage = Damage(self.damage_policy)
        reported: set[str] = set()
        barren = 0  # consecutive shards that gave nothing: all-damaged data must not loop forever
        for index, lo, hi in spans:
            produced = False
            position = 0
            for sample in read_shard(self.shards[index], self.reads, damage=damage):
                item = self._item(sample)
                if item is None:
                    continue
                if position >= lo:
                    produced = True
                    yield item
                position += 1
                if hi is not None and position >= hi:
                    break
            for lost in damage.lost:
                if str(lost) not in reported:
                    reported.add(str(lost))
                    self._record(lost)
            damage.lost.clear()
            barren = 0 if produced else barren + 1
            if barren > barren_limit:
                raise ShardSetError(f"no usable sample in any shard of {self.shards[index].path.parent}")

    def _record(self, lost: Lost) -> None:
        """Appends a damaged sample or shard to the run's damage log (one line each, O_APPEND, so
        readers in several processes can share the file)."""
        if self.damage_log is not None:
            line = f"{lost.shard}\t{lost.key or ''}\t{lost.samples}\t{lost.problem}\n".encode()
            fd = os.open(self.damage_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _shuffled(self, items: Iterator[tuple[torch.Tensor, int, torch.Tensor]], rng: random.Random) -> Iterator[tuple[torch.Tensor, int, torch.Tensor]]:
        """A shuffle buffer that drains when its source ends."""
        buffer: list[tuple[torch.Tensor, int, torch.Tensor]] = []
        for item in items:
            buffer.append(item)
            if len(buffer) > self.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)) if self.shuffle else 0)
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)) if self.shuffle else 0)

    def _range(self, reader: int, workers: int) -> tuple[int, int]:
        """This reader's contiguous share [begin, end) of the epoch's sample order: ranks take
        consecutive blocks of `steps` batches, a rank's readers consecutive runs of their batches."""
        before = sum(self._worker_batches(r, workers, self.steps) for r in range(reader))
        begin = (self.rank * self.steps + before) * self.batch_size
        return begin, begin + self._worker_batches(reader, workers, self.steps) * self.batch_size

    def _samples(self, begin: int, end: int, rng: random.Random) -> Iterator[tuple[torch.Tensor, int, torch.Tensor]]:
        """Endless shuffled samples for one reader: samples begin..end-1 of the epoch's shard
        order (the same order in every reader and rank, so the readers' shares are disjoint and
        together cover the epoch), then, only if damage left it short, the order again from
        where its share ended."""
        order = list(self.usable)
        if self.shuffle:
            random.Random(f"{self.seed}-{self.epoch}").shuffle(order)
        spans: list[tuple[int, int, int | None]] = []
        position, after = 0, 0
        for at, index in enumerate(order):
            count = self.counts[index]
            if position < end and position + count > begin:
                spans.append((index, max(0, begin - position), min(count, end - position)))
                after = at + 1
            position += count
        own = self._read(iter(spans), len(order))
        rest = order[after:] + order[:after]
        wrap = self._read(((index, 0, None) for index in itertools.cycle(rest)), len(order))
        return itertools.chain(self._shuffled(own, rng), self._shuffled(wrap, rng))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the DataLoader asks its worker 0 first; resuming at step s, batch s belongs to reader
        # s % workers, so worker i plays reader (i + s) % workers and the order is unchanged
        reader = (worker + self.start_step) % workers
        slot = self.rank * workers + reader
        rng = random.Random(f"{self.seed}-{self.epoch}-{slot}")  # this reader's shuffle buffer only
        begin, end = self._range(reader, workers)
        skip = self._worker_batches(reader, workers, self.start_step) * self.batch_size
        stream = self._samples(begin, end, rng)
        for produced in range(end - begin):
            item = next(stream)
            if produced >= skip:
                yield item


def make_loader(stream: ShardStream, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over the stream whose batches all have stream.batch_size samples."""
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
            "num_samples": shard_set.num_samples, "identity": shard_set.identity, "meta": shard_set.meta}


def damage_summary(path: Path, settle: bool = False) -> dict[str, Any]:
    """What a run's readers left out, from its damage log: each lost sample once by key however
    often the readers met it (see shards.Damage), and each loss no key names once by problem.
    With `settle` (rank 0, once every reader is done) the log is rewritten to hold each loss once,
    so it lists what the summary counts."""
    if not path.exists():
        return {"damaged_samples_lost": 0, "damaged": []}
    entries: dict[tuple[str, str, str], tuple[int, str]] = {}
    first: dict[tuple[str, str, str], str] = {}
    lines = path.read_text().splitlines()
    for line in lines:
        shard, key, samples, problem = line.split("\t", 3)
        entries.setdefault((shard, key, "" if key else problem), (int(samples), problem))
        first.setdefault((shard, key, "" if key else problem), line)
    if settle and len(first) < len(lines):
        atomic_write_bytes(path, "".join(f"{line}\n" for line in first.values()).encode())
    return {"damaged_samples_lost": sum(n for n, _ in entries.values()),
            "damaged": [f"{s}:{k}: {p}" if k else f"{s}: {p} ({n} samples lost)" for (s, k, _), (n, p) in sorted(entries.items())]}
