"""Range coding of the scale hyperprior's latents, in-process or spread over CPU processes.

CompressAI's entropy models convert their whole CDF table to Python lists for every picture they
code; a TableCoder converts it once and then converts only each picture's own symbols. The same
calls into CompressAI's rANS coder are made, so the bitstreams are byte-identical to
model.compress(). With workers > 0 the pictures of a batch are coded in a pool of processes,
which is how a GPU's batched transforms are kept fed (thesis-scale runs: millions of faces).
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Callable

import numpy as np
from compressai import ans
from torch import nn


class TableCoder:
    """One entropy model's quantised CDF tables, converted once."""

    def __init__(self, entropy_model: nn.Module) -> None:
        self.cdf = entropy_model._quantized_cdf.tolist()
        self.lengths = entropy_model._cdf_length.reshape(-1).int().tolist()
        self.offsets = entropy_model._offset.reshape(-1).int().tolist()
        if not self.cdf:
            raise ValueError("entropy model has no CDF tables: call model.update() first")
        self.encoder, self.decoder = ans.RansEncoder(), ans.RansDecoder()

    def encode(self, symbols: np.ndarray, indexes: np.ndarray) -> bytes:
        return self.encoder.encode_with_indexes(
            symbols.reshape(-1).tolist(), indexes.reshape(-1).tolist(), self.cdf, self.lengths, self.offsets
        )

    def decode(self, string: bytes, indexes: np.ndarray) -> np.ndarray:
        values = self.decoder.decode_with_indexes(string, indexes.reshape(-1).tolist(), self.cdf, self.lengths, self.offsets)
        return np.asarray(values, dtype=np.int32).reshape(indexes.shape)


def channel_indexes(shape: tuple[int, ...]) -> np.ndarray:
    """The factorized prior's CDF index of every element of one (C, H, W) picture: its channel."""
    c = shape[0]
    return np.broadcast_to(np.arange(c, dtype=np.int32).reshape(c, 1, 1), shape)


class HyperpriorCoder:
    """Codes (y, z) symbol arrays of a scale hyperprior: z with the factorized prior's tables,
    y with the Gaussian conditional's tables at the given indexes."""

    def __init__(self, model: nn.Module) -> None:
        self.z = TableCoder(model.entropy_bottleneck)
        self.y = TableCoder(model.gaussian_conditional)

    def encode(self, y_symbols: np.ndarray, y_indexes: np.ndarray, z_symbols: np.ndarray) -> list[list[bytes]]:
        """Per picture [y_string, z_string] (CompressAI's order)."""
        zi = channel_indexes(z_symbols.shape[1:])
        return [[self.y.encode(y, i), self.z.encode(z, zi)] for y, i, z in zip(y_symbols, y_indexes, z_symbols)]

    def decode_z(self, z_strings: list[bytes], shape: tuple[int, int], channels: int) -> np.ndarray:
        zi = channel_indexes((channels, *shape))
        return np.stack([self.z.decode(s, zi) for s in z_strings])

    def decode_y(self, y_strings: list[bytes], y_indexes: np.ndarray) -> np.ndarray:
        return np.stack([self.y.decode(s, i) for s, i in zip(y_strings, y_indexes)])


_WORKER: HyperpriorCoder | None = None


def _init_worker(load: Callable[[], nn.Module]) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    _WORKER = HyperpriorCoder(load())


def _encode_part(args: tuple[np.ndarray, np.ndarray, np.ndarray]) -> list[list[bytes]]:
    return _WORKER.encode(*args)


def _decode_y_part(args: tuple[list[bytes], np.ndarray]) -> np.ndarray:
    return _WORKER.decode_y(*args)


class CoderPool:
    """HyperpriorCoder's encode / decode_y spread over `workers` processes (spawned, so a CUDA
    parent is safe); each worker builds the codec once with `load`, which must be picklable and
    give the same weights as the parent's (load_codec is deterministic for that)."""

    def __init__(self, load: Callable[[], nn.Module], workers: int) -> None:
        self.workers = workers
        self.pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(load,))

    def _split(self, n: int) -> list[slice]:
        bounds = np.linspace(0, n, min(n, self.workers) + 1).round().astype(int)
        return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]

    def encode(self, y_symbols: np.ndarray, y_indexes: np.ndarray, z_symbols: np.ndarray) -> list[list[bytes]]:
        parts = self._split(len(y_symbols))
        results = self.pool.map(_encode_part, [(y_symbols[s], y_indexes[s], z_symbols[s]) for s in parts])
        return [strings for part in results for strings in part]

    def decode_y(self, y_strings: list[bytes], y_indexes: np.ndarray) -> np.ndarray:
        parts = self._split(len(y_strings))
        return np.concatenate(self.pool.map(_decode_y_part, [(y_strings[s], y_indexes[s]) for s in parts]))

    def close(self) -> None:
        self.pool.close()
        self.pool.join()
