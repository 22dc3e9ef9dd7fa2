"""Learned-codec coding of faces: real bitstreams, entropy-decoded latents, reconstructions.

CompressAI's decompress() returns only x_hat, so y_hat is recovered here from the bitstream. For
the scale hyperprior (bmshj2018-hyperprior) the transforms run batched on the chosen device and the
range coder on the CPU; y_hat = round(y) is also available straight from the encoder (the fast path),
and `verify` proves it equal to the entropy-decoded one. Every other codec runs CompressAI's own
compress / decompress one picture at a time, y_hat taken where decompress hands it to g_s: the
factorized prior and mbt2018-mean on the chosen device, the autoregressive ones (mbt2018,
cheng2020) on the CPU, whose context model decodes position by position.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from compressai.models import ScaleHyperprior
from torch import nn

from cdfv.shards.spec import CODED_SIZE, FACE_SIZE

from .codecs import CodecSpec
from .rangecoding import CoderPool, HyperpriorCoder


@dataclass
class Encoded:
    strings: list[bytes]  # CompressAI order: [y, z]; [y] alone for the factorized prior
    shape: tuple[int, int]  # the grid decompress() needs: z's, y's for the factorized prior
    y_hat: np.ndarray | None  # fast path: the encoder's own quantised latent, (M, H, W)


def pad_multiple(rgb: np.ndarray, multiple: int = 64) -> tuple[np.ndarray, tuple[int, int]]:
    """Zero-pads an HxWx3 picture on both sides to the next multiple (CompressAI's transforms need
    sides divisible by 64); returns the picture and the (left, top) offset."""
    h, w = rgb.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    top, left = ph // 2, pw // 2
    out = np.zeros((h + ph, w + pw, 3), dtype=rgb.dtype)
    out[top : top + h, left : left + w] = rgb
    return out, (left, top)


def to_tensor(pictures: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Stacks equal-size RGB uint8 pictures into an (N, 3, H, W) float batch in [0, 1]."""
    batch = torch.from_numpy(np.stack(pictures)).to(device)
    # contiguous NCHW: a permuted (channels-last) batch runs other kernels, which round differently
    return batch.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def to_pictures(x_hat: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) in [0, 1] to RGB uint8 pictures (round to nearest)."""
    arr = x_hat.clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(arr)


def split_coding(model: nn.Module) -> bool:
    """Whether cdfv runs the model's range coding itself (batched transforms, a CPU coder that a
    CoderPool can spread over processes): the scale hyperprior alone, by exact type, since its
    subclasses (mbt2018, cheng2020) code differently."""
    return type(model) is ScaleHyperprior


class _YHat(Exception):
    """Raised by a pre-hook on g_s to end decompress() once it holds y_hat: x_hat is not needed."""

    def __init__(self, y_hat: torch.Tensor) -> None:
        self.y_hat = y_hat


def _stop_at_synthesis(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    raise _YHat(args[0])


class CodecEngine:
    """One loaded codec on one device, coding batches of equal-size pictures.

    For the scale hyperprior the transforms run batched on `device` and the range coding on the
    CPU, in this process or in `pool`'s processes."""

    def __init__(self, spec: CodecSpec, model: nn.Module, device: torch.device, pool: CoderPool | None = None) -> None:
        self.spec = spec
        self.split = split_coding(model)
        # autoregressive coding loops on the CPU; running its convolutions on a GPU only adds copies
        self.device = torch.device("cpu") if spec.entry.autoregressive else device
        self.coder = HyperpriorCoder(model) if self.split else None
        self.pool = pool if self.split else None
        self.model = model.to(self.device).eval()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    @property
    def device_type(self) -> str:
        return self.device.type

    @torch.inference_mode()
    def scale_indexes(self, z_symbols: np.ndarray) -> np.ndarray:
        """The Gaussian conditional's CDF index of every y element, from the z symbols.

        Encoder and decoder must agree on every index, but the hyper-decoder's floating-point scales
        can differ in the last bit with the batch composition or even the input's memory layout
        (seen on CPU; one flipped index derails the range decoder for the rest of the picture).
        So both sides compute them here, one picture at a time from a contiguous NCHW tensor."""
        m = self.model
        medians = m.entropy_bottleneck._get_medians()
        out = []
        for z in z_symbols:
            z_hat = torch.from_numpy(np.ascontiguousarray(z[None], dtype=np.float32)).to(self.device) + medians
            out.append(m.gaussian_conditional.build_indexes(m.h_s(z_hat)).int().cpu().numpy())
        return np.concatenate(out)

    @torch.inference_mode()
    def encode(self, pictures: list[np.ndarray]) -> list[Encoded]:
        """Encodes pictures (sides multiples of 64) to bitstreams, with the fast-path y_hat for the
        scale hyperprior.

        Other codecs call compress() one picture at a time: their decoder recomputes the
        hyper-decoder's means and scales, which must not depend on the batch (see scale_indexes)."""
        x = to_tensor(pictures, self.device)
        m = self.model
        if not self.split:
            out = []
            for i in range(len(pictures)):
                coded = m.compress(x[i : i + 1])
                out.append(Encoded([s[0] for s in coded["strings"]], tuple(coded["shape"]), None))
            return out
        y = m.g_a(x)
        z = m.h_a(torch.abs(y))
        zs = torch.round(z - m.entropy_bottleneck._get_medians()).int().cpu().numpy()
        y_symbols = torch.round(y)
        ys = y_symbols.int().cpu().numpy()
        strings = (self.pool or self.coder).encode(ys, self.scale_indexes(zs), zs)
        y_hat = y_symbols.cpu().numpy()  # the fast path: exactly what entropy decoding returns
        shape = tuple(z.shape[-2:])
        return [Encoded(strings[i], shape, y_hat[i]) for i in range(len(pictures))]

    @torch.inference_mode()
    def entropy_decode(self, streams: list[tuple[list[bytes], tuple[int, int]]]) -> np.ndarray:
        """Recovers y_hat (N, M, H, W) from bitstreams sharing one grid shape.

        Codecs other than the scale hyperprior decode through CompressAI's decompress(), one picture
        at a time as they were encoded; y_hat is what it would feed g_s, which is then skipped."""
        shape = streams[0][1]
        if any(s[1] != shape for s in streams):
            raise ValueError("entropy_decode needs bitstreams of one picture size per batch")
        m = self.model
        if self.split:
            y_strings = [s[0][0] for s in streams]
            z_symbols = self.coder.decode_z([s[0][1] for s in streams], shape, m.entropy_bottleneck.channels)
            return (self.pool or self.coder).decode_y(y_strings, self.scale_indexes(z_symbols)).astype(np.float32)
        out = []
        hook = m.g_s.register_forward_pre_hook(_stop_at_synthesis)
        try:
            for strings, _ in streams:
                try:
                    m.decompress([[s] for s in strings], shape)
                except _YHat as stop:
                    out.append(stop.y_hat.cpu().numpy())
                else:
                    raise RuntimeError(f"{self.spec.label}: decompress() never reached g_s")
        finally:
            hook.remove()
        return np.concatenate(out)

    @torch.inference_mode()
    def reconstruct(self, y_hat: np.ndarray) -> list[np.ndarray]:
        """Synthesis transform: y_hat (N, M, H, W) to RGB uint8 pictures."""
        x_hat = self.model.g_s(torch.from_numpy(np.ascontiguousarray(y_hat)).float().to(self.device))
        return to_pictures(x_hat)


def pad_face(face: np.ndarray) -> np.ndarray:
    """The 224x224 face zero-padded to the 256x256 picture the codec encodes (16 px a side)."""
    if face.shape[:2] != (FACE_SIZE, FACE_SIZE):
        raise ValueError(f"faces must be {FACE_SIZE}x{FACE_SIZE}, got {face.shape[1]}x{face.shape[0]}")
    off = (CODED_SIZE - FACE_SIZE) // 2
    out = np.zeros((CODED_SIZE, CODED_SIZE, 3), dtype=np.uint8)
    out[off : off + FACE_SIZE, off : off + FACE_SIZE] = face
    return out


def unpad_face(picture: np.ndarray) -> np.ndarray:
    off = (CODED_SIZE - FACE_SIZE) // 2
    return np.ascontiguousarray(picture[off : off + FACE_SIZE, off : off + FACE_SIZE])


def latent_dtype(spec: CodecSpec) -> np.dtype:
    return np.dtype(np.int16) if spec.entry.integer_latent else np.dtype(np.float32)


def store_latent(y_hat: np.ndarray, spec: CodecSpec) -> np.ndarray:
    """Casts y_hat to its storage dtype, refusing a lossy cast (an integer codec's latent that is
    not integer valued or exceeds int16 means a bug, not a rounding choice)."""
    dtype = latent_dtype(spec)
    out = y_hat.astype(dtype)
    if dtype.kind == "i" and not np.array_equal(out.astype(y_hat.dtype), y_hat):
        raise ValueError(f"{spec.label}: latent is not int16-representable (max |y| {np.abs(y_hat).max()})")
    return out


def crop_latent(y_hat: np.ndarray, size: int | None = 14) -> tuple[np.ndarray, list[int]]:
    """Centre crop (M, H, W) to (M, size, size); size None keeps the full grid. Returns the crop and
    [top, left, h, w]."""
    _, h, w = y_hat.shape
    if size is None:
        return y_hat, [0, 0, h, w]
    if size > min(h, w):
        raise ValueError(f"cannot crop a {h}x{w} latent to {size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(y_hat[:, top : top + size, left : left + size]), [top, left, size, size]
