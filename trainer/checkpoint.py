"""Training checkpoints: everything needed to continue a run exactly where it stopped, in a file
that loads without running code.

A checkpoint holds the model, optimiser, scheduler, ArcFace head, phase, epoch, step, every RNG
the run draws from (python, numpy, torch CPU/CUDA and the augmentation generator) and the full
config; the data stream is a function of (seed, epoch, step), so nothing else is needed to
resume bit-for-bit on the same hardware. Everything in it is a tensor, a number, a string or a
container of those, so `torch.load(weights_only=True)` reads it: a checkpoint someone hands you
cannot execute code (numpy's RNG state, a tuple holding an array, is stored as a tensor).
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from cdfv.safe_load import load_torch_file
from cdfv.shards import ShardSet
from cdfv.shards.writer import atomic_write_bytes

FORMAT = "cdfv-train-checkpoint"
# options a resumed run may change without changing what it computes
FREE_ON_RESUME = frozenset({"resume", "progress", "max_steps", "log_every", "device", "allow_change", "tensorboard"})


def rng_state(aug: torch.Generator) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": aug.get_state(),
    }


def restore_rng(state: dict[str, Any], aug: torch.Generator) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    aug.set_state(state["augment"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Writes atomically, so a run killed while saving keeps its previous checkpoint."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_checkpoint(path: Path, required: Iterable[str] = ()) -> dict[str, Any]:
    """Reads a checkpoint without executing anything in it; refuses files that are not cdfv
    training checkpoints or lack `required` entries, with a message naming the file."""
    state = load_torch_file(path, "cdfv training checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cdfv training checkpoint (format={state.get('format') if isinstance(state, dict) else None!r})")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {', '.join(missing)}; it was not written by this kind of training")
    return state


def data_identity(*sets: ShardSet | None) -> str:
    """The shard sets a run reads, by name and content digest (`ShardSet.identity`): a resume
    compares it with the checkpoint's, so a set rebuilt or replaced under the same path is caught."""
    return ", ".join(f"{s.name}@{s.identity}" for s in sets if s is not None)


def check_resume_config(path: Path, saved: dict[str, Any], now: dict[str, Any], allowed: Iterable[str]) -> dict[str, list]:
    """Refuses to resume with options that change the run, unless named in `allowed`; returns
    the allowed changes {option: [saved, now]} for the record. `now` and `saved` carry the run's
    `data` (data_identity) beside its options, so another shard set is refused like another option."""
    allowed = set(allowed)
    unknown = allowed - set(now)
    if unknown:
        raise ValueError(f"--allow-change {','.join(sorted(unknown))}: no such option (options: {', '.join(sorted(now))})")
    changed = {k: [saved.get(k), v] for k, v in now.items() if k not in FREE_ON_RESUME and saved.get(k) != v}
    refused = {k: v for k, v in changed.items() if k not in allowed}
    if refused:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(refused.items()))
        raise ValueError(f"--resume {path}: the run was started with other options ({listed}); resume with the same "
                         f"options, or name those that may change: --allow-change {','.join(sorted(refused))}")
    return changed
