"""Conventional-codec anchors on real LFW View 1 faces: round trips, rate accounting, rate matching."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
import pytest
from PIL import Image

from cdfv.pipeline.conventional import CODECS, CodecFailure, get_codec, jpeg_container_bytes
from cdfv.pipeline.isobmff import ContainerError, hevc_payload
from cdfv.pipeline.quality import psnr
from cdfv.pipeline.ratematch import RateNotReachable, match_rate, mean_bpp

# Three parameter values per codec, in order of rising rate.
RISING = {"jpeg": (5, 25, 62), "jpeg2000": (240.0, 63.0, 37.0), "hevc-intra": (41, 35, 26)}


def view1_faces(lfw_root: Path, meta: Path, count: int) -> list[np.ndarray]:
    """224x224 RGB faces: centre crops of the first distinct pictures of LFW View 1 (DevTest)."""
    paths: list[Path] = []
    for line in (meta / "pairsDevTest.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        for name, num in ((f[0], f[1]), (f[-2] if len(f) == 4 else f[0], f[-1])):
            path = lfw_root / name / f"{name}_{int(num):04d}.jpg"
            if path not in paths and path.is_file():
                paths.append(path)
        if len(paths) >= count:
            break
    faces = [cv2.cvtColor(cv2.imread(str(p))[13:237, 13:237], cv2.COLOR_BGR2RGB) for p in paths[:count]]
    assert len(faces) == count and all(f.shape == (224, 224, 3) for f in faces)
    return faces


@pytest.fixture(scope="module")
def faces(lfw_root: Path, lfw_meta: Path) -> list[np.ndarray]:
    return view1_faces(lfw_root, lfw_meta, 8)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_round_trip_psnr_rises_with_rate(name: str, faces: list[np.ndarray]) -> None:
    codec = get_codec(name)
    for face in faces[:4]:
        coded = [codec.code(face, v) for v in RISING[name]]
        assert all(c.decoded.shape == face.shape and c.decoded.dtype == np.uint8 for c in coded)
        bpps = [c.bpp for c in coded]
        psnrs = [psnr(face, c.decoded) for c in coded]
        assert bpps == sorted(bpps) and len(set(bpps)) == 3, bpps
        assert psnrs == sorted(psnrs) and psnrs[0] > 20, psnrs
        assert coded[0].codec == name and coded[0].parameter == codec.parameter


@pytest.mark.parametrize("name", ["jpeg", "hevc-intra"])
def test_payload_excludes_a_rate_independent_container(name: str, faces: list[np.ndarray]) -> None:
    codec = get_codec(name)
    coded = [codec.code(faces[0], v) for v in RISING[name]]
    overheads = {c.container_bytes - c.payload_bytes for c in coded}
    assert len(overheads) == 1 and overheads.pop() > 0  # the same headers whatever the rate


def test_jpeg2000_is_a_bare_codestream(faces: list[np.ndarray]) -> None:
    coded = get_codec("jpeg2000").code(faces[0], 63.0)
    assert coded.payload_bytes == coded.container_bytes


def test_jpeg_without_its_application_segments_decodes_identically(faces: list[np.ndarray]) -> None:
    buf = io.BytesIO()
    Image.fromarray(faces[0]).save(buf, "JPEG", quality=25, subsampling=2, optimize=True)
    data = buf.getvalue()
    assert data[2:4] == b"\xff\xe0"  # JFIF APP0 right after SOI
    app0 = 2 + int.from_bytes(data[4:6], "big")
    assert jpeg_container_bytes(data) == app0
    bare = data[:2] + data[2 + app0 :]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(bare))), np.asarray(Image.open(io.BytesIO(data))))
    assert get_codec("jpeg").code(faces[0], 25).payload_bytes == len(bare)


def test_hevc_payload_counts_parameter_sets_and_slices(faces: list[np.ndarray]) -> None:
    heif = pillow_heif.from_bytes(mode="RGB", size=(224, 224), data=faces[1].tobytes())
    buf = io.BytesIO()
    heif.save(buf, enc_params={"x265:qp": "35"})
    payload = hevc_payload(buf.getvalue())
    assert payload.nal_units >= 4  # VPS, SPS, PPS, at least one slice
    assert 0 < payload.parameter_set_bytes < 200 < payload.picture_bytes
    with pytest.raises(ContainerError):
        hevc_payload(buf.getvalue()[:-10])


@pytest.mark.parametrize("name", ["jpeg", "hevc-intra"])
def test_failure_names_codec_and_reason(name: str) -> None:
    too_tall = np.full((70000, 2, 3), 128, np.uint8)  # beyond JPEG's 65500 lines and x265's limits
    with pytest.raises(CodecFailure, match=rf"^{name} \("):
        get_codec(name).code(too_tall, RISING[name][0])


def test_bad_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="Kakadu"):
        get_codec("jpeg2000-visual")
    with pytest.raises(ValueError, match="known: jpeg"):
        get_codec("webp")
    with pytest.raises(ValueError, match="integer"):
        get_codec("hevc-intra").code(np.zeros((32, 32, 3), np.uint8), 35.5)
    with pytest.raises(CodecFailure, match="uint8"):
        get_codec("jpeg").code(np.zeros((32, 32, 3), np.float32), 50)


@pytest.mark.parametrize(("name", "target"), [("jpeg2000", 0.10), ("jpeg2000", 0.65), ("hevc-intra", 0.17), ("jpeg", 0.38)])
def test_match_rate_hits_target(name: str, target: float, faces: list[np.ndarray]) -> None:
    codec = get_codec(name)
    value, achieved = match_rate(codec, faces, target)
    assert abs(achieved / target - 1) <= 0.05
    assert mean_bpp(codec, faces, value) == pytest.approx(achieved)  # deterministic, reproducible


def test_match_rate_inverts_an_integer_parameter(faces: list[np.ndarray]) -> None:
    codec = get_codec("hevc-intra")
    rate_at_35 = mean_bpp(codec, faces, 35)
    assert match_rate(codec, faces, rate_at_35) == (35, pytest.approx(rate_at_35))


def test_match_rate_fails_clearly(faces: list[np.ndarray]) -> None:
    jpeg = get_codec("jpeg")
    floor = mean_bpp(jpeg, faces, 1)
    with pytest.raises(RateNotReachable, match="outside the reachable"):
        match_rate(jpeg, faces, floor * 0.8)  # below quality 1: JPEG's tables alone cost more
    hevc = get_codec("hevc-intra")
    between = (mean_bpp(hevc, faces, 35) * mean_bpp(hevc, faces, 36)) ** 0.5
    with pytest.raises(RateNotReachable, match="no qp gives .* qp=35 gives .* qp=36 gives"):
        match_rate(hevc, faces, between, tolerance=0.01)


def test_jpeg_headers_take_a_third_of_its_lowest_rate(faces: list[np.ndarray]) -> None:
    """cdfv.reproduction.plan's figure: at quality 1 the rate-bearing JPEG (APPn segments left out)
    less its entropy-coded segment (after the scan header, before EOI) is about 0.044 bpp of 0.12-0.13."""
    headers, rates = [], []
    for face in faces:
        coded = get_codec("jpeg").code(face, 1)
        buf = io.BytesIO()
        Image.fromarray(face).save(buf, "JPEG", quality=1, subsampling=2, optimize=True)
        data = buf.getvalue()
        assert len(data) == coded.container_bytes and data[-2:] == b"\xff\xd9"
        scan = data.index(b"\xff\xda")
        entropy_coded = len(data) - 2 - (scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big"))
        headers.append(8 * (coded.payload_bytes - entropy_coded) / (224 * 224))
        rates.append(coded.bpp)
    assert 0.040 < float(np.mean(headers)) < 0.048, headers
    assert 0.11 < float(np.mean(rates)) < 0.14, rates


def test_conventional_runs_are_named_and_titled_by_their_own_parameter() -> None:
    """A JPEG 2000 run is named by its ratio, not as a quality (was resnet50_jpeg2000-ratio_q12.2784);
    the learned codec keeps its q."""
    from cdfv.eval.evaluate import run_name
    from cdfv.eval.plots import _roc_label, histograms
    from cdfv.eval.runs import Run, natural_key

    names = {label: run_name("resnet50", "decoded", label, value)
             for label, value in (("jpeg2000-ratio", 12.2784), ("jpeg-quality", 5.0), ("hevc-intra-qp", 35.0),
                                  ("bmshj2018-hyperprior-mse", 1.0))}
    assert names == {"jpeg2000-ratio": "resnet50_jpeg2000_ratio12.2784", "jpeg-quality": "resnet50_jpeg_quality5",
                     "hevc-intra-qp": "resnet50_hevc-intra_qp35", "bmshj2018-hyperprior-mse": "resnet50_bmshj2018-hyperprior-mse_q1"}
    assert run_name("resnet50", "original", None, None) == "resnet50_original"
    assert sorted(["resnet50_jpeg2000_ratio75.1", "resnet50_jpeg2000_ratio9.5"], key=natural_key)[0].endswith("ratio9.5")
    row = {"arch": "resnet50", "codec": "jpeg2000-ratio", "quality": 12.2784, "bpp": 1.9547, "latent_mismatch": None}
    run = Run(names["jpeg2000-ratio"], "decoded", np.array([True, False]), np.array([0.9, 0.1]), row, {})
    assert _roc_label(run, codec_shown=True) == "resnet50 decoded jpeg2000 ratio12.2784 (1.95 bpp)"
    assert _roc_label(run, codec_shown=False) == "resnet50 decoded ratio12.2784 (1.95 bpp)"
    assert histograms([run]).axes[0].get_title() == "ratio12.2784, 1.95 bpp"


@pytest.mark.parametrize(("name", "target"), [("jpeg2000", 0.30), ("hevc-intra", 0.17)])
def test_the_rate_matching_bar_has_a_total_it_reaches(name: str, target: float, faces: list[np.ndarray], monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The bar counts the faces coded towards the most the bisection can code (so it has an ETA), a
    total lowered as the search narrows and equal to the faces coded when it ends."""
    from cdfv.pipeline import ratematch
    from cdfv.pipeline.conventional import Codec

    caplog.set_level("INFO", logger="cdfv")  # bars show where a user sees them
    bars, real_bar, real_code, coded = [], ratematch.progress.bar, Codec.code, []
    monkeypatch.setattr(ratematch.progress, "bar", lambda total, *a, **k: bars.append((total, real_bar(total, *a, **k))) or bars[-1][1])
    monkeypatch.setattr(Codec, "code", lambda self, face, value: coded.append(value) or real_code(self, face, value))
    codec = get_codec(name)
    most = 2 + ratematch.steps_left(codec, codec.low, codec.high)
    match_rate(codec, faces, target)
    ((first, bar),) = bars
    assert first == most * len(faces) and f"at most {most} trials" in bar.desc
    assert bar.n == bar.total == len(coded) <= first
