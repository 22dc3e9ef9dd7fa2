"""Tiny real shard sets for the trainer tests, built once per session from CelebA photos.

8 identities x 16 photos, centre-cropped to a square and resized to 224 with cv2; 12 photos
of each identity train, 4 are held out. Latent sets come from an untrained bmshj2018 q1 codec
(M = 192): faces padded to 256, y_hat = round(LATENT_GAIN * g_a(x)) (a random g_a gives
|y| < 0.5, which would round to all zeros and carry nothing to learn from); training latents are kept 16x16 (the
trainer crops), held-out ones centre-cropped to 14x14 as cdfv-prep stores them by default.
Other trainer test modules import these fixtures.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cdfv.shards import ShardSetWriter, make_key, write_index

IDENTITIES = 8
PHOTOS = 16
TRAIN_PHOTOS = 12
LATENT_GAIN = 40.0


def square_224(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = bgr[top : top + side, left : left + side]
    return cv2.cvtColor(cv2.resize(crop, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def write_set(root: Path, name: str, kind: str, samples: list[dict], identities: list[str], shards: int) -> Path:
    directory = root / name
    writer = ShardSetWriter(directory, name)
    for chunk in range(shards):
        writer.write(chunk, samples[chunk::shards])
    members = sorted({k for s in samples for k in s if k != "__key__"})
    write_index(directory, name, kind, members, identities, {"dataset": "celeba-subset", "untrained": True})
    return directory


@pytest.fixture(scope="session")
def celeba_faces(celeba_root: Path) -> dict[str, list[np.ndarray]]:
    people = sorted(d for d in celeba_root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= PHOTOS)
    return {p.name: [square_224(f) for f in sorted(p.glob("*.jpg"))[:PHOTOS]] for p in people[:IDENTITIES]}


def _samples(per_identity: dict[str, list[np.ndarray]], value, photos: slice) -> list[dict]:
    out = []
    for label, (name, items) in enumerate(sorted(per_identity.items())):
        for i, item in list(enumerate(items))[photos]:
            out.append({"__key__": make_key(name, f"{i:04d}"), "cls": label, **value(item)})
    return out


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory: pytest.TempPathFactory, celeba_faces: dict[str, list[np.ndarray]]) -> Path:
    """faces-train / faces-heldout (image) and latents-train / latents-heldout (latent, M=192)."""
    from cdfv.pipeline.codecs import CodecSpec, load_codec

    root = tmp_path_factory.mktemp("shards")
    identities = sorted(celeba_faces)
    train, held = slice(0, TRAIN_PHOTOS), slice(TRAIN_PHOTOS, PHOTOS)
    write_set(root, "faces-train", "image", _samples(celeba_faces, lambda rgb: {"png": rgb}, train), identities, 3)
    write_set(root, "faces-heldout", "image", _samples(celeba_faces, lambda rgb: {"png": rgb}, held), identities, 1)

    codec, _ = load_codec(CodecSpec("bmshj2018-hyperprior", 1), untrained=True)
    with torch.no_grad():
        faces = torch.from_numpy(np.stack([im for _, ims in sorted(celeba_faces.items()) for im in ims]))
        x = torch.nn.functional.pad(faces.permute(0, 3, 1, 2).float() / 255.0, (16, 16, 16, 16))
        y_hat = torch.cat([torch.round(LATENT_GAIN * codec.g_a(b)) for b in x.split(50)]).numpy().astype(np.int16)
    latents = {name: list(y_hat[i * PHOTOS : (i + 1) * PHOTOS]) for i, name in enumerate(sorted(celeba_faces))}
    full = _samples(latents, lambda y: {"latent.npy": y}, train)  # 16x16: the trainer crops
    cropped = _samples(latents, lambda y: {"latent.npy": y[:, 1:15, 1:15]}, held)  # cdfv-prep's default
    write_set(root, "latents-train", "latent", full, identities, 3)
    write_set(root, "latents-heldout", "latent", cropped, identities, 1)
    return root
