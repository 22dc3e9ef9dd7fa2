"""Conventional codecs for the decoded anchors (thesis 6.4): JPEG, JPEG 2000 and HEVC-intra.

Each codec codes one aligned RGB face and decodes it again, and reports the rate of the coded
picture alone: file-format wrapping (JFIF's APP0, HEIF's boxes and NAL length fields) is measured
and left out, so the rates compare with a learned codec's strings. See README, "Decoded anchors".
"""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image

from cdfv.pipeline.isobmff import ContainerError, hevc_payload
from cdfv.shards.spec import bits_per_pixel

RGB_BITS = 24  # bits per pixel of the uncompressed 8-bit RGB input: JPEG 2000 ratios refer to it


class CodecFailure(RuntimeError):
    """One picture that a codec could not code or decode; the message names codec and reason."""


@dataclass(frozen=True)
class Coded:
    """One face coded and decoded: the rate-bearing size, the file size, the reconstruction."""

    codec: str
    parameter: str
    value: float
    payload_bytes: int  # the coded picture without container headers (see each codec)
    container_bytes: int  # the file as the library writes it
    decoded: np.ndarray  # HxWx3 uint8 RGB

    @property
    def bpp(self) -> float:
        h, w = self.decoded.shape[:2]
        return bits_per_pixel(self.payload_bytes, h * w)


@dataclass(frozen=True)
class Codec:
    """A codec with one rate parameter, monotone in rate over [low, high]."""

    name: str
    parameter: str
    low: float
    high: float
    integer: bool
    rate_rises: bool  # True if a larger value gives a larger rate
    run: Callable[[np.ndarray, float], tuple[int, bytes, np.ndarray]]  # -> payload, file, decoded

    def code(self, rgb: np.ndarray, value: float) -> Coded:
        """Codes and decodes one HxWx3 uint8 RGB picture; CodecFailure names codec and reason."""
        if not self.low <= value <= self.high or (self.integer and value != int(value)):
            kind = "an integer" if self.integer else "a value"
            raise ValueError(f"{self.name}: {self.parameter} must be {kind} in [{self.low:g}, {self.high:g}], not {value}")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise CodecFailure(f"{self.name}: expected HxWx3 uint8 RGB, got {rgb.shape} {rgb.dtype}")
        value = int(value) if self.integer else float(value)
        try:
            payload, container, decoded = self.run(np.ascontiguousarray(rgb), value)
        except (OSError, ValueError, RuntimeError, SyntaxError) as e:
            raise CodecFailure(f"{self.name} ({self.parameter}={value}): {e}") from e
        if decoded.shape != rgb.shape:
            raise CodecFailure(f"{self.name}: decoded shape {decoded.shape} differs from input {rgb.shape}")
        return Coded(self.name, self.parameter, value, payload, len(container), decoded)


def _decode_pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.array(img.convert("RGB"))  # writable: torch-based metrics take it as is


_JPEG_STANDALONE = {0xD8, 0x01, *range(0xD0, 0xD8)}  # SOI, TEM, RSTn: markers without a length


def jpeg_container_bytes(data: bytes) -> int:
    """Bytes of the application (APPn: JFIF, Exif, ICC) and comment segments before the scan.

    They belong to the file format (JFIF, ITU-T T.871), not to the ISO/IEC 10918-1 codestream:
    a decoder needs the frame, tables and scans only."""
    if data[:2] != b"\xff\xd8":
        raise ContainerError("not a JPEG file (no SOI marker)")
    offset, skipped = 2, 0
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            raise ContainerError(f"JPEG marker expected at byte {offset}")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            skipped += 2 + length
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data and later tables
            return skipped
        offset += 2 + length
    raise ContainerError("JPEG file ends before its first scan")


def _jpeg(rgb: np.ndarray, quality: float) -> tuple[int, bytes, np.ndarray]:
    """Baseline JPEG (libjpeg via Pillow), 4:2:0, Huffman tables optimised for the picture."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(quality), subsampling=2, optimize=True)
    data = buf.getvalue()
    return len(data) - jpeg_container_bytes(data), data, _decode_pillow(data)


def _jpeg2000(rgb: np.ndarray, ratio: float) -> tuple[int, bytes, np.ndarray]:
    """JPEG 2000 (OpenJPEG via Pillow): 9/7 wavelet, irreversible colour transform, one quality
    layer rate-controlled to 24/ratio bpp by OpenJPEG's MSE rate allocation. Written as a raw
    codestream (.j2k, no JP2 boxes), so the whole file is the payload."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(
        buf, "JPEG2000", no_jp2=True, irreversible=True, mct=1, quality_mode="rates", quality_layers=[ratio]
    )
    data = buf.getvalue()
    return len(data), data, _decode_pillow(data)


# x265 options through libheif: constant QP as the thesis uses it (HM-like: no adaptive
# quantisation or psycho-visual tuning, which would move QPs and trade MSE for texture).
_X265_FIXED = {"chroma": "420", "x265:aq-mode": "0", "x265:psy-rd": "0", "x265:psy-rdoq": "0"}


def _hevc_intra(rgb: np.ndarray, qp: float) -> tuple[int, bytes, np.ndarray]:
    """HEVC Main Still Picture (x265 via libheif/pillow-heif) at constant QP, 4:2:0, in HEIF;
    libheif converts RGB to full-range BT.601 YCbCr and back. Payload: the parameter-set and
    slice NAL units, each without its length field."""
    h, w = rgb.shape[:2]
    heif = pillow_heif.from_bytes(mode="RGB", size=(w, h), data=rgb.tobytes())
    buf = io.BytesIO()
    heif.save(buf, enc_params={**_X265_FIXED, "x265:qp": str(int(qp))})
    data = buf.getvalue()
    decoded = np.array(pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True))
    return hevc_payload(data).total, data, decoded


CODECS: dict[str, Codec] = {
    "jpeg": Codec("jpeg", "quality", 1, 95, integer=True, rate_rises=True, run=_jpeg),
    "jpeg2000": Codec("jpeg2000", "ratio", 4, 1000, integer=False, rate_rises=False, run=_jpeg2000),
    "hevc-intra": Codec("hevc-intra", "qp", 0, 51, integer=True, rate_rises=False, run=_hevc_intra),
}

# Names the thesis uses that this project deliberately does not offer, with the reason.
UNAVAILABLE = {
    "jpeg2000-visual": "Kakadu's visually weighted rate allocation has no OpenJPEG counterpart; "
    "use 'jpeg2000' (MSE rate allocation) and compare perceptual quality through the stored MS-SSIM",
}


def get_codec(name: str) -> Codec:
    """The codec registered under name; a clear error for unknown or deliberately absent ones."""
    if name in UNAVAILABLE:
        raise ValueError(f"codec {name!r} is not offered: {UNAVAILABLE[name]}")
    if name not in CODECS:
        raise ValueError(f"unknown conventional codec {name!r}; known: {', '.join(CODECS)}")
    return CODECS[name]
