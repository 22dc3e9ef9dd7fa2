"""Writing shard sets: whole shards only (temp file + rename) and an index rebuilt from disk.

A stage cuts its ordered input into fixed chunks and writes chunk i to shard i of its part, so a
killed run leaves only complete shards and a re-run skips them: nothing is duplicated or lost.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from . import spec
from .reader import digest, scan_shard

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes data to path through a temporary sibling and a rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a read-only directory: no partial temporary file, and the file named
        tmp.unlink(missing_ok=True)
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:  # a kill: leave no partial temporary file behind
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(directory: Path, tag: str = "") -> list[str]:
    """Removes the temporary files atomic_write_bytes leaves when its process is killed (those whose
    names contain `tag`, e.g. one part's); call it only while holding the directory's lock
    (cdfv.outlock), so no live writer's file is taken. Returns the names removed."""
    removed = []
    for path in Path(directory).glob(".*.tmp*"):
        if tag in path.name and _TEMPORARY.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        log.info("%s: removed %d temporary file(s) left by an interrupted run (%s)", directory, len(removed), removed[0])
    return removed


_TEMPORARY = re.compile(r"\..+\.tmp\d+")


def encode_member(ext: str, value: Any) -> bytes:
    """Serialises one member value by its extension (see spec.MEMBERS)."""
    if isinstance(value, bytes):
        return value
    if ext.endswith(".npy"):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(value), allow_pickle=False)
        return buf.getvalue()
    if ext == spec.LABEL:
        return str(int(value)).encode()
    if ext == spec.META:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    if ext == spec.IMAGE:
        from cdfv.pipeline.images import encode_png  # lazy: keeps shards importable without cv2

        return encode_png(value)
    raise ValueError(f"cannot serialise member .{ext} of type {type(value).__name__}")


def tar_bytes(samples: Iterable[dict[str, Any]]) -> tuple[bytes, int, str]:
    """Builds an uncompressed POSIX tar of samples ({'__key__': k, ext: value}) in memory.

    Members are written key by key in a fixed order with a fixed mtime, so the same samples give
    byte-identical shards on any machine. The first member is the shard's CHECKSUMS table (the
    digest of every member of every sample), which every cdfv reader verifies; its own digest,
    returned third, identifies the shard's content (the index binds the shard by it)."""
    encoded = []
    for sample in samples:  # "__shard__" etc. are a reader's metadata, not members
        encoded.append((sample["__key__"], {ext: encode_member(ext, v) for ext, v in sample.items() if not ext.startswith("__")}))
    table = json.dumps({key: {ext: digest(data) for ext, data in sorted(members.items())} for key, members in encoded},
                       separators=(",", ":")).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _add(tar, spec.CHECKSUMS, table)
        for key, members in encoded:
            for ext, data in sorted(members.items()):
                _add(tar, f"{key}.{ext}", data)
    return buf.getvalue(), len(encoded), digest(table)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


class ShardSetWriter:
    """Writes the shards of one part (i of n) of a shard set into a directory."""

    def __init__(self, directory: Path, name: str, part: int = 0, parts: int = 1) -> None:
        if not 0 <= part < parts:
            raise ValueError(f"part {part} outside 0..{parts - 1}")
        self.directory = Path(directory)
        self.name = name
        self.part = part
        self.parts = parts
        self.directory.mkdir(parents=True, exist_ok=True)

    def shard_path(self, chunk: int) -> Path:
        return self.directory / f"{self.name}-p{self.part:03d}of{self.parts:03d}-{chunk:06d}.tar"

    def written(self, chunk: int) -> bool:
        return self.shard_path(chunk).exists()

    def write(self, chunk: int, samples: list[dict[str, Any]]) -> str:
        """Writes chunk's samples as one shard (an empty chunk still leaves an empty shard, which
        marks it done). Returns the shard's content digest (see tar_bytes)."""
        data, _, content = tar_bytes(samples)
        atomic_write_bytes(self.shard_path(chunk), data)
        return content


def write_index(
    directory: Path,
    name: str,
    kind: str,
    members: list[str],
    identities: list[str],
    meta: dict[str, Any],
    check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """(Re)builds index.json from the shards on disk, all parts together, so parts written on
    different machines merge by copying them into one directory and running this again. Each
    entry binds its shard by the digest of its checksum table (`table`, which every read checks)
    and names the run that wrote it (`run`: the digest of its part's run record, None without one).
    `check` sees the new index before it is written and may refuse it (the previous one then stays)."""
    if kind not in spec.KINDS:
        raise ValueError(f"kind must be one of {spec.KINDS}, got {kind!r}")
    directory = Path(directory)
    shards = sorted(directory.glob(f"{name}-p*of*-*.tar"))
    totals = {part_tag(name, p.name).split("of")[1] for p in shards}
    if len(totals) > 1:
        raise ValueError(f"{directory}: shards of {name!r} come from runs split {sorted(totals)} ways; use one split")
    runs = {tag: run_digest(directory / f"run-{tag}.json") for tag in part_tags(directory, name)}  # once a part
    entries = []
    for p in shards:
        samples, table = scan_shard(p)
        entries.append({"url": p.name, "samples": samples, "bytes": p.stat().st_size, "table": table,
                        "run": runs[part_tag(name, p.name)]})
    index = {
        "format": spec.FORMAT,
        "version": spec.VERSION,
        "name": name,
        "kind": kind,
        "members": sorted(members),
        "num_samples": sum(e["samples"] for e in entries),
        "shards": entries,
        "identities": list(identities),
        "meta": meta,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if check is not None:
        check(index)
    atomic_write_bytes(directory / spec.INDEX_NAME, json.dumps(index, indent=1).encode())
    return index


def part_tags(directory: Path, name: str) -> list[str]:
    """The parts (`p<part>of<parts>`) of set `name` with a shard in the directory, sorted; shard
    files are named `<name>-p<part>of<parts>-<chunk>.tar` (ShardSetWriter.shard_path)."""
    return sorted({part_tag(name, p.name) for p in Path(directory).glob(f"{name}-p*of*-*.tar")})


def part_tag(name: str, shard_file: str) -> str:
    """`p<part>of<parts>` of one shard file of set `name`."""
    return shard_file[len(name) + 1 :].rsplit("-", 1)[0]


def run_digest(record: Path) -> str | None:
    """What names a run in an index entry and a chunk's record: the first 16 hex digits of the
    SHA-256 of its part's run record (`run-p<part>of<parts>.json`: stage, options, inputs) in
    canonical JSON, less the software that wrote it (a run resumed by another cdfv release is the
    same run); None where there is none."""
    if not record.is_file():
        return None
    fields = {k: v for k, v in json.loads(record.read_text()).items() if k != "provenance"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
