"""The shard-format contract: member names, keys, bitstream framing and rate definitions.

Everything the pipeline writes and the trainer and evaluator read is named here, so the three
sides agree by importing one module rather than by convention. See shards/README.md.
"""
from __future__ import annotations

import re
import struct

FORMAT = "cdfv-shards"
VERSION = 3  # 2: shards carry CHECKSUMS, index entries their shard's size; 3: entries bind each shard's content and run
READABLE_VERSIONS = (1, 2, 3)  # version 1 sets read without per-sample verification, 1 and 2 without the binding
INDEX_NAME = "index.json"

# Members of one sample (WebDataset extensions; the key is everything before the first dot).
LATENT = "latent.npy"  # entropy-decoded y_hat, (M, H, W); int16 when integer valued, else float32
IMAGE = "png"  # 224x224 RGB face, 8-bit (original aligned face or a decoded one)
LABEL = "cls"  # identity index as ASCII decimal
META = "json"  # per-sample metadata, see shards/README.md
BITSTREAM = "bits"  # framed codec bitstream, see pack_bitstream
TEACHER = "teacher.npy"  # a pretrained face model's L2-normalised embedding of the original face (float32, (D,))
TEACHER_MAP_PREFIX = "teacher-"  # teacher-<junction>.npy: the teacher's feature map at a junction (float16, (C, S, S))
# A shard's first member: {key: {member: XXH3-64 of its bytes, 16 hex digits}} for every sample of
# the shard. Named as WebDataset's meta files are (__*__), so webdataset readers skip it.
CHECKSUMS = "__checksums__"
MEMBERS = (LATENT, IMAGE, LABEL, META, BITSTREAM, TEACHER)

KINDS = ("latent", "image", "bitstream")

FACE_SIZE = 224  # aligned face side: what the face model sees
CODED_SIZE = 256  # side of the zero-padded picture the learned codec encodes
FACE_PIXELS = FACE_SIZE * FACE_SIZE


def teacher_map(junction: str) -> str:
    """The member holding a teacher's feature map at `junction` (e.g. teacher-level1.npy)."""
    return f"{TEACHER_MAP_PREFIX}{junction}.npy"


def is_teacher_map(member: str) -> bool:
    return member.startswith(TEACHER_MAP_PREFIX) and member.endswith(".npy")


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def make_key(*parts: str) -> str:
    """Joins parts into a WebDataset key: dots (WebDataset splits keys at the first dot) and any
    other character outside [A-Za-z0-9_-] become '-', parts are joined with '__'."""
    cleaned = [_KEY_UNSAFE.sub("-", p) for p in parts]
    if not all(cleaned):
        raise ValueError(f"empty key part in {parts!r}")
    return "__".join(cleaned)


def bits_per_pixel(num_bytes: int, pixels: int = FACE_PIXELS) -> float:
    """Rate in bits per pixel of the 224x224 face (thesis eq. 7 over the face the codec was given;
    the padded 256x256 picture's rate is bytes * 8 / CODED_SIZE**2, both are stored)."""
    return 8.0 * num_bytes / pixels


_MAGIC = b"CDFB"
_HEAD = struct.Struct("<4sBHH")  # magic, number of strings, height and width of the grid decompress() needs
_LEN = struct.Struct("<I")


def pack_bitstream(strings: list[bytes], shape: tuple[int, int]) -> bytes:
    """Frames one image's codec strings (CompressAI's per-image [y, z], or [y] for the factorized
    prior) with the grid shape decompress() needs (z's, or y's for the factorized prior). The
    framing (9 + 4 per string bytes) is not counted in the rate."""
    head = _HEAD.pack(_MAGIC, len(strings), int(shape[0]), int(shape[1]))
    return head + b"".join(_LEN.pack(len(s)) for s in strings) + b"".join(strings)


def unpack_bitstream(blob: bytes) -> tuple[list[bytes], tuple[int, int]]:
    """Inverse of pack_bitstream; raises ValueError on a truncated or foreign blob."""
    if len(blob) < _HEAD.size:
        raise ValueError(f"bitstream too short ({len(blob)} bytes)")
    magic, n, h, w = _HEAD.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError(f"not a cdfv bitstream (magic {magic!r})")
    offset = _HEAD.size
    lengths = [_LEN.unpack_from(blob, offset + 4 * i)[0] for i in range(n)]
    offset += 4 * n
    if offset + sum(lengths) != len(blob):
        raise ValueError(f"bitstream length mismatch: header says {offset + sum(lengths)}, got {len(blob)}")
    strings = []
    for length in lengths:
        strings.append(blob[offset : offset + length])
        offset += length
    return strings, (h, w)


def payload_bytes(strings: list[bytes]) -> int:
    """The rate-bearing size: the codec's own strings, without cdfv framing."""
    return sum(len(s) for s in strings)
