"""Reading shard sets: name resolution, index validation, and the one sample reader that the
pipeline, the trainer and the evaluator all use.

`--shards latents-q6` resolves to a directory holding index.json; the index (not a directory
listing) says which shards exist, how many samples and bytes each holds, as timm's reader_wds
does. Python's tarfile ends a shard silently at a damaged header, so `read_shard` first scans
every header and compares the shard with its index entry (file size, sample count, nothing but
zero blocks after the last member) and checks each member it reads against the XXH3 digest the
writer recorded in the shard's checksum table (its first member). What fails is either an error naming the shard (and sample), or under
the `skip` policy left out, counted and listed (`Damage`).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import xxhash

from . import spec

ENV_ROOT = "CDFV_SHARDS"
DAMAGE_POLICIES = ("error", "skip")
log = logging.getLogger(__name__)


class ShardSetError(ValueError):
    """A shard set that cannot be used: missing, foreign, of another format version, or damaged."""


class DamagedShard(ShardSetError):
    """A shard or sample whose bytes are not what the writer wrote; the message names it."""


@dataclass(frozen=True)
class Lost:
    """Samples a read left out: one sample, named (`key`), or where no checksum table names them
    (the shard missing, unreadable, of format version 1) `samples` unnamed ones from position
    `index` of the shard; `samples` 0 marks damage that lost nothing (bytes after a shard's end)."""

    shard: str
    key: str | None
    problem: str
    samples: int
    index: int | None = None  # position in its shard (of a named sample; of the first of unnamed ones)

    def __str__(self) -> str:
        where = f"{self.shard}:{self.key}" if self.key else self.shard
        count = "" if self.key else f" ({self.samples} samples lost)"
        return f"{where}: {self.problem}{count}"


@dataclass
class Damage:
    """What reads found damaged, one entry per lost sample wherever the shard's checksum table
    names it (see Lost), so a caller counts and lists exactly what was lost. A damaged shard
    (truncated, a broken header, not the size or sample count its index says) stops the read
    under policy `error` and is read past under `skip`, its intact samples kept; a damaged sample
    (a member failing its checksum or its decoder) is always left out and recorded here, for the
    caller to reject, skip or report by name. Reading a shard again records nothing twice."""

    policy: str = "error"
    lost: list[Lost] = field(default_factory=list)
    _seen: set[tuple] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.policy not in DAMAGE_POLICIES:
            raise ValueError(f"damage policy must be one of {DAMAGE_POLICIES}, not {self.policy!r}")

    def shard(self, path: Path, problem: str, keys: Iterable[tuple[int, str]] = (), unnamed: int = 0, first: int = 0) -> None:
        """A damaged shard: raise (policy error) or record what it loses (policy skip): each sample
        its checksum table names (`keys`: (position, key)), and `unnamed` samples from position
        `first` that no table names."""
        keys = list(keys)
        if self.policy == "error":
            raise DamagedShard(f"{path}: {problem} (--damaged skip reads past damaged shards, counting what is lost)")
        new = [self.add(Lost(str(path), key, problem, 1, index)) for index, key in keys]
        if unnamed or not keys:  # damage that lost nothing (bytes after the end) is noted against the shard's start
            new.append(self.add(Lost(str(path), None, problem, unnamed, first if unnamed else 0)))
        if any(new):  # said once, as it is counted once, however often the shard is read again
            named = [k for _, k in keys[:5]] + (["..."] if len(keys) > 5 else []) + ([f"{unnamed} unnamed"] if unnamed else [])
            log.warning("damaged shard %s: %s (lost: %s; read past under --damaged skip)", path, problem, ", ".join(named) or "none")

    def sample(self, path: Path, key: str, problem: str, index: int | None = None) -> None:
        if self.add(Lost(str(path), key, problem, 1, index)):
            log.warning("damaged sample %s:%s: %s", path, key, problem)

    def add(self, lost: Lost) -> bool:
        """Records a loss unless recorded already (then False): a sample is lost once however often
        it is read (a named one once whatever its problem, as reads of other members find others)."""
        seen = (lost.shard, lost.key) if lost.key else (lost.shard, None, lost.index, lost.problem)
        if seen in self._seen:
            return False
        self._seen.add(seen)
        self.lost.append(lost)
        return True

    @property
    def lost_samples(self) -> int:
        return sum(x.samples for x in self.lost)

    def summary(self) -> dict[str, Any]:
        return {"damaged_samples_lost": self.lost_samples, "damaged": [str(x) for x in self.lost]}


@dataclass(frozen=True)
class Shard:
    """One shard as its index describes it."""

    path: Path
    samples: int
    size: int | None  # bytes; None in version-1 indexes
    verified: bool  # samples carry CHECKSUMS (format version 2)
    table: str | None = None  # digest of its CHECKSUMS table, which the index binds it by (version 3)

    @property
    def name(self) -> str:
        return self.path.name


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
        """Shard paths, e.g. for `webdataset.WebDataset(urls)` (which reads them without cdfv's checks)."""
        return [str(self.directory / e["url"]) for e in self.index["shards"]]

    @property
    def shards(self) -> list[Shard]:
        verified = self.index["version"] >= 2
        return [Shard(self.directory / e["url"], e["samples"], e.get("bytes"), verified, e.get("table")) for e in self.index["shards"]]

    @property
    def identity(self) -> str:
        """What the set holds, as a digest: its name, kind, members and every shard's name, count,
        size and content digest, so two indexes over the same shards agree (whenever they were
        built) and a set with any shard replaced does not."""
        described = [self.name, self.kind, sorted(self.members),
                     [[e["url"], e["samples"], e.get("bytes"), e.get("table")] for e in self.index["shards"]]]
        return hashlib.sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()[:16]

    def samples(self, members: Collection[str] | None = None, decode: bool = True, damage: Damage | None = None) -> Iterator[dict[str, Any]]:
        """Every sample of the set in index order (see read_shard)."""
        return iter_samples(self.shards, members, decode, damage)


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
    tried = ", ".join(dict.fromkeys(str(c / spec.INDEX_NAME) for c in candidates))
    if not base:
        raise ShardSetError(f"no shard set {str(name_or_path)!r}: {tried} does not exist (set --root or ${ENV_ROOT} to "
                            f"the folder holding it)")
    given = "" if root is not None else f" (${ENV_ROOT})"
    raise ShardSetError(f"no shard set {str(name_or_path)!r} under {base}{given}: none of [{tried}] exists")


def open_shard_set(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None, allow_empty: bool = False,
                   damage: str = "error") -> ShardSet:
    """Opens and validates a shard set; errors name the index file and the problem. A listed shard
    that is missing refuses the set, or under damage policy `skip` is left for the reads to count
    as lost."""
    directory = resolve(name_or_path, root)
    path = directory / spec.INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShardSetError(f"{path}: unreadable index: {e}") from e
    if not isinstance(index, dict) or index.get("format") != spec.FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise ShardSetError(f"{path}: not a {spec.FORMAT} index (format={found!r})")
    if index.get("version") not in spec.READABLE_VERSIONS:
        raise ShardSetError(f"{path}: format version {index.get('version')}, this cdfv reads {spec.READABLE_VERSIONS}")
    try:
        entries = [(e["url"], int(e["samples"])) for e in index["shards"]]
        counted = sum(n for _, n in entries)
        fields = (index["name"], index["kind"], index["members"], index["identities"], index["meta"], index["num_samples"])
    except (KeyError, TypeError, ValueError) as e:
        raise ShardSetError(f"{path}: malformed index ({type(e).__name__}: {e})") from e
    if counted != fields[-1]:
        raise ShardSetError(f"{path}: num_samples {fields[-1]} differs from the {counted} its shard entries add up to")
    urls = [url for url, _ in entries]
    odd = next((url for url in urls if not isinstance(url, str) or Path(url).name != url or url in ("", ".", "..")), None)
    if odd is not None:
        raise ShardSetError(f"{path}: shard entry {odd!r} is not a file name in the set's directory")
    twice = next((url for url, n in Counter(urls).items() if n > 1), None)  # linear: sets hold thousands of shards
    if twice is not None:
        raise ShardSetError(f"{path}: shard {twice} is listed twice (its samples would be read twice)")
    if index["version"] >= 3:
        unbound = next((e["url"] for e in index["shards"] if not isinstance(e.get("table"), str)), None)
        if unbound is not None:
            raise ShardSetError(f"{path}: the entry of {unbound} has no content digest (table), which format version "
                                f"{index['version']} requires; rebuild the index with `cdfv-prep index`")
    missing = [url for url, _ in entries if not (directory / url).is_file()]
    if missing and damage != "skip":
        raise ShardSetError(f"{path}: {len(missing)} listed shard(s) missing, first {missing[0]} "
                            f"(--damaged skip reads the rest, counting what is lost)")
    if missing:
        log.warning("%s: %d listed shard(s) missing (first %s); reading the rest under --damaged skip", path, len(missing), missing[0])
    if index["version"] == 1:
        log.warning("%s: format version 1 carries no per-sample checksums; its samples are read unverified "
                    "(`cdfv-prep shard` rewrites it as version %d)", path, spec.VERSION)
    elif index["version"] == 2:
        log.warning("%s: format version 2 does not bind shards to the index, so a shard of another run put in one's "
                    "place goes unnoticed (`cdfv-prep index %s` rebuilds it as version %d)", path, directory, spec.VERSION)
    if index["num_samples"] == 0 and not allow_empty:
        raise ShardSetError(f"{path}: shard set {index['name']!r} holds no samples")
    return ShardSet(directory, index)


def decode_member(ext: str, data: bytes) -> Any:
    """Turns one member's bytes into its value (numpy array, RGB uint8 image, int, dict, bytes)."""
    if ext.endswith(".npy"):
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == spec.IMAGE:
        from cdfv.pipeline.images import decode_png

        return decode_png(data)
    if ext == spec.LABEL:
        return int(data)
    if ext.endswith("json"):
        return json.loads(data)
    return data


def digest(data: bytes) -> str:
    """XXH3-64 of a member's bytes: a checksum at memory speed (about 50 GB/s, against 5 GB/s for
    zlib's CRC32), so verifying every read costs little next to reading it."""
    return xxhash.xxh3_64_hexdigest(data)


Group = tuple[str, dict[str, tarfile.TarInfo]]  # a sample's key and its members' headers


def _headers(tar: tarfile.TarFile) -> tuple[list[tarfile.TarInfo], str | None]:
    """The members tarfile can list, and why the listing stopped early (None: it reached the end
    or a header it cannot parse); a shard cut short ends in an error after its last whole header,
    and what came before stays usable."""
    infos: list[tarfile.TarInfo] = []
    while True:
        try:
            info = tar.next()
        except tarfile.ReadError as e:
            return infos, str(e)
        if info is None:
            return infos, None
        infos.append(info)


def _key_ext(name: str) -> tuple[str | None, str | None]:
    """A member name's sample key and extension, split where WebDataset splits them."""
    from webdataset.tariterators import base_plus_ext  # here: importing webdataset imports torch

    return base_plus_ext(name)


def _group(infos: list[tarfile.TarInfo], where: Path, damage: Damage) -> list[Group]:
    """The shard's samples as (key, {ext: header}) from its headers alone, in order; a meta
    member (__name__, as WebDataset calls them: the checksum table) is its own group."""
    groups: list[Group] = []
    for info in infos:
        if not info.isfile():
            continue
        if info.name.startswith("__") and info.name.endswith("__"):
            groups.append((info.name, {"": info}))
            continue
        key, ext = _key_ext(info.name)
        if key is None:
            continue
        if not groups or groups[-1][0] != key:
            groups.append((key, {}))
        if ext in groups[-1][1]:
            damage.shard(where, f"sample {key}: member {ext} appears twice")
        groups[-1][1][ext] = info
    return groups


def _table(f: io.BufferedReader, infos: list[tarfile.TarInfo], shard: Shard) -> tuple[dict, str | None]:
    """The shard's checksum table, or why it cannot be trusted (then no sample of it can be)."""
    info = next((i for i in infos if i.name == spec.CHECKSUMS), None)
    if info is None:
        return {}, f"has no {spec.CHECKSUMS} table (its first member)"
    try:
        raw = _member(f, info)
        table = json.loads(raw)
        if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
            raise ValueError("not a mapping of keys to member digests")
    except (ValueError, DamagedShard) as e:
        return {}, f"its {spec.CHECKSUMS} table is damaged ({e})"
    if shard.table is not None and digest(raw) != shard.table:
        return {}, (f"is not the shard its index lists: its content digest is {digest(raw)}, the index entry says "
                    f"{shard.table} (a shard of another run put in its place?)")
    return table, None


def _resync(f: io.BufferedReader, offset: int, size: int, wanted: set[tuple[str, str]]) -> int | None:
    """Where the listing reads on after a break at `offset`: the first later 512-byte block that
    parses as a tar header (its own checksum) naming a member the checksum table lists and the
    listing has not given, its data inside the file; None if there is none. Only the table's
    digests make what follows trusted: every member read from there is checked against them."""
    block = tarfile.BLOCKSIZE
    pos = offset + block
    while pos + block <= size:
        f.seek(pos)
        data = f.read(block * 2048)
        for i in range(0, len(data) - block + 1, block):
            header = data[i : i + block]
            if header[257:262] != b"ustar":  # the magic of ustar, pax and GNU headers: most blocks stop here
                continue
            try:
                info = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
            except tarfile.HeaderError:
                continue
            if _key_ext(info.name) in wanted and pos + i + block + info.size <= size:
                return pos + i
        pos += len(data) // block * block
    return None


def _break(f: io.BufferedReader, offset: int, stopped: str | None, resumed: bool) -> str:
    """What broke a tar listing at `offset`."""
    if stopped is not None:
        return f"its tar listing stops at byte {offset} ({stopped})"
    f.seek(offset)
    header = f.read(tarfile.BLOCKSIZE)
    if len(header) < tarfile.BLOCKSIZE:
        return f"cut short in the tar header at byte {offset}"
    if header.strip(b"\0"):
        return f"damaged tar header at byte {offset}"
    return f"zeroed tar header at byte {offset}" if resumed else f"bytes after its last sample at byte {offset}"


def _scan(f: io.BufferedReader, size: int, shard: Shard, damage: Damage) -> tuple[list[Group], dict, bool]:
    """The shard's samples from its headers, checked against the index, its checksum table, and
    whether the shard is damaged. A damaged header ends tarfile's listing silently, which shows
    here as bytes after the last member that are not the closing zero blocks; with a checksum
    table the listing reads on at the next header of a member the table names, so one damaged
    header loses only its own sample. What the listing lacks is lost by name (the table's keys)."""
    tar = tarfile.open(fileobj=f, mode="r:")
    infos, stopped = _headers(tar)
    table: dict = {}
    if shard.verified:
        table, refused = _table(f, infos, shard)
        if refused is not None:
            damage.shard(shard.path, refused, unnamed=shard.samples)
            return [], {}, True
    breaks, end = [], tar.offset
    while stopped is not None or not _zeros_from(f, end):
        got = {_key_ext(i.name) for i in infos}
        wanted = {(key, ext) for key, members in table.items() for ext in members if (key, ext) not in got}
        resume = _resync(f, end, size, wanted) if wanted else None
        breaks.append(_break(f, end, stopped, resume is not None))
        if resume is None:
            break
        f.seek(resume)
        tar = tarfile.open(fileobj=f, mode="r:")
        more, stopped = _headers(tar)
        infos, end = infos + more, tar.offset
    found = _group(infos, shard.path, damage)
    groups = [g for g in found if not g[0].startswith("__")]
    keys = [key for key, _ in groups]
    every = list(enumerate(table))  # (position, key) of every sample the table names
    unnamed = max(0, shard.samples - len(every))
    twice = next((key for key, n in Counter(keys).items() if n > 1), None)
    if twice is not None:  # one sample written over another: neither copy can be trusted to be the one indexed
        damage.shard(shard.path, f"sample {twice} appears twice", every, unnamed, len(every))
        return [], {}, True
    if len(groups) > shard.samples:  # not the shard the index was built from: none of it is trusted
        damage.shard(shard.path, f"holds {len(groups)} samples, its index entry says {shard.samples}", every, unnamed, len(every))
        return [], {}, True
    listed = dict(groups)
    missing = [(i, key) for i, key in every if key not in listed]
    if breaks or len(groups) < shard.samples:
        problem = "; ".join(breaks) or f"holds {len(groups)} samples, its index entry says {shard.samples}"
        cut = [(i, key) for i, key in every if key not in listed or listed[key].keys() != table[key].keys()]
        unnamed = 0 if table else shard.samples - len(groups)
        damage.shard(shard.path, f"{problem}: {len(cut) + unnamed} of its {shard.samples} indexed samples lost", cut,
                     unnamed, len(groups))
        return groups, table, True
    for i, key in missing:  # the listing is whole: a sample the writer checksummed but the shard lacks was replaced
        damage.sample(shard.path, key, "listed in the shard's checksum table, but not in the shard", i)
    return groups, table, bool(missing)


def scan_shard(path: Path) -> tuple[int, str | None]:
    """A shard's sample count from its headers and the digest of its checksum table (None where it
    has none), for its index entry; a shard whose headers do not reach the end of the file is
    damaged and refused, never counted short."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            infos, stopped = _headers(tar)
            found = _group(infos, path, Damage("error"))
            groups = [g for g in found if not g[0].startswith("__")]
            if stopped is not None:
                raise tarfile.ReadError(stopped)
            if not _zeros_from(tar.fileobj, tar.offset):
                raise DamagedShard(f"{path}: damaged tar header at byte {tar.offset} (after {len(groups)} samples); "
                                   f"rewrite this shard (re-run the stage that made it) before indexing")
            table = dict(g for g in found if g[0].startswith("__")).get(spec.CHECKSUMS)
            content = digest(_member(tar.fileobj, table[""])) if table else None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DamagedShard(f"{path}: not a readable tar ({e})") from e
    return len(groups), content


def _zeros_from(f: io.BufferedIOBase, offset: int) -> bool:
    """Whether everything from `offset` to the end of the file is zero bytes (a tar's end)."""
    f.seek(offset)
    while block := f.read(1 << 16):
        if block.strip(b"\0"):
            return False
    return True


def read_shard(shard: Shard, members: Collection[str] | None = None, decode: bool = True, damage: Damage | None = None,
               verify: bool = True) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order, `{"__key__", "__shard__", "__index__", ext: value}` (raw bytes with
    decode=False; `__index__` is the sample's position in the shard as written, also when samples
    before it are lost); `members` limits which are read and must all be present. Every member
    read is checked against the sample's digest (verify=False only for benchmarks measuring that
    cost); damaged samples are left out and recorded in `damage`, a damaged shard follows its
    policy."""
    damage = damage if damage is not None else Damage()
    try:
        size = shard.path.stat().st_size
    except OSError as e:
        damage.shard(shard.path, f"cannot be read ({e.strerror})", unnamed=shard.samples)
        return
    resized = None  # under `skip` a shard of the wrong size is read on: its samples' checksums say which are intact
    if shard.size is not None and size != shard.size:
        resized = f"is {size} bytes, its index entry says {shard.size} (truncated, extended or replaced)"
        if damage.policy == "error" or not shard.verified:
            damage.shard(shard.path, resized, unnamed=shard.samples)
            return
    with open(shard.path, "rb") as f:
        try:
            groups, table, damaged = _scan(f, size, shard, damage)
        except (tarfile.TarError, OSError, EOFError) as e:
            damage.shard(shard.path, f"not a readable tar ({e})", unnamed=shard.samples)
            return
        if resized is not None and not damaged:  # the size alone differs (zero padding cut or added): nothing lost
            damage.shard(shard.path, resized)
        positions = {key: i for i, key in enumerate(table)}
        for listed, (key, infos) in enumerate(groups):
            index = positions.get(key, listed)
            try:
                sample = _read_sample(f, infos, members, table.get(key, {}) if shard.verified and verify else None, decode)
            except (DamagedShard, tarfile.TarError, OSError, EOFError) as e:
                damage.sample(shard.path, key, str(e), index)
                continue
            yield {"__key__": key, "__shard__": shard.name, "__index__": index, **sample}


def _member(f: io.BufferedReader, info: tarfile.TarInfo) -> bytes:
    """A member's bytes, read straight from the file at the offset its header gave."""
    f.seek(info.offset_data)
    data = f.read(info.size)
    if len(data) != info.size:
        raise DamagedShard(f"member {info.name} ends early ({len(data)} of {info.size} bytes)")
    return data


def _read_sample(f: io.BufferedReader, infos: dict[str, tarfile.TarInfo], members: Collection[str] | None,
                 expected: dict[str, str] | None, decode: bool) -> dict[str, Any]:
    """One sample's members; `expected` (the checksum table's entry, None: unverified) must
    name exactly the members present, and each member read must match its digest."""
    absent = [ext for ext in members or () if ext not in infos]
    if absent:
        raise DamagedShard(f"lacks member(s) {absent}; it holds {sorted(infos)}")
    if expected is not None and expected.keys() != infos.keys():
        raise DamagedShard(f"members {sorted(infos)} differ from the checksummed {sorted(expected)}")
    data = {ext: _member(f, info) for ext, info in infos.items() if members is None or ext in members}
    if expected is not None:
        for ext, value in data.items():
            found = digest(value)
            if found != expected[ext]:
                raise DamagedShard(f"member {ext} fails its checksum (xxh3 {found}, written {expected[ext]})")
    if not decode:
        return data
    out = {}
    for ext, value in data.items():
        try:
            out[ext] = decode_member(ext, value)
        except Exception as e:  # any decoder's failure on bytes that passed (or lack) a checksum
            raise DamagedShard(f"member {ext} does not decode ({type(e).__name__}: {e})") from e
    return out


def iter_samples(shards: Iterable[Shard] | ShardSet, members: Collection[str] | None = None, decode: bool = True,
                 damage: Damage | None = None) -> Iterator[dict[str, Any]]:
    """Samples of several shards (or a whole set) in order; see read_shard."""
    if isinstance(shards, ShardSet):
        shards = shards.shards
    damage = damage if damage is not None else Damage()
    for shard in shards:
        yield from read_shard(shard, members, decode, damage)
