"""Complexity per solution as thesis 6.4.1 / Table 7 defines it.

Operations: MACs of one face's path after entropy decoding, counted by cdfv.trainer.macs.count_macs
(Conv2d, Linear and ConvTranspose2d; GDN/IGDN, pooling, norms and activations free, as the JPEG AI
counting tool the thesis used does):
- original anchor: ResNet50 on 3x224x224;
- decoded anchor: the codec's synthesis transform g_s on the full (M, 16, 16) latent grid (-> 256x256)
  plus ResNet50 on the 224x224 face;
- compressed domain: the latent model on (M, 14, 14).
Two counts per solution, differing only in g_s's transposed convolutions: `table7` charges them at
their OUTPUT resolution, as Table 7 does (bmshj2018 q1: g_s 9.65 GMAC, 13.5 with ResNet50, Table 7's
13.55); `true` charges them at their input resolution, the multiplications actually done (a quarter:
g_s 2.41, 6.3 with ResNet50). Ratios between solutions should use `true`; `table7` is for comparing
with the thesis. Counting IGDN (a 1x1 N->N mix per pixel) would add 0.35 GMAC at q1. The embedding
model is counted as exported (with its 2048-d embedding FC). kMAC/px divides by 224*224 pixels.

Time: ms per batch of 64 pairs (128 faces) for the whole verification of the batch, with input
preparation as the thesis includes it, from stored inputs on the host:
- original: both faces 8-bit -> float on the device -> ResNet50;
- decoded: probe y_hat -> g_s -> clamp, 8-bit rounding, 16 px border removed -> ResNet50; the
  reference face as in the original anchor;
- compressed: both y_hat grids centre-cropped 16 -> 14 -> float on the device -> latent model;
then the 64 cosine scores. Alignment is excluded everywhere: this project aligns before encoding.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from cdfv.pipeline.codecs import CodecSpec
from cdfv.shards.spec import CODED_SIZE, FACE_PIXELS, FACE_SIZE
from cdfv.trainer.macs import TransposedAt, count_macs

from .facemodels import Embedder, prepare_images

LATENT_GRID = CODED_SIZE // 16  # 16x16 y_hat of a 256x256 picture (bmshj2018 downsamples x16)
BORDER = (CODED_SIZE - FACE_SIZE) // 2  # zero padding around the 224x224 face


def synthesis_transform(codec: CodecSpec) -> nn.Module:
    """The codec's g_s with random weights, for counting and timing: the architecture CompressAI's
    zoo builds for this name and quality (cdfv.pipeline.codecs.load_codec builds the same one and also
    its entropy tables, seconds of work neither counting nor timing g_s needs)."""
    from compressai.zoo.image import cfgs, model_architectures

    return model_architectures[codec.name](*cfgs[codec.name][codec.quality]).g_s.eval()


def synthesis_macs(codec: CodecSpec, transposed_at: TransposedAt) -> int:
    """MACs of the codec's g_s on one full latent grid, traced on the meta device (shapes only);
    transposed convolutions charged at their input (done) or output (Table 7) resolution."""
    return count_macs(synthesis_transform(codec).to("meta"), (codec.latent_channels, LATENT_GRID, LATENT_GRID), transposed_at)


def model_macs(model: nn.Module, info: dict) -> int:
    """MACs of one embedding model on one input of its kind."""
    side = info["input_size"]
    channels = 3 if info["input_kind"] == "image" else info["in_channels"]
    return count_macs(model, (channels, side, side))


def kmac_per_pixel(macs: int) -> float:
    return macs / FACE_PIXELS / 1e3


def decode_faces(synthesis: nn.Module, latents: np.ndarray, device: torch.device) -> torch.Tensor:
    """Decoded-anchor probe preparation: y_hat (N, M, 16, 16) -> g_s -> 8-bit-rounded RGB 0..255
    (N, 3, 224, 224), the padding border removed, as the stored decoded faces are made."""
    y_hat = torch.from_numpy(np.ascontiguousarray(latents)).to(device, non_blocking=True).float()
    picture = synthesis(y_hat).clamp_(0.0, 1.0).mul_(255.0).round_()
    return picture[..., BORDER : BORDER + FACE_SIZE, BORDER : BORDER + FACE_SIZE]


def cosine_pairs(probe: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scores of aligned rows of two normalised embedding batches."""
    return (probe * reference).sum(dim=1)


def pair_step(
    mode: str, embedder: Embedder, batch_pairs: int, synthesis: nn.Module | None = None, seed: int = 0
) -> Callable[[], torch.Tensor]:
    """A closure that verifies one batch of pairs from host-side stored inputs (random content:
    timing does not depend on it)."""
    rng = np.random.default_rng(seed)
    device = embedder.device
    m = embedder.info.get("in_channels") or 0
    if mode == "compressed":
        grids = rng.integers(-8, 8, size=(2, batch_pairs, m, LATENT_GRID, LATENT_GRID), dtype=np.int16)
        return lambda: cosine_pairs(embedder(grids[0]), embedder(grids[1]))
    faces = rng.integers(0, 256, size=(2, batch_pairs, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    if mode == "original":
        return lambda: cosine_pairs(embedder(faces[0]), embedder(faces[1]))
    if synthesis is None:
        raise ValueError("decoded mode needs the codec's synthesis transform")
    channels = synthesis[0].in_channels
    y_hat = rng.integers(-8, 8, size=(batch_pairs, channels, LATENT_GRID, LATENT_GRID), dtype=np.int16)

    @torch.inference_mode()
    def step() -> torch.Tensor:
        probe = embedder.embed_prepared(decode_faces(synthesis, y_hat, device))
        return cosine_pairs(probe, embedder.embed_prepared(prepare_images(faces[1], device)))

    return step


@dataclass(frozen=True)
class Timing:
    ms_per_batch: float
    ms_per_batch_std: float
    batch_pairs: int
    repeats: int

    @property
    def ms_per_pair(self) -> float:
        return self.ms_per_batch / self.batch_pairs

    @property
    def pairs_per_s(self) -> float:
        return 1e3 * self.batch_pairs / self.ms_per_batch


def time_step(step: Callable[[], torch.Tensor], device: torch.device, batch_pairs: int,
              repeats: int = 50, warmup: int = 5) -> Timing:
    """Mean and spread of `repeats` timed batches after `warmup` untimed ones; on CUDA each batch
    is closed by a synchronisation so the time covers the kernels, not their launch."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(1e3 * (time.perf_counter() - start))
    spread = statistics.stdev(times) if len(times) > 1 else 0.0
    return Timing(statistics.fmean(times), spread, batch_pairs, repeats)


THESIS_QUALITIES = (1, 3, 6, 8)
THESIS_CODEC = "bmshj2018-hyperprior"


def thesis_solutions_macs(qualities: tuple[int, ...] = THESIS_QUALITIES, codec: str = THESIS_CODEC) -> list[dict]:
    """Operations of Table 7's solutions with full-size (width 64) models: original anchor,
    decoded anchor per quality (g_s + ResNet50) and cResNet39 per quality, each counted the
    Table 7 way and as performed (module docstring). Models are built on the meta device:
    counting needs shapes, not arithmetic."""
    from cdfv.trainer.models import build_model

    with torch.device("meta"):
        resnet = model_macs(build_model("resnet50"), {"input_kind": "image", "input_size": FACE_SIZE})
    rows = [{"solution": "resnet50_original", "mode": "original", "quality": None, "macs_table7": resnet, "macs_true": resnet}]
    for q in qualities:
        spec = CodecSpec(codec, q)
        rows.append({"solution": f"resnet50_{codec}_q{q}", "mode": "decoded", "quality": q,
                     "macs_table7": synthesis_macs(spec, "output") + resnet, "macs_true": synthesis_macs(spec, "input") + resnet})
    for q in qualities:
        m = CodecSpec(codec, q).latent_channels
        with torch.device("meta"):
            latent_model = build_model("cresnet39", in_channels=m)
        macs = model_macs(latent_model, {"input_kind": "latent", "input_size": 14, "in_channels": m})
        rows.append({"solution": f"cresnet39_{codec}_q{q}", "mode": "compressed", "quality": q, "macs_table7": macs, "macs_true": macs})
    for row in rows:
        for count in ("table7", "true"):
            row[f"gmac_{count}"] = row[f"macs_{count}"] / 1e9
            row[f"kmac_per_px_{count}"] = kmac_per_pixel(row[f"macs_{count}"])
    return rows


def untrained_embedder(arch: str, device: torch.device, in_channels: int | None = None, width: int = 64,
                       precision: str = "fp32") -> Embedder:
    """An embedder with random weights: timing depends on the architecture, not the weights."""
    from cdfv.trainer.export import embedding_info
    from cdfv.trainer.models import build_model

    model = build_model(arch, in_channels=in_channels, width=width).to(device)
    return Embedder(model, embedding_info(model, arch, untrained=True, train_shards=None), device, precision=precision)


def time_solutions(device: str = "cpu", qualities: tuple[int, ...] = THESIS_QUALITIES, batch_pairs: int = 64,
                   repeats: int = 50, warmup: int = 5, width: int = 64, precision: str = "fp32",
                   codec: str = THESIS_CODEC) -> list[dict]:
    """Table 7's time columns: the original anchor once, then per quality the decoded anchor and
    cResNet39, each over `repeats` batches of `batch_pairs` pairs."""
    dev = torch.device(device)
    resnet = untrained_embedder("resnet50", dev, width=width, precision=precision)
    rows = [("resnet50_original", "original", None, time_step(pair_step("original", resnet, batch_pairs), dev,
                                                               batch_pairs, repeats, warmup))]
    for q in qualities:
        spec = CodecSpec(codec, q)
        synthesis = synthesis_transform(spec).to(dev)
        step = pair_step("decoded", resnet, batch_pairs, synthesis)
        rows.append((f"resnet50_{codec}_q{q}", "decoded", q, time_step(step, dev, batch_pairs, repeats, warmup)))
        latent = untrained_embedder("cresnet39", dev, spec.latent_channels, width, precision)
        step = pair_step("compressed", latent, batch_pairs)
        rows.append((f"cresnet39_{codec}_q{q}", "compressed", q, time_step(step, dev, batch_pairs, repeats, warmup)))
    return [{"solution": s, "mode": m, "quality": q, "ms_per_batch": t.ms_per_batch, "ms_per_batch_std": t.ms_per_batch_std,
             "ms_per_pair": t.ms_per_pair, "pairs_per_s": t.pairs_per_s, "batch_pairs": batch_pairs, "repeats": repeats}
            for s, m, q, t in rows]
