"""Image decoding: every usable picture becomes 8-bit RGB with the right values; everything else
raises BadImage naming the file."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cdfv.pipeline.images import BadImage, decode_png, encode_png, read_image


def save_pil(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    img.save(path, **kw)
    return path


def jpeg_bytes(side: int = 64) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_rgb_jpeg_decodes_to_hxwx3_uint8(tmp_path):
    path = save_pil(tmp_path / "a.jpg", np.full((40, 60, 3), (200, 100, 50), np.uint8), quality=100)
    rgb = read_image(path)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - (200, 100, 50)).max() <= 2


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    rgb = read_image(save_pil(tmp_path / "g.png", gray))
    assert rgb.shape == (48, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    rgb = read_image(save_pil(tmp_path / "g.jpg", np.full((40, 40), 90, np.uint8), quality=100))
    assert (rgb == rgb[:, :, :1]).all() and abs(int(rgb[0, 0, 0]) - 90) <= 1


def test_cmyk_jpeg_decodes_to_rgb_colours(tmp_path):
    colours = np.zeros((40, 80, 3), np.uint8)
    colours[:, :40] = (255, 0, 0)
    colours[:, 40:] = (0, 0, 255)
    path = save_pil(tmp_path / "cmyk.jpg", colours, "CMYK", quality=100)
    assert Image.open(path).mode == "CMYK"
    rgb = read_image(path)
    assert np.abs(rgb[20, 10].astype(int) - (255, 0, 0)).max() <= 4
    assert np.abs(rgb[20, 70].astype(int) - (0, 0, 255)).max() <= 4


def test_rgba_png_drops_alpha_and_keeps_colours(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[...] = (10, 20, 30, 0)
    rgba[:20] = (250, 128, 5, 255)
    rgb = read_image(save_pil(tmp_path / "a.png", rgba))
    assert rgb.shape == (40, 40, 3)
    np.testing.assert_array_equal(rgb[0, 0], (250, 128, 5))
    np.testing.assert_array_equal(rgb[39, 0], (10, 20, 30))


def test_16bit_png_scales_to_8bit(tmp_path):
    gray16 = np.zeros((40, 40), np.uint16)
    gray16[:, :20] = 65535
    gray16[:, 20:] = 32768
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    rgb = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(rgb[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(rgb[0, 39], (128, 128, 128))

    colour16 = np.zeros((40, 40, 3), np.uint16)
    colour16[...] = (65535, 0, 30000)  # RGB
    cv2.imwrite(str(tmp_path / "c16.png"), colour16[:, :, ::-1])  # cv2 writes BGR
    rgb = read_image(tmp_path / "c16.png")
    assert rgb.dtype == np.uint8
    assert rgb[5, 5, 0] == 255 and rgb[5, 5, 1] == 0
    assert abs(int(rgb[5, 5, 2]) - round(30000 * 255 / 65535)) <= 1


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((40, 80, 3), np.uint8)
    array[:, :40] = 255  # left half white
    img = Image.fromarray(array)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "rot.jpg", quality=100, exif=exif.tobytes())
    rgb = read_image(tmp_path / "rot.jpg")
    assert rgb.shape == (80, 40, 3)
    assert rgb[10, 20].min() > 200 and rgb[70, 20].max() < 50  # the white half is now on top


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not a picture at all\n" * 10, "cannot decode image"),
        ("truncated.jpg", jpeg_bytes()[:700], "cannot decode image"),
    ],
)
def test_bad_files_raise_badimage_naming_the_file(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(BadImage, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_tiny_image_is_rejected_not_upscaled(tmp_path):
    path = save_pil(tmp_path / "tiny.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(BadImage, match=r"tiny.png: image is 20x20, smaller than 32 px"):
        read_image(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(BadImage, match=f"{tmp_path / 'gone.jpg'}: cannot read file"):
        read_image(tmp_path / "gone.jpg")


def test_png_round_trip_is_lossless():
    rgb = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(rgb)), rgb)
    with pytest.raises(ValueError, match="expected HxWx3 uint8"):
        encode_png(rgb.astype(np.float32))
