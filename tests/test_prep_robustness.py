"""Bad and unusual inputs through `cdfv-prep run`: each bad file is named, listed in the rejects
parquet and skipped while the others are written; unusual but valid pictures decode correctly;
--strict stops at the first bad file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cdfv.shards import spec as S

from prep_helpers import CODEC_ARGS, by_key, invoke, invoke_ok, link_dataset, rejects, view1_images

BAD = ("bad__empty", "bad__gone", "bad__text", "bad__tiny", "bad__truncated")
ODD = ("odd__cmyk", "odd__deep16", "odd__gray", "odd__rgba")


def make_dataset(root: Path, pictures: list[Path]) -> Path:
    """good/: three real LFW faces; odd/: one real face as grayscale, CMYK, RGBA and 16-bit files;
    bad/: files that are no usable picture."""
    good, odd, bad = root / "good", root / "odd", root / "bad"
    for d in (good, odd, bad):
        d.mkdir()
    for p in pictures[:3]:
        (good / p.name).symlink_to(p)
    face = Image.open(pictures[3]).convert("RGB")
    face.convert("L").save(odd / "gray.jpg", quality=95)
    face.convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    face.convert("RGBA").save(odd / "rgba.png")
    cv2.imwrite(str(odd / "deep16.png"), np.asarray(face)[:, :, ::-1].astype(np.uint16) * 257)
    data = pictures[4].read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not a picture\n")
    Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(bad / "tiny.png")
    os.symlink(root / "nowhere.jpg", bad / "gone.jpg")
    return root


@pytest.fixture(scope="module")
def messy(lfw_root, lfw_meta, tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("messy"), view1_images(lfw_root, lfw_meta, 5))


@pytest.fixture(scope="module")
def messy_run(messy, tmp_path_factory):
    out = tmp_path_factory.mktemp("messy-out")
    result = invoke("run", "--dataset", "folder", "--root", messy, "--out", out, "--chunk-size", "4", *CODEC_ARGS,
                    "--outputs", "faces,latents")
    return out, result


def test_bad_files_are_rejected_and_the_run_goes_on(messy_run):
    out, result = messy_run
    assert result.exit_code == 0, result.output
    rows = rejects(out / "latents-q1")
    assert sorted(r["key"] for r in rows) == sorted(BAD)
    assert all(set(r) == {"key", "source", "stage", "reason"} for r in rows)
    by = {r["key"]: r for r in rows}
    assert by["bad__empty"]["reason"].endswith("bad/empty.jpg: empty file")
    assert "bad/text.jpg: cannot decode image" in by["bad__text"]["reason"]
    assert "bad/truncated.jpg: cannot decode image" in by["bad__truncated"]["reason"]
    assert "bad/tiny.png: image is 20x20, smaller than 32 px" in by["bad__tiny"]["reason"]
    assert "bad/gone.jpg: cannot read file" in by["bad__gone"]["reason"]
    assert by["bad__gone"]["source"] == "bad/gone.jpg"
    assert "5 input(s) rejected" in result.stderr and "rejected bad/empty.jpg" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["rejects"] == 5
    assert summary["reject_reasons"] == {"cannot decode image": 2, "empty file": 1, "image is 20x20, smaller than 32 px on a side": 1,
                                         "cannot read file": 1}


def test_good_and_unusual_pictures_are_all_written(messy, messy_run):
    out, _ = messy_run
    good = {f"good__{p.stem}" for p in (messy / "good").iterdir()}
    assert len(good) == 3
    assert set(by_key(out / "faces")) == good | set(ODD)
    assert set(by_key(out / "latents-q1")) == good | set(ODD)


def test_unusual_pictures_keep_their_colours(messy_run):
    out, _ = messy_run
    faces = by_key(out / "faces", (S.IMAGE, S.META))
    gray = faces["odd__gray"][S.IMAGE]
    assert (gray[:, :, 0] == gray[:, :, 1]).all() and (gray[:, :, 1] == gray[:, :, 2]).all() and gray.max() > 100
    rgba, deep = faces["odd__rgba"][S.IMAGE], faces["odd__deep16"][S.IMAGE]
    np.testing.assert_array_equal(rgba, deep)  # same 8-bit values whether stored as RGBA or 16-bit
    cmyk = faces["odd__cmyk"][S.IMAGE].astype(int)
    assert np.abs(cmyk - rgba.astype(int)).mean() < 8  # the CMYK JPEG decodes to the same colours


def test_strict_run_fails_naming_the_file(messy, tmp_path):
    result = invoke("run", "--dataset", "folder", "--root", messy, "--out", tmp_path, "--chunk-size", "4", *CODEC_ARGS, "--strict")
    assert result.exit_code != 0
    assert "bad/empty.jpg" in result.output and "--strict" in result.output


def test_missing_root_fails_with_a_clear_message(tmp_path):
    result = invoke("run", "--dataset", "folder", "--root", tmp_path / "absent", "--out", tmp_path, *CODEC_ARGS)
    assert result.exit_code != 0
    assert f"dataset root {tmp_path / 'absent'} does not exist" in result.output


def test_no_face_skip_lists_the_picture_and_whole_keeps_it(lfw_root, lfw_meta, tmp_path):
    root = link_dataset(view1_images(lfw_root, lfw_meta, 2), tmp_path / "data")
    (root / "scenery").mkdir()
    Image.fromarray(np.tile(np.linspace(0, 255, 160, dtype=np.uint8)[:, None, None], (1, 160, 3))).save(root / "scenery" / "sky.png")

    skip = invoke_ok("run", "--dataset", "folder", "--root", root, "--out", tmp_path / "skip", *CODEC_ARGS, "--outputs", "faces")
    assert skip["rejects"] == 1
    (row,) = rejects(tmp_path / "skip" / "faces")
    assert row["key"] == "scenery__sky" and row["source"] == "scenery/sky.png"
    assert "no face" in row["reason"]
    assert "scenery__sky" not in by_key(tmp_path / "skip" / "faces")

    whole = invoke_ok("run", "--dataset", "folder", "--root", root, "--out", tmp_path / "whole", *CODEC_ARGS,
                      "--outputs", "faces", "--no-face", "whole")
    assert whole["rejects"] == 0
    sky = by_key(tmp_path / "whole" / "faces")["scenery__sky"]
    assert sky[S.META]["detection"]["status"] == "no_face"
    assert sky[S.META]["align"]["fallback"] == "no_face" and sky[S.IMAGE].shape == (224, 224, 3)
