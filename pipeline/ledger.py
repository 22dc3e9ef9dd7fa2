"""What an output directory records about the run that fills it, so a restart resumes only what
still matches and never mixes two runs.

- `run-p<part>of<parts>.json`: the stage, the options that shape its outputs (codec and weights,
  alignment, chunk size, input set, ...), a digest of every input of the part in chunk order, and
  the software and machine that began it (cdfv.provenance; not compared on a restart).
- `done-p<part>of<parts>-<chunk>.json`: written after a chunk's outputs and rejects, it lists the
  chunk's inputs and what came of them; a chunk counts as finished only when it exists.

A restart with other options, another chunking or other inputs is refused with a message that
says what differs, as is a run whose options differ from another part's in the same directory.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from cdfv.provenance import provenance
from cdfv.shards import atomic_write_bytes

RECORD = re.compile(r"^run-p(\d{3})of(\d{3})\.json$")


class ResumeMismatch(RuntimeError):
    """An output directory holds the work of a run that differs from the one asked for."""


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(value) if isinstance(value, (list, dict)) else len(text)} entries)"


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key: old -> new' for every option that differs, nested keys dotted."""
    a, b = _flat(old), _flat(new)
    return [f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _digest(chunks: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(chunks).encode()).hexdigest()


class Ledger:
    """The run record and chunk records of one part in one output directory."""

    def __init__(self, directory: Path, part: int = 0, parts: int = 1) -> None:
        self.directory, self.part, self.parts = Path(directory), part, parts
        self.tag = f"p{part:03d}of{parts:03d}"

    @property
    def record_path(self) -> Path:
        return self.directory / f"run-{self.tag}.json"

    def done_path(self, chunk: int) -> Path:
        return self.directory / f"done-{self.tag}-{chunk:06d}.json"

    def _finished_inputs(self) -> list[str]:
        out: list[str] = []
        for path in sorted(self.directory.glob(f"done-{self.tag}-*.json")):
            out += json.loads(path.read_text())["inputs"]
        return out

    def _input_changes(self, chunks: list[list[str]]) -> str:
        before = self._finished_inputs()
        now = {key for chunk in chunks for key in chunk}
        removed = [k for k in before if k not in now]
        added = sorted(now - set(before))
        parts = [f"{sum(len(c) for c in chunks)} inputs now"]
        if removed:
            parts.append(f"{len(removed)} input(s) of finished chunks gone (first {removed[0]!r})")
        if before and added:
            parts.append(f"{len(added)} input(s) not in the earlier run's finished chunks (first {added[0]!r})")
        return "; ".join(parts)

    def begin(self, stage: str, options: dict[str, Any], chunks: list[list[str]]) -> None:
        """Checks (or, for a new directory, writes) the run record for this part."""
        record = {"stage": stage, "options": _normalised(options), "chunks": len(chunks),
                  "inputs": sum(len(c) for c in chunks), "digest": _digest(chunks)}
        where = self.directory
        if self.record_path.exists():
            old = json.loads(self.record_path.read_text())
            old.pop("provenance", None)  # the software that began the run: recorded, not compared
            if old == record:
                return
            changes = describe_changes({"stage": old.get("stage"), **old.get("options", {})}, {"stage": stage, **record["options"]})
            if old.get("digest") != record["digest"] and not changes:
                changes = [f"inputs or their split into chunks changed: {self._input_changes(chunks)}"]
            raise ResumeMismatch(
                f"{where} holds a run of part {self.part}/{self.parts} made differently: {'; '.join(changes)}. "
                f"Resuming would mix the two; use another --out/--name, or delete {where} to start again")
        leftovers = sorted(p.name for p in where.glob(f"*-{self.tag}-*") if not p.name.startswith("."))
        if leftovers:
            raise ResumeMismatch(f"{where} holds output of part {self.part}/{self.parts} (e.g. {leftovers[0]}) but no "
                                 f"record of the run that made it; use another --out/--name, or delete {where} to start again")
        for other in sorted(where.glob("run-p*of*.json")):
            theirs = json.loads(other.read_text())
            changes = describe_changes({"stage": theirs.get("stage"), **theirs.get("options", {})}, {"stage": stage, **record["options"]})
            if changes:
                raise ResumeMismatch(f"{where}: another part ({other.name}) was made differently: {'; '.join(changes)}; "
                                     f"parts of one set must share their options")
        atomic_write_bytes(self.record_path, json.dumps({**record, "provenance": provenance()}, indent=1).encode())

    def finished(self, chunk: int, inputs: list[str]) -> bool:
        """Whether the chunk was finished with exactly these inputs."""
        path = self.done_path(chunk)
        if not path.exists():
            return False
        recorded = json.loads(path.read_text())["inputs"]
        if recorded != inputs:
            raise ResumeMismatch(f"{path}: chunk {chunk} was made from other inputs than this run gives it; "
                                 f"delete {self.directory} to start again")
        return True

    def commit(self, chunk: int, inputs: list[str], written: int, rejected: int) -> None:
        """Marks the chunk finished: called after every output and reject file of it is written."""
        record = {"chunk": chunk, "inputs": inputs, "written": written, "rejected": rejected}
        atomic_write_bytes(self.done_path(chunk), json.dumps(record).encode())

    def written(self) -> dict[int, int]:
        """Samples each finished chunk of this part wrote, as recorded."""
        out = {}
        for path in self.directory.glob(f"done-{self.tag}-*.json"):
            record = json.loads(path.read_text())
            out[record["chunk"]] = record["written"]
        return out


def check_index(directory: Path, index: dict[str, Any]) -> None:
    """Refuses an index whose per-shard counts differ from what the ledger says each chunk wrote
    (a shard changed or replaced after its chunk was finished)."""
    counts = {e["url"]: e["samples"] for e in index["shards"]}
    for path in sorted(Path(directory).glob("done-p*of*-*.json")):
        tag_chunk = path.stem[len("done-"):]
        shard = f"{index['name']}-{tag_chunk}.tar"
        written = json.loads(path.read_text())["written"]
        if shard in counts and counts[shard] != written:
            raise ResumeMismatch(f"{directory / shard}: holds {counts[shard]} samples, but its chunk wrote {written} "
                                 f"({path.name}); re-run the stage into a fresh directory")
