"""The cdfv-prep stages. Each reads the previous stage's output and writes its own through the
chunked runner; `run_stream` chains them in memory and writes only the outputs asked for."""
from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from cdfv import shards
from cdfv.outlock import output_lock
from cdfv.provenance import provenance
from cdfv.shards import spec as S

from .align import align, prealigned
from .codecs import CodecSpec
from .coding import CodecEngine, crop_latent, pad_face, pad_multiple, store_latent, unpad_face
from .detect import Detector, detect
from .images import read_image
from .ledger import LEDGER_LOCK, check_index
from .naming import FACES, set_name
from .quality import ms_ssim_batch, psnr
from .runner import (
    Advance,
    ChunkResult,
    ParquetChunks,
    Reject,
    RunStats,
    attempt,
    chunked,
    read_parquet_chunks,
    run_chunks,
)
from .settings import STREAM_OUTPUTS, RunOptions, StreamOptions
from .sources import Dataset, Item, split_part

DETECTION_SCHEMA = pa.schema(
    [
        ("key", pa.string()), ("source", pa.string()), ("identity", pa.string()), ("label", pa.int32()),
        ("width", pa.int32()), ("height", pa.int32()), ("status", pa.string()),
        ("box", pa.list_(pa.float64())), ("landmarks", pa.list_(pa.list_(pa.float64()))),
        ("score", pa.float64()), ("threshold", pa.float64()), ("candidates", pa.int32()),
        ("centred", pa.int32()), ("selected", pa.string()), ("detector", pa.string()),
    ]
)


@dataclass(frozen=True)
class Codec:
    """A loaded codec and where its weights came from."""

    spec: CodecSpec
    engine: CodecEngine
    weights_id: str
    untrained: bool

    def meta(self) -> dict[str, Any]:
        return self.spec.record(self.weights_id, self.untrained)


def _writer(o: RunOptions, name: str) -> shards.ShardSetWriter:
    return shards.ShardSetWriter(o.out / name, name, o.part, o.parts)


CARRIED = (S.LABEL, S.TEACHER)  # members a stage carries from a face to what is made of it, where present (and teacher maps)


def is_carried(member: str) -> bool:
    return member in CARRIED or S.is_teacher_map(member)


def is_taught(member: str) -> bool:
    """A teacher's output (embedding or map): of one face, so views and a new teacher replace it."""
    return member == S.TEACHER or S.is_teacher_map(member)


def carried(sample: dict[str, Any]) -> dict[str, Any]:
    return {m: v for m, v in sample.items() if is_carried(m)}


def _reads(source: shards.ShardSet, *members: str) -> tuple[str, ...]:
    """The members a stage reads from its input: its own, and those it carries that the set has."""
    return (*members, *_carried_members(source))


def _carried_members(source: shards.ShardSet) -> list[str]:
    return [m for m in source.members if is_carried(m)]


def _base(item: Item, dataset: str) -> dict[str, Any]:
    return {"key": item.key, "source": item.source, "dataset": dataset, "identity": item.identity, "label": item.label}


def _rate(strings: list[bytes], coded_pixels: int, face_pixels: int = S.FACE_PIXELS) -> dict[str, Any]:
    n = S.payload_bytes(strings)
    return {"bytes": n, "string_bytes": [len(s) for s in strings], "face_pixels": face_pixels,
            "coded_pixels": coded_pixels, "bpp": S.bits_per_pixel(n, face_pixels),
            "bpp_coded": S.bits_per_pixel(n, coded_pixels)}


def _quality(reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    return _qualities([reference], [decoded])[0]


def _qualities(references: list[np.ndarray], decoded: list[np.ndarray]) -> list[dict[str, float]]:
    """PSNR and MS-SSIM of each decoded face against its original, MS-SSIM batched."""
    scores = ms_ssim_batch(references, decoded)
    return [{"psnr": psnr(r, d), "ms_ssim": m} for r, d, m in zip(references, decoded, scores)]


def finish_set(o: RunOptions, name: str, kind: str, members: list[str], identities: list[str], meta: dict) -> dict:
    """Rebuilds the set's index from every shard on disk (all parts present)."""
    return finish_index(o.out / name, name, kind, members, identities, {**meta, "provenance": provenance()})


def finish_index(directory: Path, name: str, kind: str, members: list[str], identities: list[str], meta: dict) -> dict:
    """Writes the set's index over the shards on disk, checked against what the ledger recorded
    each chunk wrote before it replaces the previous index; parts finishing at once take turns, so
    an index temporary left here is a killed writer's and is removed."""
    with output_lock(directory, LEDGER_LOCK, wait=True):
        shards.remove_stale_temporaries(directory, S.INDEX_NAME)
        return shards.write_index(directory, name, kind, members, identities, meta, check=lambda index: check_index(directory, index))


def _items_inputs(chunk: list[Item]) -> list[str]:
    return [item.key for item in chunk]


def _options(o: RunOptions, **options: Any) -> dict[str, Any]:
    """The options a ledger records: what shapes a stage's outputs, with the chunking."""
    return {"chunk_size": o.chunk_size, **options}


def _input_identity(source: shards.ShardSet) -> dict[str, Any]:
    """How an input set was made: its meta without the software that wrote it (cdfv_version in
    sets written before provenance was recorded)."""
    return {"set": source.name, "meta": {k: v for k, v in source.meta.items() if k not in ("provenance", "cdfv_version")}}


# ---------------------------------------------------------------- detect

def detection_row(item: Item, shape: tuple[int, ...] | None, det: dict | None, detector_id: str) -> dict[str, Any]:
    h, w = (shape[0], shape[1]) if shape else (None, None)
    row = {"key": item.key, "source": item.source, "identity": item.identity, "label": item.label,
           "width": w, "height": h, "detector": detector_id}
    if det is None:
        return {**row, "status": "unreadable", "box": None, "landmarks": None, "score": None,
                "threshold": None, "candidates": 0, "centred": 0, "selected": None}
    return {**row, **det}


def run_detect(dataset: Dataset, detector: Detector, o: RunOptions, off_centre: str = "reject") -> RunStats:
    """Detects the labelled face of every image; one Parquet row per image, whatever its status."""
    directory = o.out / "detections"
    sink = ParquetChunks(directory, "detections", o.part, o.parts, DETECTION_SCHEMA)
    items = split_part(dataset.items, o.part, o.parts)

    def process(chunk: list[Item], advance: Advance) -> ChunkResult:
        rows, rejects = [], []
        for item in chunk:
            rgb = attempt("detect", item.key, item.source, lambda: read_image(dataset.path(item)), rejects)
            det = None if rgb is None else detect(detector, rgb, off_centre).as_dict()
            rows.append(detection_row(item, None if rgb is None else rgb.shape, det, detector.id))
            advance(1)
        statuses = Counter(r["status"] for r in rows)
        return ChunkResult({"detections": rows}, rejects, Counter({f"status_{k}": v for k, v in statuses.items()}))

    options = _options(o, dataset=dataset.name, detector=detector.id, off_centre=off_centre)
    return run_chunks("detect", chunked(items, o.chunk_size), process, {"detections": sink}, {"detections": options}, _items_inputs,
                      o.part, o.parts, o.strict)


def load_detections(directory: Path) -> dict[str, dict[str, Any]]:
    """key -> detection row, from every detections chunk of every part."""
    table = read_parquet_chunks(directory, "detections")
    return {r["key"]: r for r in table.to_pylist()}


# ---------------------------------------------------------------- align

def _detection_meta(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("status", "box", "landmarks", "score", "threshold", "candidates", "centred", "selected", "detector")}


def aligned_face(
    item: Item, rgb: np.ndarray, row: dict[str, Any] | None, method: str, no_face: str
) -> tuple[np.ndarray, dict[str, Any] | None, dict[str, Any]]:
    """(face, detection metadata or None, alignment metadata); raises ValueError for a face that
    the no-face policy does not keep."""
    if row is None:
        face, meta = prealigned(rgb)
        return face, None, meta
    det = _detection_meta(row)
    if row["status"] == "ok":
        face, meta = align(rgb, row, method)
        return face, det, meta
    if no_face == "whole":
        face, meta = prealigned(rgb)
        return face, det, {**meta, "fallback": "no_face"}
    raise ValueError(f"no face containing the image centre above threshold 0.7 (status {row['status']})")


def face_sample(item: Item, dataset: str, face: np.ndarray, det: dict | None, align_meta: dict) -> dict[str, Any]:
    meta = {**_base(item, dataset), "detection": det, "align": align_meta}
    label = {S.LABEL: item.label} if item.label is not None else {}
    return {"__key__": item.key, S.IMAGE: face, **label, S.META: meta}


def run_align(
    dataset: Dataset, detections: dict[str, dict] | None, o: RunOptions, method: str = "thesis",
    no_face: str = "skip", name: str = "faces",
) -> RunStats:
    """Aligned 224x224 original faces as an image shard set (the original anchor's input)."""
    items = split_part(dataset.items, o.part, o.parts)

    def process(chunk: list[Item], advance: Advance) -> ChunkResult:
        samples, rejects = [], []
        for item in chunk:
            def one() -> dict[str, Any]:
                row = None
                if detections is not None:
                    row = detections.get(item.key)
                    if row is None:
                        raise ValueError("no detection row for this image (run `cdfv-prep detect` on the same dataset)")
                    if row["status"] == "unreadable":
                        raise ValueError("unreadable at detection")
                face, det, meta = aligned_face(item, read_image(dataset.path(item)), row, method, no_face)
                return face_sample(item, dataset.name, face, det, meta)

            sample = attempt("align", item.key, item.source, one, rejects)
            if sample is not None:
                samples.append(sample)
            advance(1)
        fallbacks = sum(1 for s in samples if s[S.META]["align"].get("fallback"))
        return ChunkResult({name: samples}, rejects, Counter(faces=len(samples), no_face_whole_image=fallbacks))

    options = _options(o, dataset=dataset.name, method=method, no_face=no_face, detections=detections is not None)
    stats = run_chunks("align", chunked(items, o.chunk_size), process, {name: _writer(o, name)}, {name: options}, _items_inputs,
                       o.part, o.parts, o.strict)
    finish_set(o, name, "image", [S.IMAGE, S.META] + ([S.LABEL] if dataset.identities else []), dataset.identities,
               {"dataset": dataset.name, "stage": "align", "variant": "original",
                "align": method if detections is not None else "none", "no_face": no_face})
    return stats


# ---------------------------------------------------------------- shard-set driven stages

def _shard_chunks(source: shards.ShardSet, o: RunOptions) -> list[list[shards.Shard]]:
    """This part's input shards, one chunk each."""
    return [[s] for s in split_part(source.shards, o.part, o.parts)]


def _count(chunk: list[shards.Shard]) -> int:
    return sum(s.samples for s in chunk)


def _shard_inputs(chunk: list[shards.Shard]) -> list[str]:
    """A chunk's inputs as a ledger records them: each input shard's name, samples and bytes."""
    return [f"{s.name}:{s.samples}:{s.size}" for s in chunk]


def _damage_reject(lost: shards.Lost, stage: str) -> Reject:
    """A lost input sample as a reject: by key, or where no checksum table names the lost samples
    (an unreadable shard) one reject for them, their count in the reason."""
    return Reject(lost.key or "", lost.shard, stage,
                  f"damaged input {lost.shard}: {lost.problem}" + ("" if lost.key else f" ({lost.samples} samples lost)"))


def _samples(chunk: list[shards.Shard], members: tuple[str, ...], o: RunOptions, stage: str,
             rejects: list[Reject], decode: bool = True) -> Iterator[dict[str, Any]]:
    """The chunk's input samples; what the reader finds damaged becomes rejects of this stage,
    one per lost sample (damage that lost none, bytes after a shard's end, is in the summary)."""
    for shard in chunk:
        seen = len(o.damage.lost)
        yield from shards.read_shard(shard, members, decode=decode, damage=o.damage)
        rejects += [_damage_reject(lost, stage) for lost in o.damage.lost[seen:] if lost.samples]


def _batches(it: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for x in it:
        batch.append(x)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_batch(codec: Codec, batch: list[dict[str, Any]], input_name: str, rejects: list[Reject]) -> list[tuple[dict, dict, Any]]:
    """Encodes a batch of face samples; a batch failure falls back to one by one so only the bad
    sample is rejected."""
    pictures = [pad_face(s[S.IMAGE]) for s in batch]
    try:
        encoded = codec.engine.encode(pictures)
    except Exception:
        encoded = [attempt("encode", s["__key__"], s[S.META]["source"], lambda p=p: codec.engine.encode([p])[0], rejects)
                   for s, p in zip(batch, pictures)]
    out = []
    for s, e in zip(batch, encoded):
        if e is None:
            continue
        meta = {**s[S.META], "codec": codec.meta(), "rate": _rate(e.strings, S.CODED_SIZE ** 2),
                "devices": {"encode": codec.engine.device_type}, "input": {"set": input_name, "shard": s["__shard__"]},
                "latent_crc32": None if e.y_hat is None else latent_crc(store_latent(e.y_hat, codec.spec))}
        out.append((s, meta, e))
    return out


def run_encode(source: shards.ShardSet, codec: Codec, o: RunOptions, name: str) -> RunStats:
    """Faces (image set) to real bitstreams (bitstream set)."""
    if source.kind != "image":
        raise shards.ShardSetError(f"{source.directory}: encode needs an image shard set (faces), got kind {source.kind!r}")

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects, nbytes = [], [], 0
        for batch in _batches(_samples(chunk, _reads(source, S.IMAGE, S.META), o, "encode", rejects), o.batch_size):
            for s, meta, e in _encode_batch(codec, batch, source.name, rejects):
                samples.append({"__key__": s["__key__"], S.BITSTREAM: S.pack_bitstream(e.strings, e.shape),
                                **carried(s), S.META: meta})
                nbytes += meta["rate"]["bytes"]
            advance(len(batch))
        return ChunkResult({name: samples}, rejects, Counter(encoded=len(samples), bytes=nbytes))

    options = _options(o, input=_input_identity(source), codec=codec.meta())
    stats = run_chunks("encode", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    finish_set(o, name, "bitstream", [S.BITSTREAM, S.META, *_carried_members(source)], source.identities,
               {**source.meta, "stage": "encode", "variant": "bitstream", "codec": codec.meta(), "input_set": source.name,
                "untrained": codec.untrained or source.meta.get("untrained", False)})
    return stats


def check_codec_matches(source: shards.ShardSet, codec: Codec) -> None:
    """Refuses to entropy-decode with other weights than the encoder used."""
    recorded = source.meta.get("codec", {})
    if (recorded.get("name"), recorded.get("quality"), recorded.get("weights")) != (codec.spec.name, codec.spec.quality, codec.weights_id):
        raise shards.ShardSetError(
            f"{source.directory}: encoded with {recorded.get('name')} q{recorded.get('quality')} weights {recorded.get('weights')}, "
            f"but decoding with {codec.spec.name} q{codec.spec.quality} weights {codec.weights_id}; pass the same codec options"
        )


def latent_crc(y_hat: np.ndarray) -> int:
    """Checksum of the stored latent, recorded at encoding and checked after entropy decoding."""
    return zlib.crc32(np.ascontiguousarray(y_hat).tobytes())


def check_device(recorded: str, has_crc: bool, codec: Codec) -> None:
    """Entropy decoding recomputes the hyper-decoder's scales; on another device type they can
    round differently and the range decoder then returns garbage silently (CompressAI issues 54,
    235, 279). A mismatch is allowed only where the encoder's latent checksum verifies each sample."""
    if recorded != codec.engine.device_type and not has_crc:
        raise RuntimeError(
            f"bitstreams were encoded on {recorded} but would be decoded on {codec.engine.device_type}, and they carry "
            f"no latent checksum to verify against; decode with --device {recorded}"
        )


def _decode_batch(codec: Codec, batch: list[dict[str, Any]], rejects: list[Reject]) -> list[tuple[dict, np.ndarray]]:
    """Entropy-decodes a batch; a sample whose latent fails its encoder checksum is rejected."""
    for s in batch:
        check_device(s[S.META]["devices"]["encode"], s[S.META].get("latent_crc32") is not None, codec)
    y_hat = codec.engine.entropy_decode([S.unpack_bitstream(s[S.BITSTREAM]) for s in batch])
    out = []
    for s, y in zip(batch, y_hat):
        stored = store_latent(y, codec.spec)
        crc = s[S.META].get("latent_crc32")
        if crc is not None and latent_crc(stored) != crc:
            rejects.append(Reject(s["__key__"], s[S.META]["source"], "entropy-decode",
                                  f"decoded latent differs from the encoder's (encoded on {s[S.META]['devices']['encode']}, "
                                  f"decoded on {codec.engine.device_type})"))
            continue
        out.append((s, stored))
    return out


def run_entropy_decode(source: shards.ShardSet, codec: Codec, o: RunOptions, name: str) -> RunStats:
    """Bitstreams to full y_hat latents (M x 16 x 16)."""
    if source.kind != "bitstream":
        raise shards.ShardSetError(f"{source.directory}: entropy-decode needs a bitstream set (from encode), got {source.kind!r}")
    check_codec_matches(source, codec)

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects = [], []
        for batch in _batches(_samples(chunk, _reads(source, S.BITSTREAM, S.META), o, "entropy-decode", rejects), o.batch_size):
            for s, y in _decode_batch(codec, batch, rejects):
                meta = {**s[S.META], "devices": {**s[S.META]["devices"], "decode": codec.engine.device_type},
                        "latent": latent_meta(y, "entropy-decoded")}
                samples.append({"__key__": s["__key__"], S.LATENT: y, **carried(s), S.META: meta})
            advance(len(batch))
        return ChunkResult({name: samples}, rejects, Counter(latents=len(samples)))

    options = _options(o, input=_input_identity(source), codec=codec.meta())
    stats = run_chunks("entropy-decode", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    finish_set(o, name, "latent", [S.LATENT, S.META, *_carried_members(source)], source.identities,
               {**source.meta, "stage": "entropy-decode", "variant": "latent", "latent_crop": None})
    return stats


def latent_meta(y: np.ndarray, source: str) -> dict[str, Any]:
    return {"shape_full": list(y.shape), "crop": [0, 0, y.shape[1], y.shape[2]], "dtype": str(y.dtype), "source": source}


def run_crop_latent(source: shards.ShardSet, o: RunOptions, name: str, size: int | None = 14) -> RunStats:
    """Centre-crops stored latents (16x16 -> 14x14 by default; None keeps them whole)."""
    if source.kind != "latent":
        raise shards.ShardSetError(f"{source.directory}: crop-latent needs a latent set, got {source.kind!r}")

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects = [], []
        for s in _samples(chunk, _reads(source, S.LATENT, S.META), o, "crop-latent", rejects):
            def one(s: dict = s) -> dict[str, Any]:
                y, crop = crop_latent(s[S.LATENT], size)
                meta = {**s[S.META], "latent": {**s[S.META]["latent"], "crop": crop}}
                return {"__key__": s["__key__"], S.LATENT: y, **carried(s), S.META: meta}

            out = attempt("crop-latent", s["__key__"], s[S.META]["source"], one, rejects)
            if out is not None:
                samples.append(out)
            advance(1)
        return ChunkResult({name: samples}, rejects, Counter(latents=len(samples)))

    options = _options(o, input=_input_identity(source), size=size)
    stats = run_chunks("crop-latent", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    finish_set(o, name, "latent", [S.LATENT, S.META, *_carried_members(source)], source.identities,
               {**source.meta, "stage": "crop-latent", "latent_crop": size})
    return stats


def _reference_faces(reference: shards.ShardSet, shard_names: set[str], keys: set[str], damage: shards.Damage) -> dict[str, np.ndarray]:
    chosen = [s for s in reference.shards if s.name in shard_names]
    return {s["__key__"]: s[S.IMAGE] for s in shards.iter_samples(chosen, (S.IMAGE,), damage=damage) if s["__key__"] in keys}


def run_decode(source: shards.ShardSet, reference: shards.ShardSet, codec: Codec, o: RunOptions, name: str) -> RunStats:
    """Bitstreams to decoded 224x224 faces (the decoded anchors), with PSNR and MS-SSIM against the
    original aligned faces of `reference`."""
    if source.kind != "bitstream":
        raise shards.ShardSetError(f"{source.directory}: decode needs a bitstream set (from encode), got {source.kind!r}")
    check_codec_matches(source, codec)

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects = [], []
        coded = list(_samples(chunk, _reads(source, S.BITSTREAM, S.META), o, "decode", rejects))  # bitstreams are small: one read per chunk
        originals = _reference_faces(reference, {s[S.META]["input"]["shard"] for s in coded}, {s["__key__"] for s in coded}, o.damage)
        for batch in _batches(iter(coded), o.batch_size):
            decoded = _decode_batch(codec, batch, rejects)
            advance(len(batch))
            if not decoded:
                continue
            faces = [unpad_face(p) for p in codec.engine.reconstruct(np.stack([y for _, y in decoded]))]
            kept = []
            for (s, _), face in zip(decoded, faces):
                if s["__key__"] in originals:
                    kept.append((s, face))
                else:
                    rejects.append(Reject(s["__key__"], s[S.META]["source"], "decode",
                                          f"original face missing from {reference.name} (absent or damaged there)"))
            qualities = _qualities([originals[s["__key__"]] for s, _ in kept], [face for _, face in kept]) if kept else []
            for (s, face), quality in zip(kept, qualities):
                meta = {**s[S.META], "devices": {**s[S.META]["devices"], "decode": codec.engine.device_type}, "quality": quality}
                samples.append({"__key__": s["__key__"], S.IMAGE: face, **carried(s), S.META: meta})
        return ChunkResult({name: samples}, rejects, Counter(decoded=len(samples)))

    options = _options(o, input=_input_identity(source), reference=_input_identity(reference), codec=codec.meta())
    stats = run_chunks("decode", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    finish_set(o, name, "image", [S.IMAGE, S.META, *_carried_members(source)], source.identities,
               {**source.meta, "stage": "decode", "variant": "decoded", "order": "align-then-encode"})
    return stats


def _read_range(chosen: list[shards.Shard], start: int, stop: int, members: tuple[str, ...], o: RunOptions,
                rejects: list[Reject], advance: Advance) -> list[dict[str, Any]]:
    """Samples at positions start..stop-1 of the concatenated shards (index order; a damaged
    sample keeps its position, so chunks stay the same whatever is damaged)."""
    out, offset = [], 0
    for shard in chosen:
        if offset + shard.samples > start and offset < stop:
            damage, before = shards.Damage(o.damage.policy), len(out)  # this read's: a shard spanning chunks is read by each
            out += [s for s in shards.read_shard(shard, members, damage=damage) if start <= offset + s["__index__"] < stop]
            advance(len(out) - before)
            for lost in damage.lost:
                # a lost sample is rejected and counted by the chunk holding it, unnamed ones by the chunk where they begin
                if start <= offset + (lost.index or 0) < stop and o.damage.add(lost) and lost.samples:
                    rejects.append(_damage_reject(lost, "shard"))
        offset += shard.samples
    return out


def run_shard(source: shards.ShardSet, o: RunOptions, name: str, members: list[str]) -> RunStats:
    """Repacks a set into shards of o.chunk_size samples with the chosen members (e.g. dropping
    `bits` or `png`) under a new name; part i/n repacks the i-th block of the input's shards."""
    missing = [m for m in members if m not in source.members]
    if missing:
        raise shards.ShardSetError(f"{source.directory}: has no member(s) {missing}; it holds {source.members}")
    chosen = split_part(source.shards, o.part, o.parts)
    total = sum(s.samples for s in chosen)
    chunks = [[(i, min(i + o.chunk_size, total))] for i in range(0, total, o.chunk_size)]

    def process(chunk: list[tuple[int, int]], advance: Advance) -> ChunkResult:
        (start, stop), = chunk
        rejects: list[Reject] = []
        samples = _read_range(chosen, start, stop, tuple(members), o, rejects, advance)
        return ChunkResult({name: samples}, rejects, Counter(samples=len(samples)))

    options = _options(o, input=_input_identity(source), input_shards=_shard_inputs(chosen), members=sorted(members))
    stats = run_chunks("shard", chunks, process, {name: _writer(o, name)}, {name: options}, lambda c: [f"{c[0][0]}-{c[0][1]}"],
                       o.part, o.parts, o.strict, lambda c: c[0][1] - c[0][0])
    finish_set(o, name, source.kind, members, source.identities, {**source.meta, "repacked_from": source.name})
    return stats


# ---------------------------------------------------------------- streaming

def _selected(key: str, fraction: float) -> bool:
    """Deterministic per-key sampling: the same keys are verified on every run and machine."""
    return zlib.crc32(key.encode()) % 10_000 < round(fraction * 10_000)


def stream_latents(codec: Codec, encoded: list, keys: list[str], so: StreamOptions) -> list[tuple[np.ndarray, str]]:
    """y_hat per sample with its provenance: the encoder's own (fast path), checked against
    entropy decoding for the selected keys, or entropy-decoded."""
    if not so.fast_path or encoded[0].y_hat is None:
        y = codec.engine.entropy_decode([(e.strings, e.shape) for e in encoded])
        return [(store_latent(v, codec.spec), "entropy-decoded") for v in y]
    out = [(store_latent(e.y_hat, codec.spec), "fast-path") for e in encoded]
    check = [i for i, k in enumerate(keys) if _selected(k, so.verify)]
    if check:
        decoded = codec.engine.entropy_decode([(encoded[i].strings, encoded[i].shape) for i in check])
        for i, y in zip(check, decoded):
            if not np.array_equal(store_latent(y, codec.spec), out[i][0]):
                raise RuntimeError(f"{keys[i]}: fast-path latent differs from the entropy-decoded one; rerun with --no-fast-path")
            out[i] = (out[i][0], "fast-path-verified")
    return out


def _whole_image_decoded(codec: Codec, face: "Face", so: StreamOptions) -> tuple[np.ndarray, dict, dict]:
    """Thesis 5.3 order: encode the whole picture (zero-padded to multiples of 64), decode, crop
    back, then align the decoded picture with the landmarks found on the original."""
    item, rgb, row = face.whole
    padded, (left, top) = pad_multiple(rgb)
    e = codec.engine.encode([padded])[0]
    y = codec.engine.entropy_decode([(e.strings, e.shape)])
    h, w = rgb.shape[:2]
    picture = codec.engine.reconstruct(y)[0][top : top + h, left : left + w]
    decoded, _, align_meta = aligned_face(item, picture, row, so.align, so.no_face)
    n = S.payload_bytes(e.strings)
    rate = {"bytes": n, "string_bytes": [len(s) for s in e.strings], "image_pixels": h * w,
            "coded_pixels": padded.shape[0] * padded.shape[1], "bpp": S.bits_per_pixel(n, h * w),
            "bpp_coded": S.bits_per_pixel(n, padded.shape[0] * padded.shape[1])}
    return decoded, rate, align_meta


@dataclass
class Face:
    """One aligned face on its way through `run`: its json metadata, the members it carries
    (label, teacher embedding) and, for encode-then-align, the whole picture to code instead."""

    key: str
    face: np.ndarray
    meta: dict[str, Any]
    carry: dict[str, Any]
    whole: tuple[Item, np.ndarray, dict] | None = None


def _code_faces(codec: Codec, batch: list[Face], so: StreamOptions, names: dict[str, str],
                outputs: dict[str, list]) -> int:
    """Codes one batch of faces with one codec into its latent and decoded outputs; returns the
    payload bytes."""
    coded = {**codec.meta()}
    devices = {"encode": codec.engine.device_type, "decode": codec.engine.device_type}
    if so.order == "encode-then-align":
        nbytes = 0
        for f in batch:
            decoded, rate, align_meta = _whole_image_decoded(codec, f, so)
            meta = {**f.meta, "align": align_meta, "codec": coded, "rate": rate, "order": so.order, "devices": devices,
                    "quality": _quality(f.face, decoded)}
            outputs[names["decoded"]].append({"__key__": f.key, S.IMAGE: decoded, **f.carry, S.META: meta})
            nbytes += rate["bytes"]
        return nbytes
    encoded = codec.engine.encode([pad_face(f.face) for f in batch])
    latents = stream_latents(codec, encoded, [f.key for f in batch], so)
    metas = [{**f.meta, "codec": coded, "rate": _rate(e.strings, S.CODED_SIZE ** 2), "devices": devices}
             for f, e in zip(batch, encoded)]
    decoded = []
    if "decoded" in so.outputs or so.with_png:
        pictures = codec.engine.reconstruct(np.stack([y for y, _ in latents]))
        faces = [unpad_face(picture) for picture in pictures]
        decoded = list(zip(faces, _qualities([f.face for f in batch], faces)))
    if "latents" in so.outputs:
        for i, (f, m, e, (y, source)) in enumerate(zip(batch, metas, encoded, latents)):
            crop, box = crop_latent(y, so.latent_size)
            meta = {**m, "latent": {**latent_meta(y, source), "crop": box}}
            sample = {"__key__": f.key, S.LATENT: crop, **f.carry, S.META: meta}
            if so.with_bits:
                sample[S.BITSTREAM] = S.pack_bitstream(e.strings, e.shape)
            if so.with_png:
                sample[S.IMAGE], meta["quality"] = decoded[i]
            outputs[names["latents"]].append(sample)
    if "decoded" in so.outputs:
        for f, m, (face, quality) in zip(batch, metas, decoded):
            meta = {**m, "quality": quality, "order": so.order}
            outputs[names["decoded"]].append({"__key__": f.key, S.IMAGE: face, **f.carry, S.META: meta})
    return sum(m["rate"]["bytes"] for m in metas)


def run_stream(source: Dataset | shards.ShardSet, detector: Detector | None, codecs: list[Codec], o: RunOptions,
               so: StreamOptions) -> RunStats:
    """A dataset (detected and aligned here) or an image set of faces to the requested outputs
    of every codec in one pass, without intermediates nobody asked for: a quality sweep reads and
    aligns each picture once."""
    from_set = isinstance(source, shards.ShardSet)
    unknown = set(so.outputs) - set(STREAM_OUTPUTS)
    if unknown or not so.outputs:
        raise ValueError(f"outputs must be among {STREAM_OUTPUTS}, got {so.outputs}")
    if from_set and set(so.outputs) - {"latents", "decoded"}:
        raise ValueError("run --input codes faces already aligned: its outputs are latents and decoded")
    if from_set and source.kind != "image":
        raise shards.ShardSetError(f"{source.directory}: run --input needs an image set of faces, got kind {source.kind!r}")
    if so.order == "encode-then-align" and (from_set or set(so.outputs) - {"decoded", "detections"}):
        raise ValueError("--order encode-then-align makes decoded faces only, from a dataset (its bitstreams code whole images, not faces)")
    if so.order == "encode-then-align" and not so.detect:
        raise ValueError("--order encode-then-align needs detection (landmarks from the original image)")
    if not codecs and {"latents", "decoded"} & set(so.outputs):
        raise ValueError("latents and decoded outputs need a codec")
    names = {c.spec: {kind: set_name(kind, c.spec) for kind in ("latents", "decoded")} for c in codecs}
    sinks: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    input_id = _input_identity(source) if from_set else {"dataset": source.name}
    stream = {k: v for k, v in asdict(so).items() if k != "outputs"}
    base_options = _options(o, **input_id, detector=detector.id if detector else None, stream=stream)
    for out in so.outputs:
        if out == "detections":
            sinks[out] = ParquetChunks(o.out / "detections", "detections", o.part, o.parts, DETECTION_SCHEMA)
            options[out] = base_options
        elif out == "faces":
            sinks[out] = _writer(o, FACES)
            options[out] = base_options
        else:
            for c in codecs:
                name = names[c.spec][out]
                sinks[name] = _writer(o, name)
                options[name] = {**base_options, "codec": c.meta()}

    def prepare(item: Item, rows: list[dict]) -> Face:
        rgb = read_image(source.path(item))
        row = None
        if so.detect:
            row = detection_row(item, rgb.shape, detect(detector, rgb, so.off_centre).as_dict(), detector.id)
            rows.append(row)
        face, det, align_meta = aligned_face(item, rgb, row, so.align, so.no_face)
        meta = {**_base(item, source.name), "detection": det, "align": align_meta}
        label = {S.LABEL: item.label} if item.label is not None else {}
        return Face(item.key, face, meta, label, (item, rgb, row) if so.order == "encode-then-align" else None)

    def face_batches(chunk: list, rejects: list[Reject], rows: list[dict]) -> Iterator[tuple[list[Face], int]]:
        """The chunk's faces a batch at a time, each with the number of inputs it took."""
        if from_set:
            members = (S.IMAGE, S.META, *_carried_members(source))
            for batch in _batches(_samples(chunk, members, o, "run", rejects), o.batch_size):
                yield [Face(s["__key__"], s[S.IMAGE], s[S.META], carried(s)) for s in batch], len(batch)
            return
        for items in chunked(chunk, o.batch_size):
            faces = []
            for item in items:
                seen = len(rows)
                face = attempt("prepare", item.key, item.source, lambda i=item: prepare(i, rows), rejects)
                if so.detect and len(rows) == seen:  # unreadable: no detection ran
                    rows.append(detection_row(item, None, None, detector.id))
                if face is not None:
                    faces.append(face)
            yield faces, len(items)

    def process(chunk: list, advance: Advance) -> ChunkResult:
        rejects: list[Reject] = []
        rows: list[dict] = []
        outputs: dict[str, list] = {name: [] for name in sinks}
        outputs["detections"] = rows
        nbytes: Counter = Counter()
        counters = Counter(faces=0, no_face_whole_image=0)
        for faces, inputs in face_batches(chunk, rejects, rows):
            if "faces" in so.outputs:
                outputs["faces"] += [{"__key__": f.key, S.IMAGE: f.face, **f.carry, S.META: f.meta} for f in faces]
            if faces and {"latents", "decoded"} & set(so.outputs):
                for c in codecs:
                    nbytes[c.spec.label] += _code_faces(c, faces, so, names[c.spec], outputs)
            counters.update(faces=len(faces), no_face_whole_image=sum(1 for f in faces if f.meta["align"].get("fallback")))
            advance(inputs)
        counters.update({f"bytes {label}": n for label, n in nbytes.items()})
        counters.update({f"coded {label}": counters["faces"] for label in nbytes})
        return ChunkResult(outputs, rejects, counters)

    if from_set:
        chunks, inputs_of, count = _shard_chunks(source, o), _shard_inputs, _count
    else:
        chunks, inputs_of, count = chunked(split_part(source.items, o.part, o.parts), o.chunk_size), _items_inputs, len
    stats = run_chunks("run", chunks, process, sinks, options, inputs_of, o.part, o.parts, o.strict, count)
    carried_members = _carried_members(source) if from_set else ([S.LABEL] if source.identities else [])
    base = {"stage": "run", "order": so.order}
    base.update({**source.meta, "input_set": source.name} if from_set else
                {"dataset": source.name, "align": so.align if so.detect else "none", "no_face": so.no_face,
                 "detector": detector.id if detector else None})
    if "faces" in so.outputs:
        finish_set(o, FACES, "image", [S.IMAGE, S.META, *carried_members], source.identities, {**base, "variant": "original"})
    for c in codecs:
        coded = {**base, "codec": c.meta(), "untrained": c.untrained or bool(base.get("untrained"))}
        if "latents" in so.outputs:
            members = [S.LATENT, S.META, *carried_members] + ([S.BITSTREAM] if so.with_bits else []) + ([S.IMAGE] if so.with_png else [])
            finish_set(o, names[c.spec]["latents"], "latent", members, source.identities,
                       {**coded, "variant": "latent", "latent_crop": so.latent_size, "fast_path": so.fast_path, "verify": so.verify})
        if "decoded" in so.outputs:
            finish_set(o, names[c.spec]["decoded"], "image", [S.IMAGE, S.META, *carried_members], source.identities,
                       {**coded, "variant": "decoded"})
    return stats


# ---------------------------------------------------------------- views and teachers

def view_key(key: str, index: int) -> str:
    return f"{key}__v{index}"


def augmented_views(face: np.ndarray, count: int, seed: int, key: str) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """The face itself and count-1 thesis augmentations of it (trainer.augment: resize, random
    crop, grayscale), drawn from a generator seeded by (seed, key): the same views on every run."""
    import torch

    from cdfv.trainer.augment import AugmentConfig, apply_images, draw_images

    views = [(face, {"index": 0, "augmented": False})]
    if count > 1:
        cfg = AugmentConfig()
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{key}".encode()))
        draw = draw_images(count - 1, cfg, gen)
        x = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1)[None].expand(count - 1, -1, -1, -1)
        out = apply_images(x, cfg, draw).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(count - 1):
            views.append((np.ascontiguousarray(out[i]), {
                "index": i + 1, "augmented": True, "resize": cfg.resize, "crop": [int(draw.top[i]), int(draw.left[i]), cfg.crop],
                "gray": bool(draw.gray[i])}))
    return views


def _view_landmarks(landmarks: list | None, view: dict[str, Any]) -> list | None:
    """Landmarks of the face moved into the view (scaled by the resize, shifted by the crop)."""
    if landmarks is None or not view["augmented"]:
        return landmarks
    scale = view["resize"] / S.FACE_SIZE
    top, left, _ = view["crop"]
    return (np.asarray(landmarks, dtype=np.float64) * scale - [left, top]).round(2).tolist()


def run_views(source: shards.ShardSet, o: RunOptions, name: str, count: int, seed: int = 0) -> RunStats:
    """Each face and count-1 augmented views of it, keys <key>__v<i>, as an image set: latents and
    a teacher's targets of the same augmented faces, made once (thesis 6.3.2 augments the face
    before the encoder)."""
    if source.kind != "image":
        raise shards.ShardSetError(f"{source.directory}: views needs an image set of faces, got kind {source.kind!r}")
    if count < 1:
        raise ValueError(f"--views {count}: need at least 1")

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects = [], []
        for s in _samples(chunk, _reads(source, S.IMAGE, S.META), o, "views", rejects):
            for face, view in augmented_views(s[S.IMAGE], count, seed, s["__key__"]):
                align = s[S.META].get("align") or {}
                meta = {**s[S.META], "key": view_key(s["__key__"], view["index"]), "view": {"of": s["__key__"], **view},
                        "align": {**align, "landmarks": _view_landmarks(align.get("landmarks"), view)}}
                # a teacher's embedding of the original face is not one of the view's: views are taught anew
                samples.append({"__key__": meta["key"], S.IMAGE: face, **carried({k: v for k, v in s.items() if not is_taught(k)}),
                                S.META: meta})
            advance(1)
        return ChunkResult({name: samples}, rejects, Counter(views=len(samples)))

    options = _options(o, input=_input_identity(source), views=count, seed=seed)
    stats = run_chunks("views", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    members = [S.IMAGE, S.META] + ([S.LABEL] if S.LABEL in source.members else [])
    finish_set(o, name, "image", members, source.identities,
               {**source.meta, "stage": "views", "views": count, "view_seed": seed, "input_set": source.name,
                "augment": {"resize": 256, "crop": 224, "gray_p": 0.2}})
    return stats


def run_teacher(source: shards.ShardSet, model: Any, o: RunOptions, name: str, junctions: tuple[str, ...] = ()) -> RunStats:
    """The image set again with each face's embedding by `model` (a cdfv.eval.facemodels model)
    as member teacher.npy; dlib's torch network also stores each face's face -> chip transform in
    the json (teacher.chip), which an identity-preserving codec warps its reconstruction by, and
    with `junctions` its feature map at each as teacher-<junction>.npy: the dense targets of a
    transplanted student. The other members are copied as they were stored."""
    if source.kind != "image":
        raise shards.ShardSetError(f"{source.directory}: teacher needs an image set of faces, got kind {source.kind!r}")
    if junctions and not hasattr(model, "embed_with_maps"):
        raise ValueError(f"--maps {','.join(junctions)}: junction maps come from dlib's network (--model dlib), "
                         f"not {model.info['model_id']}")
    if junctions and model.flip:
        raise ValueError(f"--maps {','.join(junctions)}: junction maps are of one chip per face; a flipped teacher has two")
    members = tuple(m for m in source.members if not is_taught(m))

    def one(faces: np.ndarray, metas: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        if hasattr(model, "embed_with_maps") and not model.flip:
            return model.embed_with_maps(faces, metas, junctions)
        return model.embed(faces, metas), {}, None

    def embed(batch: list[dict[str, Any]], rejects: list[Reject]) -> list[dict[str, Any] | None]:
        """Per sample, the members the teacher adds (and its json, with the chip transform)."""
        faces = np.stack([shards.decode_member(S.IMAGE, s[S.IMAGE]) for s in batch])
        stored = [shards.decode_member(S.META, s[S.META]) for s in batch]
        metas = [{"key": s["__key__"], **m} for s, m in zip(batch, stored)]

        def members_of(e: np.ndarray, maps: dict[str, np.ndarray], chips: np.ndarray | None, i: int, json: dict) -> dict[str, Any]:
            out = {S.TEACHER: np.asarray(e[i], dtype=np.float32), **{S.teacher_map(j): m[i] for j, m in maps.items()}}
            if chips is not None:
                out[S.META] = {**json, "teacher": {"chip": chips[i].round(6).tolist()}}
            return out

        try:
            e, maps, chips = one(faces, metas)
            return [members_of(e, maps, chips, i, j) for i, j in enumerate(stored)]
        except ValueError:  # one face the model cannot take: find it, keep the others
            return [attempt("teacher", s["__key__"], m.get("source", ""),
                            lambda f=f, m=m, j=j: members_of(*one(f[None], [m]), 0, j), rejects)
                    for s, f, m, j in zip(batch, faces, metas, stored)]

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects = [], []
        for batch in _batches(_samples(chunk, members, o, "teacher", rejects, decode=False), o.batch_size):
            for s, taught in zip(batch, embed(batch, rejects)):
                if taught is not None:
                    samples.append({**{k: v for k, v in s.items() if k == "__key__" or not k.startswith("__")}, **taught})
            advance(len(batch))
        return ChunkResult({name: samples}, rejects, Counter(embedded=len(samples)))

    info = {k: model.info.get(k) for k in ("model_id", "arch", "embedding_dim", "weights", "preprocessing")}
    options = _options(o, input=_input_identity(source), teacher=info["model_id"], **({"maps": list(junctions)} if junctions else {}))
    stats = run_chunks("teacher", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    if junctions:
        info["maps"] = list(junctions)
    finish_set(o, name, "image", [*members, S.TEACHER, *(S.teacher_map(j) for j in junctions)], source.identities,
               {**source.meta, "stage": "teacher", "teacher": info, "input_set": source.name})
    return stats


# ---------------------------------------------------------------- conventional-codec anchors

def mean_rate(source: shards.ShardSet) -> float:
    """Mean probe rate (json rate.bpp) of a coded set: the target a conventional anchor matches."""
    rates = [s[S.META]["rate"]["bpp"] for s in source.samples((S.META,)) if "rate" in s[S.META]]
    if not rates:
        raise shards.ShardSetError(f"{source.directory}: no sample carries a rate to match")
    return float(np.mean(rates))


def sample_faces(source: shards.ShardSet, n: int) -> list[np.ndarray]:
    """n faces evenly spaced through the set (all of them if it holds fewer): the rate-matching
    sample. Only the chosen PNGs are decoded, and reading stops once n are in hand."""
    step = max(1, source.num_samples // n)
    faces = []
    for i, raw in enumerate(source.samples((S.IMAGE,), decode=False)):
        if i % step == 0:
            faces.append(shards.decode_member(S.IMAGE, raw[S.IMAGE]))
            if len(faces) == n:
                break
    return faces


def run_anchor(source: shards.ShardSet, codec: Any, value: float, o: RunOptions, name: str, match: dict | None = None) -> RunStats:
    """Faces coded and decoded by a conventional codec (cdfv.pipeline.conventional) -> decoded image
    set with per-image rate, PSNR and MS-SSIM, alike the learned codecs' decoded sets."""
    if source.kind != "image":
        raise shards.ShardSetError(f"{source.directory}: anchor needs an image set of faces, got kind {source.kind!r}")
    codec_meta = {"name": codec.name, "parameter": codec.parameter, "value": value}

    def process(chunk: list[shards.Shard], advance: Advance) -> ChunkResult:
        samples, rejects, nbytes = [], [], 0
        for batch in _batches(_samples(chunk, _reads(source, S.IMAGE, S.META), o, "anchor", rejects), o.batch_size):
            coded = [(s, c) for s in batch
                     if (c := attempt("anchor", s["__key__"], s[S.META]["source"], lambda s=s: codec.code(s[S.IMAGE], value), rejects))]
            advance(len(batch))
            if not coded:
                continue
            qualities = _qualities([s[S.IMAGE] for s, _ in coded], [c.decoded for _, c in coded])
            for (s, c), quality in zip(coded, qualities):
                h, w = c.decoded.shape[:2]
                rate = {"bytes": c.payload_bytes, "container_bytes": c.container_bytes, "face_pixels": h * w,
                        "coded_pixels": h * w, "bpp": c.bpp, "bpp_coded": c.bpp}
                meta = {**s[S.META], "codec": codec_meta, "rate": rate, "quality": quality,
                        "input": {"set": source.name, "shard": s["__shard__"]}}
                samples.append({"__key__": s["__key__"], S.IMAGE: c.decoded, **carried(s), S.META: meta})
                nbytes += c.payload_bytes
        return ChunkResult({name: samples}, rejects, Counter(coded=len(samples), bytes=nbytes))

    options = _options(o, input=_input_identity(source), codec=codec_meta)
    stats = run_chunks("anchor", _shard_chunks(source, o), process, {name: _writer(o, name)}, {name: options}, _shard_inputs,
                       o.part, o.parts, o.strict, _count)
    finish_set(o, name, "image", [S.IMAGE, S.META, *_carried_members(source)], source.identities,
               {**source.meta, "stage": "anchor", "variant": "decoded", "codec": codec_meta, "input_set": source.name,
                "rate_match": match, "order": "align-then-encode"})
    return stats
