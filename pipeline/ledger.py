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
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cdfv.outlock import LOCK_NAME, output_lock
from cdfv.provenance import provenance
from cdfv.shards import atomic_write_bytes, part_tags, run_digest

RECORD = re.compile(r"^run-p(\d{3})of(\d{3})\.json$")
PART_FILE = re.compile(r"(?:^|-)p\d{3}of(\d{3})(?:-\d{6})?\.(?:json|tar|parquet)$")  # a run record, chunk record, shard, rejects
LEDGER_LOCK = f"{LOCK_NAME}-ledger"  # held while a run record or the index is checked and written


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

    def check_split(self) -> None:
        """Refuses a run split another way than the parts already in the directory: the two could
        never be indexed together (shards.write_index refuses mixed splits), so every file it wrote
        would only block the set."""
        found = next(((p.name, m.group(1)) for p in sorted(self.directory.glob("*p[0-9][0-9][0-9]of[0-9][0-9][0-9]*"))
                      if (m := PART_FILE.search(p.name)) and int(m.group(1)) != self.parts), None)
        if found is not None:
            name, split = found
            raise ResumeMismatch(f"{self.directory} holds parts made with --part i/{int(split)} (e.g. {name}); --part "
                                 f"{self.part}/{self.parts} would add parts that can never be indexed with them: use --part "
                                 f"i/{int(split)}, another --out/--name, or delete {self.directory} to start again")

    def check(self, stage: str, options: dict[str, Any], chunks: list[list[str]]) -> dict[str, Any] | None:
        """Checks this part's run against the directory's records: None when it resumes its own
        record, else the record to write (see begin_runs); refuses a run made differently."""
        record = {"stage": stage, "options": _normalised(options), "chunks": len(chunks),
                  "inputs": sum(len(c) for c in chunks), "digest": _digest(chunks)}
        where = self.directory
        self.check_split()  # again under the ledger lock: a run of another split may have begun since run_chunks checked
        if self.record_path.exists():
            old = json.loads(self.record_path.read_text())
            old.pop("provenance", None)  # the software that began the run: recorded, not compared
            if old == record:
                return None
            changes = _record_changes(old, record)
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
            changes = _record_changes(json.loads(other.read_text()), record)
            if changes:
                raise ResumeMismatch(f"{where}: another part ({other.name}) was made differently: {'; '.join(changes)}; "
                                     f"parts of one set must share their options")
        return record

    def write_record(self, record: dict[str, Any]) -> None:
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

    def commit(self, chunk: int, inputs: list[str], written: int, rejected: int, content: str | None = None) -> None:
        """Marks the chunk finished: called after every output and reject file of it is written;
        `content` is the written shard's digest, which the index must later find again."""
        record = {"chunk": chunk, "inputs": inputs, "written": written, "rejected": rejected, "content": content,
                  "run": run_digest(self.record_path)}
        atomic_write_bytes(self.done_path(chunk), json.dumps(record).encode())

    def written(self) -> dict[int, int]:
        """Samples each finished chunk of this part wrote, as recorded."""
        out = {}
        for path in self.directory.glob(f"done-{self.tag}-*.json"):
            record = json.loads(path.read_text())
            out[record["chunk"]] = record["written"]
        return out


def begin_runs(ledgers: dict[str, Ledger], stage: str, options: dict[str, dict[str, Any]], chunks: list[list[str]]) -> None:
    """Checks every output's run record before writing any, so a refused run leaves no record
    behind that would block the corrected command; runs starting at once take turns (directories
    locked in sorted order, so two runs cannot wait on each other)."""
    with ExitStack() as held:
        for directory in sorted({ledger.directory for ledger in ledgers.values()}):
            held.enter_context(output_lock(directory, LEDGER_LOCK, wait=True))
        records = {name: ledger.check(stage, options[name], chunks) for name, ledger in ledgers.items()}
        for name, record in records.items():
            if record is not None:
                ledgers[name].write_record(record)


def check_index(directory: Path, index: dict[str, Any]) -> None:
    """Refuses an index whose shards are not what the ledger says each chunk of its run wrote. In a
    part with a run record, every shard needs its chunk's record (`done-*.json`), written by that
    run (its `run` digest), with the shard's count and content: a shard or a chunk record copied
    in from another run, or a shard replaced after its chunk finished, is refused by name."""
    directory = Path(directory)
    for entry in index["shards"]:
        if entry.get("run") is None:
            continue  # a part written without a ledger (a library writer): nothing to check against
        tag_chunk = entry["url"][len(index["name"]) + 1 : -len(".tar")]
        done_path = directory / f"done-{tag_chunk}.json"
        where = directory / entry["url"]
        if not done_path.is_file():
            raise ResumeMismatch(f"{where}: no record of the chunk that wrote it ({done_path.name}): a shard copied in "
                                 f"without its chunk record, or from another run; re-run the stage into a fresh directory")
        done = json.loads(done_path.read_text())
        if done.get("run") != entry["run"]:
            raise ResumeMismatch(f"{where}: its chunk record {done_path.name} was written by another run ({done.get('run')}) "
                                 f"than this part's run record says ({entry['run']}); re-run the stage into a fresh directory")
        if entry["samples"] != done["written"]:
            raise ResumeMismatch(f"{where}: holds {entry['samples']} samples, but its chunk wrote {done['written']} "
                                 f"({done_path.name}); re-run the stage into a fresh directory")
        if entry.get("table") != done.get("content"):
            raise ResumeMismatch(f"{where}: is not the shard its chunk wrote (content digest {entry.get('table')}, "
                                 f"{done_path.name} says {done.get('content')}): a shard of another run?; re-run the stage "
                                 f"into a fresh directory")


def missing_parts(directory: Path, name: str) -> list[str]:
    """The parts of the set's split that have no shard in the directory (an index over the others
    would be a partial set)."""
    tags = part_tags(directory, name)
    splits = {int(tag.split("of")[1]) for tag in tags}
    if len(splits) != 1:
        return []  # none, or mixed splits: write_index refuses those
    parts = splits.pop()
    return [f"p{i:03d}of{parts:03d}" for i in range(parts) if f"p{i:03d}of{parts:03d}" not in tags]


def check_parts(directory: Path, name: str) -> None:
    """Refuses to merge parts of a set that were not made alike: every part whose shards are present
    needs its run record, and the records must agree on the stage and every option (codec weights,
    alignment, chunking, input set...); the message names the parts and what differs."""
    directory = Path(directory)
    records = {tag: directory / f"run-{tag}.json" for tag in part_tags(directory, name)}
    if not any(path.is_file() for path in records.values()):
        return  # a set written without a ledger (a library writer): nothing to compare
    missing = [tag for tag, path in records.items() if not path.is_file()]
    if missing:
        raise ResumeMismatch(f"{directory}: shards of part {missing[0]} have no run record ({records[missing[0]].name}); "
                             f"copy each part's run-*.json and done-*.json files along with its shards")
    loaded = {tag: json.loads(path.read_text()) for tag, path in records.items()}
    first, *others = loaded
    for tag in others:
        changes = _record_changes(loaded[first], loaded[tag])
        if changes:
            raise ResumeMismatch(f"{directory}: part {tag} was made differently from part {first}: {'; '.join(changes)}; "
                                 f"parts of one set must share their options, so they are not merged")


def _record_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two run records' stage and options."""
    return describe_changes({"stage": old.get("stage"), **old.get("options", {})}, {"stage": new.get("stage"), **new.get("options", {})})
