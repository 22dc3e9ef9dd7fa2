"""A report's worth of scores files shaped like the CPU preset's (results/cpu-preset): two image
face models on original faces, dlib on a learned codec and three conventional anchors at four
rates each, ResNet50 on the learned codec, a compressed-domain model at the learned codec's rates:
26 runs of 500 same-person and 500 different-person pairs (LFW View 1 DevTest's sizes), scores drawn
from seeded normal distributions in the ranges those models score in (dlib's cosines in 0.7-1.0)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from cdfv.eval.scores import SCHEMA, write_scores

PAIRS_EACH = 500
LEARNED = "bmshj2018-hyperprior-mse"
PSNR_AT_ZERO = {LEARNED: 20.0, "hevc-intra-qp": 38.0, "jpeg-quality": 30.0, "jpeg2000-ratio": 36.0}  # dB, as there
# codec -> (quality, bpp) at the four rates the CPU preset matched its anchors to
CODECS = {
    LEARNED: ((1, 0.320), (3, 0.418), (6, 0.915), (8, 1.098)),
    "hevc-intra-qp": ((27, 0.326), (24, 0.411), (14, 0.938), (12, 1.125)),
    "jpeg-quality": ((18, 0.320), (29, 0.414), (81, 0.899), (87, 1.069)),
    "jpeg2000-ratio": ((75.1563, 0.320), (58.0179, 0.414), (26.1207, 0.916), (21.9811, 1.087)),
}


def _write(path: Path, mode: str, arch: str, codec: str | None, quality: float | None, bpp: float,
           genuine: tuple[float, float], impostor: tuple[float, float], seed: int) -> Path:
    """One scores file: genuine and impostor cosines ~ N(mean, sd) clipped to [-1, 1]; each pair's
    probe is its own image, coded at about `bpp` (decoded runs carry PSNR and MS-SSIM rising with it)."""
    rng = np.random.default_rng(seed)
    n = 2 * PAIRS_EACH
    labels = np.arange(n) < PAIRS_EACH
    scores = np.clip(np.where(labels, rng.normal(*genuine, n), rng.normal(*impostor, n)), -1, 1)
    # one codec rate codes the same probe faces for every model
    probe_bpp = bpp * np.random.default_rng(round(bpp * 1000)).lognormal(0, 0.1, n) if codec else np.full(n, math.nan)
    decoded = mode == "decoded"
    table = pa.Table.from_pydict({
        "pair": np.arange(n, dtype=np.int32), "fold": np.full(n, -1, dtype=np.int16),
        "probe_key": [f"p{i}" for i in range(n)], "reference_key": [f"r{i}" for i in range(n)],
        "label": labels, "score": scores, "missing": np.zeros(n, bool), "missing_reason": [None] * n,
        "probe_bpp": probe_bpp, "probe_psnr": PSNR_AT_ZERO[codec] + 8 * np.log2(1 + probe_bpp) if decoded else np.full(n, math.nan),
        "probe_ms_ssim": 1 - 0.05 / (1 + probe_bpp) ** (PSNR_AT_ZERO[codec] / 20) if decoded else np.full(n, math.nan),
        "mode": [mode] * n, "codec": [codec] * n, "quality": [quality] * n, "model_id": [f"{arch}-id"] * n,
        "arch": [arch] * n, "run": [f"{arch}_{codec}_q{quality:g}" if codec else f"{arch}_original"] * n,
    }, schema=SCHEMA)
    write_scores(path, table, {"pairs_file": "pairsDevTest.txt", "mode": mode})
    return path


def cpu_preset_like(folder: Path) -> list[Path]:
    """The 26 scores files, in the order a shell glob lists them (q12 before q27, q81 before q9)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [_write(folder / "dlib-resnet-v1_original.parquet", "original", "dlib-resnet-v1", None, None, math.nan,
                    (0.955, 0.02), (0.85, 0.035), 0),
             _write(folder / "resnet50_original.parquet", "original", "resnet50", None, None, math.nan,
                    (0.9952, 0.002), (0.9948, 0.002), 1)]
    for c, (codec, points) in enumerate(CODECS.items()):
        for rank, (quality, bpp) in enumerate(points):
            seed = 10 * c + rank + 2
            loss = 0.02 * (4 - rank) if codec == LEARNED else 0.002 * (4 - rank)  # the learned codec hurts dlib most
            _write(folder / f"dlib-resnet-v1_{codec}_q{quality:g}.parquet", "decoded", "dlib-resnet-v1", codec, quality,
                   bpp, (0.955 - loss, 0.02 + loss / 2), (0.85, 0.035), seed)
            if codec == LEARNED:
                _write(folder / f"resnet50_{codec}_q{quality:g}.parquet", "decoded", "resnet50", codec, quality, bpp,
                       (0.9951, 0.002), (0.9948, 0.002), seed + 100)
                _write(folder / f"cresnet39_{codec}_q{quality:g}.parquet", "compressed", "cresnet39", codec, quality, bpp,
                       (0.62 + 0.01 * rank, 0.1), (0.58, 0.1), seed + 200)
    return sorted(folder.glob("*.parquet"))
