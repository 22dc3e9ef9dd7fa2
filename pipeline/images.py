"""Image input/output that never guesses: every decodable picture becomes 8-bit RGB, anything
else raises BadImage naming the file and the problem."""
from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIDE = 32  # smaller pictures cannot hold a face RetinaFace finds; rejected, not upscaled


class BadImage(ValueError):
    """An input picture that cannot be used; the message names the file."""


def to_rgb8(array: np.ndarray, mode: str) -> np.ndarray:
    """Converts a decoded array of any PIL mode's numeric layout to HxWx3 uint8 RGB.

    16-bit and 32-bit integer pictures are scaled by their type's range (not clipped), alpha is
    dropped (faces are composited on nothing: the transparent pixels keep their colour)."""
    if array.dtype == np.uint16 or mode.startswith("I;16"):
        array = (array.astype(np.uint32) * 255 + 32767) // 65535
    elif array.dtype in (np.int32, np.uint32):
        array = np.clip(array, 0, 65535).astype(np.uint32) * 255 // 65535
    elif array.dtype == np.float32 or array.dtype == np.float64:
        array = np.clip(array, 0.0, 1.0) * 255.0 + 0.5
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    array = array.astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 2:  # LA
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif array.shape[2] == 4:  # RGBA
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decodes image bytes strictly (truncated files raise) into HxWx3 uint8 RGB, EXIF-upright."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGB")
            array = np.asarray(img)
            mode = img.mode
    except UnidentifiedImageError:
        raise BadImage(f"{name}: cannot decode image: not a picture format Pillow reads") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"{name}: cannot decode image: {e}") from e
    rgb = to_rgb8(array, mode)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise BadImage(f"{name}: image is {w}x{h}, smaller than {MIN_SIDE} px on a side")
    return rgb


def read_image(path: Path) -> np.ndarray:
    """Reads a picture file into HxWx3 uint8 RGB; BadImage names the file on any failure."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BadImage(f"{path}: cannot read file: {e.strerror or e}") from e
    if not data:
        raise BadImage(f"{path}: empty file")
    return decode_image(data, str(path))


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG of an RGB uint8 picture."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """Decodes a PNG written by encode_png back to RGB uint8."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("PNG decoding failed")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
