"""Face alignment to the 224x224 input of the face models.

`thesis` is section 5.4: crop the detected box, rotate the crop about its centre so the eyes are
level, resize it by adding the same margin, 224 minus its larger side, to both sides ((180, 120) ->
(224, 164); a crop larger than 224 loses the same number of pixels on both sides), zero-pad to
224x224. `aspect` is the same with a resize that keeps the aspect ratio (larger side to 224).
`similarity` is the common 5-point warp onto the ArcFace landmark template scaled to 224.

Points (boxes, landmarks) are continuous pixel coordinates, pixel (i, j) covering [i, i+1) x
[j, j+1), as the detector gives them; `_warp` applies a transform of these coordinates to pixels.
"""
from __future__ import annotations

import math
from typing import Callable

import cv2
import numpy as np

from cdfv.shards.spec import FACE_SIZE

# ArcFace 112x112 five-point template (right eye, left eye, nose, right/left mouth corner).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _warp(rgb: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warps by a 2x3 transform of continuous coordinates; cv2 works on pixel indices (pixel
    centres at integers), so the transform is conjugated by the half-pixel shift."""
    index = matrix.copy()
    index[:, 2] += matrix[:, :2] @ [0.5, 0.5] - 0.5
    return cv2.warpAffine(rgb, index, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def thesis_size(width: int, height: int, size: int = FACE_SIZE) -> tuple[int, int]:
    """Thesis 5.4's resize target: both sides change by the same margin, size - max(width, height),
    so the larger side becomes `size`. A crop whose sides differ by `size` or more has no such
    size (its smaller side would vanish)."""
    margin = size - max(width, height)
    if min(width, height) + margin < 1:
        raise ValueError(
            f"a {width}x{height} face crop has no thesis resize to {size}: its sides differ by {abs(width - height)} "
            f">= {size} pixels (use --method aspect)"
        )
    return width + margin, height + margin


def aspect_size(width: int, height: int, size: int = FACE_SIZE) -> tuple[int, int]:
    """Larger side to `size`, the aspect ratio kept."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


RESIZES: dict[str, Callable[[int, int, int], tuple[int, int]]] = {"thesis": thesis_size, "aspect": aspect_size}
METHODS = (*RESIZES, "similarity")


def pad_to_square(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pads an image no larger than size x size to size x size, centred (odd remainders go
    right/bottom). Returns the picture and the (left, top) offset."""
    h, w = rgb.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size, 3), dtype=rgb.dtype)
    out[top : top + h, left : left + w] = rgb
    return out, (left, top)


def resize_and_pad(rgb: np.ndarray, resize: str, size: int = FACE_SIZE) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Resizes by `resize` (RESIZES) and zero-pads to size x size. Returns the picture, the per-axis
    scale (x, y) and the (left, top) padding; a point p maps to p * scale + (left, top)."""
    h, w = rgb.shape[:2]
    nw, nh = RESIZES[resize](w, h, size)
    shrink = nw < w or nh < h
    out = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out, pad = pad_to_square(out, size)
    return out, np.array([nw / w, nh / h]), pad


def align_crop(rgb: np.ndarray, box: list[float], landmarks: list[list[float]], resize: str = "thesis",
               size: int = FACE_SIZE) -> tuple[np.ndarray, dict]:
    """Thesis 5.4 alignment with the `resize` step named; returns the face and metadata with the
    landmarks mapped into it."""
    h, w = rgb.shape[:2]
    x1, y1 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x2, y2 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ValueError(f"face box {box} is empty inside the {w}x{h} image")
    crop = rgb[y1:y2, x1:x2]
    ch, cw = crop.shape[:2]
    pts = np.asarray(landmarks, dtype=np.float64) - [x1, y1]
    (rx, ry), (lx, ly) = pts[0], pts[1]
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    rot = cv2.getRotationMatrix2D((cw / 2.0, ch / 2.0), angle, 1.0)
    crop = _warp(crop, rot, (cw, ch))
    face, scale, (left, top) = resize_and_pad(crop, resize, size)
    pts = _apply(rot, pts) * scale + [left, top]
    meta = {"method": resize, "crop": [x1, y1, x2, y2], "angle": angle, "scale": scale.round(6).tolist(),
            "pad": [left, top], "landmarks": pts.round(2).tolist()}
    return face, meta


def align_similarity(rgb: np.ndarray, landmarks: list[list[float]], size: int = FACE_SIZE) -> tuple[np.ndarray, dict]:
    """5-point similarity warp onto the ArcFace template scaled to `size`."""
    src = np.asarray(landmarks, dtype=np.float64)
    dst = ARCFACE_TEMPLATE_112 * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError(f"no similarity transform fits landmarks {landmarks}")
    face = _warp(rgb, matrix, (size, size))
    meta = {"method": "similarity", "matrix": matrix.round(6).tolist(), "landmarks": _apply(matrix, src).round(2).tolist()}
    return face, meta


def prealigned(rgb: np.ndarray, size: int = FACE_SIZE) -> tuple[np.ndarray, dict]:
    """Pre-aligned inputs (VGGFace2 loose crops) skip detection: larger side to `size` keeping the
    aspect ratio, zero-pad. (The thesis resize would squash a loose crop larger than 224.)"""
    face, scale, pad = resize_and_pad(rgb, "aspect", size)
    return face, {"method": "none", "scale": scale.round(6).tolist(), "pad": list(pad)}


def align(rgb: np.ndarray, detection: dict | None, method: str = "thesis") -> tuple[np.ndarray, dict]:
    """Aligns by `method` with a detection dict (box, landmarks); no detection means pre-aligned."""
    if detection is None:
        return prealigned(rgb)
    if method in RESIZES:
        return align_crop(rgb, detection["box"], detection["landmarks"], method)
    if method == "similarity":
        return align_similarity(rgb, detection["landmarks"])
    raise ValueError(f"unknown alignment {method!r}; choose one of {METHODS}")
