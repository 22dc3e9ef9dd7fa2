"""Just enough ISOBMFF/HEIF parsing to separate an HEVC picture from its container.

The rate of a conventional codec counts the coded picture, not the file format around it; a HEIF
file wraps the HEVC NAL units in boxes (ftyp, meta, iloc, hvcC, ...) and length fields, so the
rate is measured by walking the boxes rather than by subtracting a guessed constant.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

_BOX = struct.Struct(">I4s")
_LARGE = struct.Struct(">Q")
_CONTAINERS = {b"iprp": 0, b"ipco": 0, b"meta": 4}  # box type -> bytes of full-box header to skip
_HVCC_FIXED = 22  # HEVCDecoderConfigurationRecord bytes before numOfArrays


class ContainerError(ValueError):
    """A HEIF file whose structure this parser does not accept."""


@dataclass(frozen=True)
class HevcPayload:
    """The HEVC NAL units of one HEIF still picture, each counted without length field."""

    parameter_set_bytes: int  # VPS, SPS, PPS (and any SEI) stored in the hvcC property
    picture_bytes: int  # the NAL units in mdat: the coded slices of the picture
    nal_units: int

    @property
    def total(self) -> int:
        return self.parameter_set_bytes + self.picture_bytes


def _boxes(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """Box type -> [(payload start, payload end)], descending into meta/iprp/ipco."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    offset = start
    while offset < end:
        if end - offset < _BOX.size:
            raise ContainerError(f"truncated box header at byte {offset}")
        size, kind = _BOX.unpack_from(data, offset)
        header = _BOX.size
        if size == 1:
            size = _LARGE.unpack_from(data, offset + header)[0]
            header += _LARGE.size
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise ContainerError(f"box {kind!r} at byte {offset} has impossible size {size}")
        body = offset + header
        found.setdefault(kind, []).append((body, offset + size))
        if kind in _CONTAINERS:
            for inner, spans in _boxes(data, body + _CONTAINERS[kind], offset + size).items():
                found.setdefault(inner, []).extend(spans)
        offset += size
    return found


def _only(found: dict[bytes, list[tuple[int, int]]], kind: bytes) -> tuple[int, int]:
    spans = found.get(kind, [])
    if len(spans) != 1:
        raise ContainerError(f"expected one {kind.decode()} box, found {len(spans)}")
    return spans[0]


def _hvcc_nal_bytes(data: bytes, start: int, end: int) -> tuple[int, int, int]:
    """(NAL bytes, NAL count, length-field size) of the arrays in an hvcC record."""
    if end - start < _HVCC_FIXED + 1:
        raise ContainerError("hvcC record too short")
    length_size = (data[start + 21] & 0x3) + 1
    offset = start + _HVCC_FIXED + 1
    total = count = 0
    for _ in range(data[start + _HVCC_FIXED]):
        (n,) = struct.unpack_from(">H", data, offset + 1)
        offset += 3
        for _ in range(n):
            (size,) = struct.unpack_from(">H", data, offset)
            offset += 2 + size
            total += size
            count += 1
    if offset != end:
        raise ContainerError(f"hvcC record length mismatch: parsed {offset - start}, box holds {end - start}")
    return total, count, length_size


def _length_prefixed_bytes(data: bytes, start: int, end: int, length_size: int) -> tuple[int, int]:
    """(NAL bytes, NAL count) of a run of length-prefixed NAL units filling [start, end)."""
    offset, total, count = start, 0, 0
    while offset < end:
        size = int.from_bytes(data[offset : offset + length_size], "big")
        offset += length_size + size
        total += size
        count += 1
    if offset != end or count == 0:
        raise ContainerError("mdat is not a whole run of length-prefixed NAL units")
    return total, count


def hevc_payload(data: bytes) -> HevcPayload:
    """Measures the HEVC NAL units of a single-image HEIF file (as libheif writes it: one hvc1
    item, its data alone in one mdat). Anything else (thumbnails, Exif, grids) raises."""
    found = _boxes(data, 0, len(data))
    if b"ftyp" not in found:
        raise ContainerError("not an ISOBMFF file (no ftyp box)")
    ps_bytes, ps_count, length_size = _hvcc_nal_bytes(data, *_only(found, b"hvcC"))
    pic_bytes, pic_count = _length_prefixed_bytes(data, *_only(found, b"mdat"), length_size)
    return HevcPayload(ps_bytes, pic_bytes, ps_count + pic_count)
