"""The embedded demo dataset: synthetic identities made from one real photograph that ships
with matplotlib (sample_data/grace_hopper.jpg), so the demo runs offline with no download.

Each identity is a fixed geometric and photometric transform of the photo (face shape stretch,
skin tint, background colour); each image of it adds a small pose, scale, light and blur change.
It is synthetic: a smoke test of every stage, not a benchmark of face verification.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from cdfv.shards import atomic_write_bytes

SIZE = 250  # LFW's picture size


def source_photo() -> np.ndarray:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise FileNotFoundError(f"{path}: matplotlib's sample photo is missing; reinstall matplotlib")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _identity_params(rng: np.random.Generator) -> dict:
    return {
        "stretch": rng.uniform(0.82, 1.18),  # face width / height
        "tint": rng.uniform(-25, 25, size=3),
        "background": rng.uniform(0, 255, size=3),
        "gamma": rng.uniform(0.75, 1.3),
    }


def _render(photo: np.ndarray, ident: dict, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    cx, cy = w / 2, h * 0.42  # the face sits a little above the middle of the photo
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.9, 1.1) * SIZE / (0.75 * h)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, :] *= ident["stretch"]
    # map the face centre to the output centre, shifted a few pixels
    fx, fy = m @ np.array([cx, cy, 1.0])
    m[:, 2] += np.array([SIZE / 2, SIZE / 2]) + rng.uniform(-6, 6, size=2) - [fx, fy]
    img = cv2.warpAffine(photo, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=tuple(float(v) for v in ident["background"]))
    img = img.astype(np.float32) / 255.0
    img = np.power(img, ident["gamma"] * rng.uniform(0.9, 1.1)) * 255.0
    img = img + ident["tint"] + rng.normal(0, 3, size=img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 1.2))
    return img


def demo_pictures(identities: int, per_identity: int, seed: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
    """(identity index, picture number from 1, SIZExSIZE RGB picture) of the demo dataset, in the
    order make_demo_dataset writes them; also face-like content wherever coded bits must be real
    (Table 7's entropy-decoding time)."""
    photo = source_photo()
    rng = np.random.default_rng(seed)
    for i in range(identities):
        ident = _identity_params(rng)
        for n in range(1, per_identity + 1):
            yield i, n, _render(photo, ident, rng)


def make_demo_dataset(root: Path, pairs: Path | None = None, identities: int = 12, per_identity: int = 8,
                      seed: int = 0) -> Path | None:
    """Writes an LFW-layout dataset (<root>/<Name>/<Name>_<NNNN>.jpg) and, given `pairs`, a View-1
    style pairs file there, which must lie outside root: LFW ships its pairs files beside its image
    folder, and a file inside it is no input, so cdfv-prep would list it as skipped. Deterministic
    for a seed; returns the pairs file."""
    root = Path(root)
    names = [f"Demo_Person_{i:02d}" for i in range(identities)]
    for i, n, img in demo_pictures(identities, per_identity, seed):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        atomic_write_bytes(root / names[i] / f"{names[i]}_{n:04d}.jpg", buf.tobytes())
    if pairs is None:
        return None
    same, diff = [], []
    for name in names:
        for a in range(1, per_identity + 1, 2):
            same.append(f"{name}\t{a}\t{a + 1}")
    for i, name in enumerate(names):
        for k in range(1, per_identity // 2 + 1):
            other = names[(i + k) % len(names)]
            diff.append(f"{name}\t{k}\t{other}\t{per_identity + 1 - k}")
    n = min(len(same), len(diff))
    atomic_write_bytes(Path(pairs), ("\n".join([str(n)] + same[:n] + diff[:n]) + "\n").encode())
    return Path(pairs)
