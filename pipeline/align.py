"""Face alignment to the 224x224 input of the face models.

`thesis` is section 5.4: crop the detected box, rotate the crop about its centre so the eyes are
level, resize its larger side to 224 keeping the aspect ratio, zero-pad to 224x224. `similarity`
is the common 5-point warp onto the ArcFace landmark template scaled to 224.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from cdfv.shards.spec import FACE_SIZE

METHODS = ("thesis", "similarity")

# ArcFace 112x112 five-point template (right eye, left eye, nose, right/left mouth corner).
_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def pad_to_square(rgb: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pads an image no larger than size x size to size x size, centred (odd remainders go
    right/bottom). Returns the picture and the (left, top) offset."""
    h, w = rgb.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((size, size, 3), dtype=rgb.dtype)
    out[top : top + h, left : left + w] = rgb
    return out, (left, top)


def align_thesis(rgb: np.ndarray, box: list[float], landmarks: list[list[float]], size: int = FACE_SIZE) -> tuple[np.ndarray, dict]:
    """Thesis alignment; returns the face and metadata with the landmarks mapped into it."""
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
    crop = cv2.warpAffine(crop, rot, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    pts = _apply(rot, pts)
    scale = size / max(ch, cw)
    nw, nh = max(1, round(cw * scale)), max(1, round(ch * scale))
    crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    pts = pts * [nw / cw, nh / ch]
    face, (left, top) = pad_to_square(crop, size)
    pts = pts + [left, top]
    meta = {"method": "thesis", "crop": [x1, y1, x2, y2], "angle": angle, "scale": scale,
            "pad": [left, top], "landmarks": pts.round(2).tolist()}
    return face, meta


def align_similarity(rgb: np.ndarray, landmarks: list[list[float]], size: int = FACE_SIZE) -> tuple[np.ndarray, dict]:
    """5-point similarity warp onto the ArcFace template scaled to `size`."""
    src = np.asarray(landmarks, dtype=np.float64)
    dst = _TEMPLATE_112 * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError(f"no similarity transform fits landmarks {landmarks}")
    face = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    meta = {"method": "similarity", "matrix": matrix.round(6).tolist(), "landmarks": _apply(matrix, src).round(2).tolist()}
    return face, meta


def prealigned(rgb: np.ndarray, size: int = FACE_SIZE) -> tuple[np.ndarray, dict]:
    """Pre-aligned inputs (VGGFace2 loose crops) skip detection: resize the larger side to
    `size` keeping the aspect ratio and zero-pad, as the thesis's last two steps."""
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    face = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
    face, (left, top) = pad_to_square(face, size)
    return face, {"method": "none", "scale": scale, "pad": [left, top]}


def align(rgb: np.ndarray, detection: dict | None, method: str = "thesis") -> tuple[np.ndarray, dict]:
    """Aligns by `method` with a detection dict (box, landmarks); no detection means pre-aligned."""
    if detection is None:
        return prealigned(rgb)
    if method == "thesis":
        return align_thesis(rgb, detection["box"], detection["landmarks"])
    if method == "similarity":
        return align_similarity(rgb, detection["landmarks"])
    raise ValueError(f"unknown alignment {method!r}; choose one of {METHODS}")
