"""Chunked, resumable execution of a stage with per-item failure capture.

A stage's input (this part's share) is cut into fixed chunks. For each chunk the rejects are
written first, then every output, each atomically, then the ledger's record that the chunk is done
(pipeline.ledger); a killed run redoes at most the chunk in flight (overwriting, never appending),
and a restart with other inputs, chunking or options is refused rather than mixed.
"""
from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from cdfv import progress
from cdfv.outlock import LOCK_NAME, output_lock
from cdfv.shards import atomic_write_bytes, remove_stale_temporaries

from .ledger import Ledger, begin_runs

T = TypeVar("T")
Advance = Callable[[int], None]  # a stage reports inputs done as it goes (per batch or picture), for the progress bar


class StrictFailure(RuntimeError):
    """Raised on the first reject when a run is --strict."""


@dataclass(frozen=True)
class Reject:
    key: str
    source: str
    stage: str
    reason: str


@dataclass
class ChunkResult:
    outputs: dict[str, list[dict[str, Any]]]
    rejects: list[Reject] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)  # stage-specific counters (faces found, bytes...)


class ChunkSink(Protocol):
    directory: Path

    def written(self, chunk: int) -> bool: ...

    def write(self, chunk: int, rows: list[dict[str, Any]]) -> str | None:
        """Writes the chunk; returns what identifies its content (a shard's digest), if anything."""
        ...


class ParquetChunks:
    """Chunk files of rows as Parquet (detections, rejects) beside the shards of a part."""

    def __init__(self, directory: Path, name: str, part: int = 0, parts: int = 1, schema: pa.Schema | None = None) -> None:
        self.directory, self.name, self.part, self.parts, self.schema = Path(directory), name, part, parts, schema

    def path(self, chunk: int) -> Path:
        return self.directory / f"{self.name}-p{self.part:03d}of{self.parts:03d}-{chunk:06d}.parquet"

    def written(self, chunk: int) -> bool:
        return self.path(chunk).exists()

    def write(self, chunk: int, rows: list[dict[str, Any]]) -> None:
        table = pa.Table.from_pylist(rows, schema=self.schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(self.path(chunk), sink.getvalue().to_pybytes())


REJECT_SCHEMA = pa.schema([("key", pa.string()), ("source", pa.string()), ("stage", pa.string()), ("reason", pa.string())])


def read_parquet_chunks(directory: Path, name: str) -> pa.Table:
    """All chunk files of `name` in a directory (every part), as one table."""
    files = sorted(Path(directory).glob(f"{name}-p*of*-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {name}-*.parquet files in {directory}")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def chunked(items: Sequence[T], size: int) -> list[list[T]]:
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


@dataclass
class RunStats:
    stage: str
    inputs: int = 0  # every input the run covers, resumed ones included
    chunks: int = 0
    resumed_chunks: int = 0
    resumed_inputs: int = 0  # the inputs of chunks an earlier run finished
    written: Counter = field(default_factory=Counter)
    rejects: list[Reject] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        processed = self.inputs - self.resumed_inputs
        return {
            "stage": self.stage,
            "inputs": self.inputs,
            "chunks": self.chunks,
            "resumed_chunks": self.resumed_chunks,
            "resumed_inputs": self.resumed_inputs,
            "written": dict(self.written),
            "rejects": len(self.rejects),
            "reject_reasons": dict(Counter(reason_kind(r) for r in self.rejects).most_common(10)),
            "counters": dict(self.counters),
            "seconds": round(self.seconds, 2),
            "items_per_s": round(processed / self.seconds, 2) if self.seconds > 0 and processed else None,  # of this run's work
        }


def reason_kind(reject: Reject) -> str:
    """A reject's reason without the file it names and the details after the first colon, so the
    summary counts kinds of failure ("cannot decode image": 12) rather than files."""
    reason = reject.reason
    for name in (reject.source, reject.key):
        head, sep, tail = reason.partition(f"{name}: ")
        if sep and (head == "" or head.endswith("/")):
            reason = tail
            break
    return reason.split(":")[0].strip()


class ChunkShare:
    """A chunk's share of the progress bar: what its stage reports, never more than its inputs."""

    def __init__(self, bar: Any, inputs: int) -> None:
        self.bar, self.left = bar, inputs

    def __call__(self, done: int) -> None:
        done = min(done, self.left)
        self.left -= done
        self.bar.update(done)


def run_chunks(
    stage: str,
    chunks: list[list[T]],
    process: Callable[[list[T], Advance], ChunkResult],
    sinks: dict[str, ChunkSink],
    options: dict[str, dict[str, Any]],
    inputs_of: Callable[[list[T]], list[str]],
    part: int = 0,
    parts: int = 1,
    strict: bool = False,
    count: Callable[[list[T]], int] = len,
) -> RunStats:
    """Runs `process` over every chunk not yet finished. Each output directory gets the chunk's
    rejects, then its outputs, then the ledger's record that the chunk is done; each sink's
    `options` and each chunk's inputs (`inputs_of`) must match what an earlier run recorded there
    (pipeline.ledger). A second run of the same part into one of the sets is refused while this
    one runs. `process` moves the progress bar as it works through a chunk; whatever it leaves
    unreported (rejected inputs) is counted when the chunk is done. A run refused writes nothing,
    not even a lock's note: a set holding another split is refused before any lock is taken, the
    other refusals (begin_runs) before any record."""
    for sink in sinks.values():
        Ledger(sink.directory, part, parts).check_split()
    with ExitStack() as held:  # one writer per part of each output set (cdfv.outlock)
        tag = f"p{part:03d}of{parts:03d}"
        for sink in sinks.values():
            held.enter_context(output_lock(sink.directory, f"{LOCK_NAME}-{tag}"))
            remove_stale_temporaries(sink.directory, tag)
        return _run_chunks(stage, chunks, process, sinks, options, inputs_of, part, parts, strict, count)


def _run_chunks(stage: str, chunks: list[list[T]], process: Callable[[list[T]], ChunkResult], sinks: dict[str, ChunkSink],
                options: dict[str, dict[str, Any]], inputs_of: Callable[[list[T]], list[str]], part: int, parts: int,
                strict: bool, count: Callable[[list[T]], int]) -> RunStats:
    ledgers = {name: Ledger(sink.directory, part, parts) for name, sink in sinks.items()}
    reject_files = {name: ParquetChunks(sink.directory, "rejects", part, parts, REJECT_SCHEMA) for name, sink in sinks.items()}
    inputs = [inputs_of(chunk) for chunk in chunks]
    begin_runs(ledgers, stage, options, inputs)
    stats = RunStats(stage)
    start = time.perf_counter()
    total = sum(count(c) for c in chunks)
    with progress.bar(total, stage, unit="img") as bar:
        for c, chunk in enumerate(chunks):
            stats.chunks += 1
            n = count(chunk)
            stats.inputs += n
            if all(ledgers[k].finished(c, inputs[c]) and sinks[k].written(c) and reject_files[k].written(c) for k in sinks):
                stats.resumed_chunks += 1
                stats.resumed_inputs += n
                bar.update(n)
                continue
            share = ChunkShare(bar, n)
            result = process(chunk, share)
            if strict and result.rejects:
                r = result.rejects[0]
                raise StrictFailure(f"{r.source}: {r.reason} (stage {r.stage}; --strict stops at the first reject)")
            rows = [r.__dict__ for r in result.rejects]
            for name, sink in sinks.items():
                reject_files[name].write(c, rows)
                outputs = result.outputs.get(name, [])
                content = sink.write(c, outputs)
                ledgers[name].commit(c, inputs[c], len(outputs), len(rows), content)
                stats.written[name] += len(outputs)
            stats.rejects.extend(result.rejects)
            stats.counters.update(result.stats)
            share(share.left)
            bar.set_postfix(rejects=len(stats.rejects))
    stats.seconds = time.perf_counter() - start
    return stats


def attempt(stage: str, key: str, source: str, fn: Callable[[], T], rejects: list[Reject]) -> T | None:
    """Runs fn for one item; any failure becomes a listed reject (one bad image never stops a run)."""
    try:
        return fn()
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except Exception as e:  # every per-image failure is recorded with its type and message
        reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        rejects.append(Reject(key, source, stage, reason))
        return None
