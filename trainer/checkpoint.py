"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model, optimiser, scheduler, ArcFace head, phase, epoch, step, every RNG
the run draws from (python, numpy, torch CPU/CUDA and the augmentation generator) and the full
config; the data stream is a function of (seed, epoch, step), so nothing else is needed to
resume bit-for-bit on the same hardware.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdfv.shards.writer import atomic_write_bytes

FORMAT = "cdfv-train-checkpoint"


def rng_state(aug: torch.Generator) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": aug.get_state(),
    }


def restore_rng(state: dict[str, Any], aug: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    aug.set_state(state["augment"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes atomically, so a run killed while saving keeps its previous checkpoint."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume: no checkpoint at {path}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cdfv-train checkpoint")
    return state
