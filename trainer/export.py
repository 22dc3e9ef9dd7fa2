"""The embedding-model file that cdfv-train writes and cdfv-eval reads.

One torch file: {"format": "cdfv-model", "version": 1, "arch", "arch_kwargs", "state_dict",
"info"}. The model it rebuilds maps RAW inputs to embeddings (latents as stored in latent.npy,
images as float32 RGB 0..255): normalisation lives inside the network, so the evaluator never
needs to know how the trainer scaled its inputs.
"""
from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdfv.provenance import provenance
from cdfv.safe_load import load_torch_file
from cdfv.shards.writer import atomic_write_bytes

from .archs import INPUT_KIND, INPUT_SIZE, TRANSPLANTS
from .models import arch_kwargs, build_model
from .transplant import TransplantStudent, build_transplant

FORMAT = "cdfv-model"
VERSION = 1
REQUIRED_INFO = (
    "arch", "input_kind", "in_channels", "input_size", "embedding_dim", "untrained", "model_id", "train_shards",
)


def model_kwargs(model: nn.Module) -> dict[str, Any]:
    """The keyword arguments that rebuild `model` (build_model's, or build_transplant's)."""
    return dict(model.kwargs) if isinstance(model, TransplantStudent) else arch_kwargs(model)


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A short content hash of the weights: the model id that results are filed under."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def embedding_info(
    model: nn.Module, arch: str, *, untrained: bool, train_shards: dict[str, Any] | None, **extra: Any
) -> dict[str, Any]:
    """The info block for an embedding model; extra keys (recipe, epochs, ...) are kept."""
    kwargs = model_kwargs(model)
    tag = "untrained-" if untrained else ""
    return {
        "arch": arch,
        "input_kind": INPUT_KIND[arch],
        "in_channels": kwargs["in_channels"],
        "input_size": INPUT_SIZE[arch],
        "embedding_dim": model.fc.out_features,
        "width": kwargs.get("width"),
        "untrained": bool(untrained),
        "model_id": f"{arch}-{tag}{state_digest(model.state_dict())}",
        "train_shards": train_shards,
        **extra,
    }


def save_embedding_model(path: str | Path, model: nn.Module, info: dict[str, Any]) -> None:
    """Writes the model (with its embedding head), its info and the software and machine that
    made it (cdfv.provenance) atomically."""
    missing = [k for k in REQUIRED_INFO if k not in info]
    if missing:
        raise ValueError(f"embedding-model info lacks {missing}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "arch": info["arch"],
        "arch_kwargs": model_kwargs(model),
        "state_dict": state,
        "info": dict(info),
        "provenance": provenance(),
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_embedding_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds a saved embedding model in eval mode on `device`; returns (model, info)."""
    path = Path(path)
    blob = load_torch_file(path, f"{FORMAT} file")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: not a {FORMAT} file (format={found!r}); cdfv-train writes these")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: {FORMAT} version {blob.get('version')}, this cdfv reads {VERSION}")
    missing = [k for k in ("arch", "arch_kwargs", "state_dict", "info") if k not in blob]
    if missing:
        raise ValueError(f"{path}: {FORMAT} file lacks {', '.join(missing)}")
    junction = (blob["arch_kwargs"] or {}).get("junction")
    if blob["arch"] in TRANSPLANTS and junction != TRANSPLANTS[blob["arch"]]:
        raise ValueError(f"{path}: a {blob['arch']} whose adapter joins at {junction!r}")
    try:
        build = build_transplant if blob["arch"] in TRANSPLANTS else functools.partial(build_model, blob["arch"])
        model = build(**blob["arch_kwargs"])
        model.load_state_dict(blob["state_dict"])
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"{path}: its weights do not fit its {blob['arch']} ({str(e).splitlines()[0]})") from e
    return model.to(device).eval(), blob["info"]


def export_untrained(
    path: str | Path,
    arch: str,
    *,
    in_channels: int | None = None,
    width: int = 64,
    embedding_dim: int = 2048,
    seed: int = 0,
) -> dict[str, Any]:
    """Saves a randomly initialised embedding model (for tests and demos, marked untrained)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, in_channels=in_channels, embedding_dim=embedding_dim, width=width)
    info = embedding_info(model, arch, untrained=True, train_shards=None, seed=seed)
    save_embedding_model(path, model, info)
    return info
