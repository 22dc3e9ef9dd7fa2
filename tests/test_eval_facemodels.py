"""Pretrained pixel-domain face models (cdfv.eval.facemodels): dlib's ResNet descriptor on real
thesis-aligned LFW faces, its torch port checked against dlib's own C++, an ArcFace-style ONNX file
checked against the torch net it was exported from, and cdfv-eval end to end with --image-model dlib."""
from __future__ import annotations

import hashlib
import math
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cdfv.eval.cli import main
from cdfv.eval.facemodels import (
    ARCFACE_TEMPLATE, DLIB_BOX_CENTRE, DLIB_BOX_SIDE, DLIB_FILES, DlibNativeFaceModel, InputMismatch, OnnxFaceModel, dlib_model_files,
    dlib_rectangle, load_face_model, similarity_transform,
)
from cdfv.eval.protocol import Pair, read_pairs
from cdfv.eval.scores import read_scores
from cdfv.pipeline.align import align_crop
from cdfv.pipeline.detect import detect
from cdfv.pipeline.images import read_image
from cdfv.shards import ShardSetWriter, spec, write_index

from prep_helpers import detector

PAIRS_EACH = 5  # the first same-person and different-person pairs of pairsDevTest.txt


@pytest.fixture(scope="module")
def lfw(lfw_root: Path, lfw_meta: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The first 5 + 5 View 1 test pairs, their faces detected with RetinaFace and thesis-aligned,
    each with the json metadata the pipeline stores (key, detection, align)."""
    lines = (lfw_meta / "pairsDevTest.txt").read_text().splitlines()
    half = int(lines[0])
    pairs_file = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    pairs_file.write_text("\n".join([str(PAIRS_EACH), *lines[1 : 1 + PAIRS_EACH], *lines[1 + half : 1 + half + PAIRS_EACH]]) + "\n")
    pairs = read_pairs(pairs_file)
    faces, metas = {}, {}
    for key in sorted({k for p in pairs for k in (p.probe, p.reference)}):
        name, stem = key.split("__")
        rgb = read_image(lfw_root / name / f"{stem}.jpg")
        det = detect(detector(), rgb)
        assert det.status == "ok", key
        faces[key], align = align_crop(rgb, det.box, det.landmarks, "thesis")
        metas[key] = {"key": key, "detection": det.as_dict(), "align": align}
    return {"pairs_file": pairs_file, "pairs": pairs, "faces": faces, "metas": metas}


@pytest.fixture(scope="module")
def dlib_model():
    return load_face_model("dlib")


@pytest.fixture(scope="module")
def dlib_native():
    model = DlibNativeFaceModel(workers=1)  # one process: the faces are few
    yield model
    model.close()


def _embed_all(model, lfw: dict) -> dict[str, np.ndarray]:
    keys = sorted(lfw["faces"])
    emb = model.embed(np.stack([lfw["faces"][k] for k in keys]), [lfw["metas"][k] for k in keys])
    return dict(zip(keys, emb))


def _scores(emb: dict[str, np.ndarray], pairs: list[Pair]) -> tuple[list[float], list[float]]:
    genuine = [float(emb[p.probe] @ emb[p.reference]) for p in pairs if p.label]
    impostor = [float(emb[p.probe] @ emb[p.reference]) for p in pairs if not p.label]
    return genuine, impostor


# ---------------------------------------------------------------- dlib


def frontal(lfw: dict) -> list[str]:
    """Faces whose RetinaFace eyes are over a quarter of the face apart: turned heads hide an eye,
    where neither detector's eye point means much."""
    keys = [k for k, m in lfw["metas"].items() if np.linalg.norm(np.subtract(*m["align"]["landmarks"][:2])) > 56]
    assert len(keys) >= 10
    return keys


def test_dlib_landmarks_land_on_eyes_and_nose(dlib_model, lfw: dict) -> None:
    """The 5 points fitted in each aligned frontal face's box (placed by its stored landmarks) agree
    with RetinaFace's: dlib's eye-corner pairs centre on RetinaFace's eyes, its under-nose point sits
    below the nose tip and above the mouth."""
    for key in frontal(lfw):
        rf = np.array(lfw["metas"][key]["align"]["landmarks"])  # right eye, left eye, nose, mouth corners
        shape = dlib_model.shapes([lfw["faces"][key]], [rf])[0]
        dl = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], dtype=float)
        eye_distance = np.linalg.norm(rf[1] - rf[0])
        eyes = np.array([dl[2:4].mean(0), dl[0:2].mean(0)])  # dlib: 0-1 image-right eye corners, 2-3 image-left
        assert np.linalg.norm(eyes - rf[:2], axis=1).max() < 0.25 * eye_distance, key
        assert abs(dl[4, 0] - rf[2, 0]) < 0.3 * eye_distance, key
        assert rf[2, 1] < dl[4, 1] < rf[3:, 1].mean(), key


def test_dlib_same_people_score_higher_than_different_people(dlib_model, lfw: dict) -> None:
    emb = _embed_all(dlib_model, lfw)
    vectors = np.stack(list(emb.values()))
    assert vectors.shape == (len(emb), 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    genuine, impostor = _scores(emb, lfw["pairs"])
    assert min(genuine) > max(impostor), (genuine, impostor)
    assert np.mean(genuine) - np.mean(impostor) > 0.05, (genuine, impostor)


def test_dlib_model_ids_are_the_hash_of_its_weight_files_and_tell_port_from_native(dlib_model, dlib_native) -> None:
    h = hashlib.sha256()
    for path in dlib_model_files():
        assert path.name in DLIB_FILES
        h.update(path.read_bytes())
    digest = h.hexdigest()[:16]
    assert dlib_model.info["model_id"] == f"dlib-resnet-v1:sha256-{digest}"
    assert dlib_native.info["model_id"] == f"dlib-resnet-v1-native:sha256-{digest}"
    for model, arch in ((dlib_model, "dlib-resnet-v1"), (dlib_native, "dlib-resnet-v1-native")):
        info = model.info
        assert (info["arch"], info["input_kind"], info["embedding_dim"], info["untrained"]) == (arch, "image", 128, False)
        assert info["preprocessing"]["num_jitters"] == 0 and info["preprocessing"]["padding"] == 0.25


AGREEMENT = 1e-4  # port against dlib-native: pair scores, and 1 - cosine of each face's two embeddings


def test_dlib_port_scores_as_dlib_native(dlib_model, dlib_native, lfw: dict) -> None:
    """The torch port and dlib's own C++ give the same score to every real pair and the same
    embedding to every face (1e-4), and the comparison can tell a wrong port: one that sees BGR, or
    convolves instead of correlating (every kernel flipped), misses by far more (measured: 0.012 and
    0.08 on a pair score, 0.022 and 0.22 in 1 - cosine of a face)."""
    keys = sorted(lfw["faces"])
    faces, metas = np.stack([lfw["faces"][k] for k in keys]), [lfw["metas"][k] for k in keys]

    def compare(model) -> tuple[float, float]:
        emb = dict(zip(keys, model.embed(faces, metas)))
        scores = [[e[p.probe] @ e[p.reference] for p in lfw["pairs"]] for e in (emb, native)]
        return float(np.abs(np.subtract(*scores)).max()), max(1.0 - float(emb[k] @ native[k]) for k in keys)

    native = dict(zip(keys, dlib_native.embed(faces, metas)))
    score_gap, face_gap = compare(dlib_model)
    assert score_gap < AGREEMENT and face_gap < AGREEMENT
    swapped = load_face_model("dlib")
    net = swapped.network.model
    with torch.no_grad():
        net.con.weight.copy_(net.con.weight.flip(1))
        net.mean.copy_(net.mean.flip(0))
    flipped = load_face_model("dlib")
    with torch.no_grad():
        for conv in flipped.network.model.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.copy_(conv.weight.flip(2, 3))
    for corrupt in (swapped, flipped):
        score_gap, face_gap = compare(corrupt)
        assert score_gap > 10 * AGREEMENT and face_gap > 100 * AGREEMENT


def test_dlib_box_follows_the_stored_landmarks() -> None:
    """The box is the template's on template landmarks and moves and scales with the face."""
    template = ARCFACE_TEMPLATE * 2.0
    left, top, right, bottom = dlib_rectangle(template)
    assert right - left + 1 == bottom - top + 1 == pytest.approx(DLIB_BOX_SIDE, abs=1)
    assert ((left + right + 1) / 2, (top + bottom + 1) / 2) == pytest.approx(DLIB_BOX_CENTRE, abs=0.5)
    moved = dlib_rectangle(template * 0.5 + [30.0, 20.0])
    assert moved == pytest.approx(((left + 60) / 2, (top + 40) / 2, (right + 60) / 2, (bottom + 40) / 2), abs=1)


def test_dlib_refuses_faces_without_landmarks(dlib_model, lfw: dict) -> None:
    key = sorted(lfw["faces"])[0]
    meta = {"key": key, "align": {"method": "none", "scale": 0.896, "pad": [0, 0]}}
    with pytest.raises(InputMismatch, match=f"sample '{key}': no 5-point landmarks.*align.landmarks.*dlib places its face box"):
        dlib_model.embed(lfw["faces"][key][None], [meta])


def test_dlib_flip_averages_the_mirror(lfw: dict) -> None:
    keys = sorted(lfw["faces"])[:2]
    faces, metas = np.stack([lfw["faces"][k] for k in keys]), [lfw["metas"][k] for k in keys]
    plain, flipped = load_face_model("dlib"), load_face_model("dlib", flip=True)
    mirrored_metas = [{"align": {"landmarks": [[224 - x, y] for x, y in np.array(m["align"]["landmarks"])[[1, 0, 2, 4, 3]]]}}
                      for m in metas]
    mirrored = plain.embed(np.ascontiguousarray(faces[:, :, ::-1]), mirrored_metas)
    expected = plain.embed(faces, metas) + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(flipped.embed(faces, metas), expected, atol=1e-6)


# ---------------------------------------------------------------- ONNX


class TinyNet(torch.nn.Module):
    """A small conv net standing in for an ArcFace model: 1x3x112x112 in, 16-d out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.fc = torch.nn.Linear(8 * 4 * 4, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyNet]:
    torch.manual_seed(0)
    net = TinyNet().eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny-arcface.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated; the dynamo one needs onnxscript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, opset_version=17,
                          input_names=["data"], output_names=["embedding"])
    return path, net


def _known_warp(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks placed by a known similarity (8 degrees, x1.9, shifted) of the ArcFace template,
    and the 112x112 crop that its inverse warps out of the face: what the model must see."""
    angle, scale, shift = math.radians(8.0), 1.9, np.array([8.0, 5.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    landmarks = ARCFACE_TEMPLATE @ rot.T + shift
    inverse = np.linalg.inv(rot)
    matrix = np.hstack([inverse, (-inverse @ shift)[:, None]])
    crop = cv2.warpAffine(face, matrix, (112, 112), flags=cv2.INTER_LINEAR, borderValue=0)
    return landmarks, crop


def _torch_embedding(net: TinyNet, crops: np.ndarray) -> np.ndarray:
    x = torch.from_numpy((crops.astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return torch.nn.functional.normalize(net(x), dim=1).numpy()


def test_onnx_model_sees_the_warped_normalised_rgb_face(tiny_onnx, lfw: dict) -> None:
    path, net = tiny_onnx
    keys = sorted(lfw["faces"])[:3]
    faces, metas, crops = [], [], []
    for key in keys:
        landmarks, crop = _known_warp(lfw["faces"][key])
        faces.append(lfw["faces"][key])
        metas.append({"key": key, "align": {"method": "similarity", "landmarks": landmarks.tolist()}})
        crops.append(crop)
    faces, crops = np.stack(faces), np.stack(crops)
    rgb = load_face_model(path)
    assert isinstance(rgb, OnnxFaceModel) and rgb.batch == 1  # a fixed batch of 1: the batch runs face by face
    got = rgb.embed(faces, metas)
    assert got.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, _torch_embedding(net, crops), atol=1e-5)
    bgr = load_face_model(path, onnx_channels="bgr")
    got_bgr = bgr.embed(faces, metas)
    np.testing.assert_allclose(got_bgr, _torch_embedding(net, crops[..., ::-1]), atol=1e-5)
    assert np.abs(got_bgr - got).max() > 1e-2  # the option changes what the network sees
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert rgb.info["model_id"] == bgr.info["model_id"] == f"onnx:tiny-arcface.onnx:sha256-{digest}"
    assert (rgb.info["embedding_dim"], rgb.info["preprocessing"]["channels"], bgr.info["preprocessing"]["channels"]) == (16, "rgb", "bgr")


def test_similarity_transform_is_the_least_squares_fit(lfw: dict) -> None:
    """On every real face's landmarks it equals the linear least-squares solution of
    x' = a x - b y + tx, y' = b x + a y + ty (the same optimum, found another way)."""
    for key, meta in lfw["metas"].items():
        points = np.array(meta["align"]["landmarks"])
        x, y = points[:, 0], points[:, 1]
        one, zero = np.ones(5), np.zeros(5)
        design = np.vstack([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
        (a, b, tx, ty), *_ = np.linalg.lstsq(design, np.concatenate([ARCFACE_TEMPLATE[:, 0], ARCFACE_TEMPLATE[:, 1]]), rcond=None)
        np.testing.assert_allclose(similarity_transform(points, ARCFACE_TEMPLATE), [[a, -b, tx], [b, a, ty]], atol=1e-9, err_msg=key)


def test_onnx_refuses_a_face_without_landmarks(tiny_onnx, lfw: dict) -> None:
    key = sorted(lfw["faces"])[0]
    with pytest.raises(InputMismatch, match=f"sample '{key}': no 5-point landmarks.*align.landmarks"):
        load_face_model(tiny_onnx[0]).embed(lfw["faces"][key][None], [{"key": key, "align": {"method": "none"}}])


def test_onnx_loader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.onnx: no such ONNX model file"):
        load_face_model(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=f"{re.escape(str(bad))}: not an ONNX model"):
        load_face_model(bad)


# ---------------------------------------------------------------- cdfv-eval --image-model dlib


def _write_set(root: Path, name: str, samples: list[dict], meta: dict, identities: list[str]) -> Path:
    ShardSetWriter(root / name, name).write(0, samples)
    write_index(root / name, name, "image", [spec.IMAGE, spec.LABEL, spec.META], identities, meta)
    return root / name


def test_cdfv_eval_with_dlib_end_to_end(dlib_model, lfw: dict, tmp_path: Path) -> None:
    """Original faces and JPEG-decoded probes (inheriting their original's metadata, as the
    pipeline's decoded sets do) scored by dlib through the command line."""
    identities = sorted({k.split("__")[0] for k in lfw["faces"]})
    original, decoded = [], []
    for key, face in lfw["faces"].items():
        base = {"__key__": key, spec.LABEL: identities.index(key.split("__")[0])}
        ok, jpeg = cv2.imencode(".jpg", face[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 30])
        rate = {"bpp": 8.0 * len(jpeg) / spec.FACE_PIXELS}
        original.append({**base, spec.IMAGE: face, spec.META: lfw["metas"][key]})
        decoded.append({**base, spec.IMAGE: cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1],
                        spec.META: {**lfw["metas"][key], "rate": rate}})
    faces = _write_set(tmp_path, "faces", original, {"variant": "original"}, identities)
    jpeg = _write_set(tmp_path, "decoded-jpeg", decoded, {"variant": "decoded", "codec": {"name": "jpeg", "parameter": "quality", "value": 30}}, identities)
    out = tmp_path / "results"
    result = CliRunner().invoke(main, ["--pairs", str(lfw["pairs_file"]), "--faces", str(faces), "--image-model", "dlib",
                                       "--decoded", str(jpeg), "--batch-size", "8", "--bootstrap", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    dlib_id = dlib_model.info["model_id"]
    runs = {}
    for path in sorted((out / "scores").glob("*.parquet")):
        table, meta = read_scores(path)
        rows = table.to_pylist()
        assert {r["model_id"] for r in rows} == {dlib_id} and meta["model"]["model_id"] == dlib_id
        assert meta["model"]["preprocessing"]["box_side"] == DLIB_BOX_SIDE
        runs[path.stem] = rows
    assert sorted(runs) == ["dlib-resnet-v1_jpeg_quality30", "dlib-resnet-v1_original"]
    emb = _embed_all(dlib_model, lfw)
    expected = [float(emb[p.probe] @ emb[p.reference]) for p in lfw["pairs"]]
    np.testing.assert_allclose([r["score"] for r in runs["dlib-resnet-v1_original"]], expected, atol=1e-5)
    decoded_rows = runs["dlib-resnet-v1_jpeg_quality30"]
    genuine = [r["score"] for r in decoded_rows if r["label"]]
    impostor = [r["score"] for r in decoded_rows if not r["label"]]
    assert np.mean(genuine) > np.mean(impostor)
    assert all(r["probe_bpp"] > 0 for r in decoded_rows)
    # faces pre-aligned without detection: refused in one line naming the set and the sample
    loose = _write_set(tmp_path, "faces-loose", [{**s, spec.META: {"key": s["__key__"], "align": {"method": "none"}}} for s in original],
                       {"variant": "original"}, identities)
    result = CliRunner().invoke(main, ["--pairs", str(lfw["pairs_file"]), "--faces", str(loose), "--image-model", "dlib",
                                       "--bootstrap", "0", "--out", str(tmp_path / "loose")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(r"Error: shard set 'faces-loose', sample '\w+': no 5-point landmarks", result.output), result.output
