"""Learned codecs by zoo name: a table of what each one is, and loading of its weights.

Kept apart from the coding loop as CompressAI keeps its zoo apart from its models: the table says
which CompressAI architecture, qualities and latent channels a name means; loading says where the
weights come from (the CompressAI zoo cache, a local file, or an explicit untrained model) and
gives every result a weights id that goes into each output's metadata.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the table is read without torch (the command line's choices); loading imports it
    import torch
    from torch import nn

METRICS = ("mse", "ms-ssim")
VARIANT = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # a trained variant's name: lower-case words joined by '-'

FORMAT = "cdfv-codec"  # save_codec's file format tag


@dataclass(frozen=True)
class ZooEntry:
    qualities: tuple[int, ...]
    integer_latent: bool  # y_hat = round(y) (no mean or median added back): stored as int16
    autoregressive: bool  # entropy coding is a sequential per-position loop (CPU only)


# CompressAI's pretrained zoo (compressai.zoo.image.model_urls). y_hat is integer valued for the scale
# hyperprior alone: the factorized prior codes round(y - median) + median with a learned median per
# channel, the mean-scale models round(y - mu) + mu with mu predicted per element.
ZOO: dict[str, ZooEntry] = {
    "bmshj2018-factorized": ZooEntry(tuple(range(1, 9)), integer_latent=False, autoregressive=False),
    "bmshj2018-hyperprior": ZooEntry(tuple(range(1, 9)), integer_latent=True, autoregressive=False),
    "mbt2018-mean": ZooEntry(tuple(range(1, 9)), integer_latent=False, autoregressive=False),
    "mbt2018": ZooEntry(tuple(range(1, 9)), integer_latent=False, autoregressive=True),
    "cheng2020-anchor": ZooEntry(tuple(range(1, 7)), integer_latent=False, autoregressive=True),
    "cheng2020-attn": ZooEntry(tuple(range(1, 7)), integer_latent=False, autoregressive=True),
}


class WeightsUnavailable(ValueError):
    """The requested pretrained weights are not on this machine: a user's input to supply, so every
    command reports it as it does its other bad inputs (the message says how)."""


@dataclass(frozen=True)
class CodecSpec:
    """A codec by zoo name, quality and distortion metric; `variant` names one trained here beyond
    rate and distortion (cdfv-train --task codec: "id" with the identity term, "joint" with a
    student), so its sets, runs and plot lines never merge with the plain codec's. Its weights file
    records the variant, which `with_variant` reads back."""

    name: str
    quality: int
    metric: str = "mse"
    variant: str = ""

    def __post_init__(self) -> None:
        if self.name not in ZOO:
            raise ValueError(f"unknown codec {self.name!r} (CompressAI's pretrained zoo): known: {', '.join(ZOO)}")
        if self.quality not in ZOO[self.name].qualities:
            q = ZOO[self.name].qualities
            raise ValueError(f"{self.name} has qualities {q[0]}..{q[-1]}, not {self.quality}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {self.metric!r}")
        if self.variant and not VARIANT.fullmatch(self.variant):
            raise ValueError(f"codec variant {self.variant!r}: lower-case letters and digits, words joined by '-'")

    @property
    def entry(self) -> ZooEntry:
        return ZOO[self.name]

    @property
    def config(self) -> tuple[int, ...]:
        """The architecture's (N, M) or (N,) at this quality, as CompressAI's zoo builds it."""
        from compressai.zoo.image import cfgs

        return tuple(cfgs[self.name][self.quality])

    @property
    def latent_channels(self) -> int:
        """M, the channels of y. CompressAI's zoo configs are (N, M) for bmshj2018 and mbt2018 and (N,)
        with M = N for cheng2020, so M is the last entry either way (README: Supported codecs)."""
        from compressai.zoo.image import cfgs

        return cfgs[self.name][self.quality][-1]

    @property
    def url(self) -> str:
        from compressai.zoo.image import model_urls

        return model_urls[self.name][self.metric][self.quality]

    @property
    def cache_path(self) -> Path:
        """Where torch.hub (CompressAI's zoo loader) keeps the downloaded file."""
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints" / self.url.rsplit("/", 1)[1]

    @property
    def family(self) -> str:
        """The codec without its quality: name, metric and variant, as run names and plot lines show it."""
        return f"{self.name}-{self.metric}" + (f"-{self.variant}" if self.variant else "")

    @property
    def label(self) -> str:
        return f"{self.family}-q{self.quality}"

    def record(self, weights_id: str, untrained: bool) -> dict[str, Any]:
        """The codec as a set of its latents records it (meta.codec) and a model trained on them
        keeps it: cdfv-eval scores a latent model only on latents whose record matches its own."""
        return {"name": self.name, "quality": self.quality, "metric": self.metric, "weights": weights_id,
                "untrained": untrained, **({"variant": self.variant} if self.variant else {})}


def _build(spec: CodecSpec, state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
    from compressai.zoo.image import cfgs, model_architectures
    from compressai.zoo.pretrained import load_pretrained

    cls = model_architectures[spec.name]
    if state_dict is None:
        return cls(*cfgs[spec.name][spec.quality])
    return cls.from_state_dict(load_pretrained(state_dict))


def weights_file_id(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"file:{path.name}:sha256-{digest}"


def _read_weights(path: Path, spec: CodecSpec, any_quality: bool = False) -> dict[str, torch.Tensor]:
    """Reads a CompressAI checkpoint, a bare state_dict, or a save_codec file; checks its codec
    (with any_quality, a codec of another quality of the same architecture passes: a start for
    training that quality)."""
    import torch

    from cdfv.safe_load import load_torch_file

    obj = load_torch_file(path, "PyTorch weights file")
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        saved = (obj["name"], obj["quality"])
        same_shape = any_quality and saved[0] == spec.name and saved[1] in spec.entry.qualities and \
            CodecSpec(saved[0], saved[1]).config == spec.config
        if saved != (spec.name, spec.quality) and not same_shape:
            raise ValueError(f"--weights {path}: holds {saved[0]} q{saved[1]}, asked for {spec.name} q{spec.quality}")
        return obj["state_dict"]
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError(f"--weights {path}: no state_dict inside")


def load_codec(
    spec: CodecSpec,
    weights: Path | None = None,
    untrained: bool = False,
    download: bool = False,
    seed: int = 0,
    any_quality: bool = False,
    flags: tuple[str, str] = ("--weights", "--untrained"),
) -> tuple[nn.Module, str]:
    """Returns (codec in eval mode with entropy tables built, weights id).

    Order: --weights FILE, else --untrained (random init from `seed`, so the encoding and the
    entropy-decoding process build identical models), else the CompressAI zoo cache; the zoo
    downloads only when `download` is set. Never falls back to random weights on its own; `flags`
    are the calling command's names for a weights file and for random weights, which the message
    for missing weights tells the user to pass."""
    import torch

    if weights is not None and untrained:
        raise ValueError("--weights and --untrained exclude each other")
    if weights is not None:
        model, weights_id = _build(spec, _read_weights(Path(weights), spec, any_quality)), weights_file_id(Path(weights))
        if model.M != spec.latent_channels:  # latents of another width would reach models built for M
            raise ValueError(f"--weights {weights}: a codec with M = {model.M} latent channels, "
                             f"but {spec.name} q{spec.quality} has M = {spec.latent_channels}")
    elif untrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _build(spec, None)
        weights_id = f"untrained:seed{seed}"
    else:
        cached = spec.cache_path
        if not cached.is_file() and not download:
            raise WeightsUnavailable(
                f"pretrained weights for {spec.label} are not in the CompressAI cache ({cached}).\n"
                f"Supply them one of two ways:\n"
                f"  1. download {spec.url} on a machine with internet and copy it to {cached}\n"
                f"     (or run with --download where this machine has internet), or\n"
                f"  2. pass {flags[0]} FILE (a CompressAI checkpoint or a file cdfv-train saved).\n"
                f"For tests, demos and training from scratch, {flags[1]} uses random weights and records that in every output."
            )
        if cached.is_file():  # read as any user file: a damaged or planted cache file is one line naming it
            from cdfv.safe_load import load_torch_file

            try:
                state = load_torch_file(cached, "CompressAI checkpoint")
            except ValueError as e:
                raise WeightsUnavailable(f"{e}; delete it and copy the zoo's file {spec.url} there again") from None
        else:
            from torch.hub import load_state_dict_from_url

            state = load_state_dict_from_url(spec.url, progress=False, check_hash=True, weights_only=True)
        model, weights_id = _build(spec, state), f"compressai-zoo:{spec.url.rsplit('/', 1)[1]}"
    model.update(force=True)
    return model.eval(), weights_id


def save_codec(path: Path, model: nn.Module, spec: CodecSpec, training: dict | None = None) -> None:
    """Saves a (trained or fine-tuned) codec so `cdfv-prep encode --weights` loads it back, with
    its variant, how it was trained and the software and machine that made it (cdfv.provenance)."""
    import io

    import torch

    from cdfv.provenance import provenance
    from cdfv.shards.writer import atomic_write_bytes

    model.update(force=True)
    buf = io.BytesIO()
    torch.save(
        {"format": FORMAT, "name": spec.name, "quality": spec.quality, "metric": spec.metric, "variant": spec.variant,
         "training": training, "state_dict": model.state_dict(), "provenance": provenance()},
        buf,
    )
    atomic_write_bytes(Path(path), buf.getvalue())


def with_variant(spec: CodecSpec, weights: Path | None) -> CodecSpec:
    """The spec with the variant its weights file records (a save_codec file's; none for others)."""
    from dataclasses import replace

    from cdfv.safe_load import load_torch_file

    if weights is None:
        return spec
    obj = load_torch_file(Path(weights), "PyTorch weights file")
    variant = obj.get("variant") if isinstance(obj, dict) and obj.get("format") == FORMAT else None
    return replace(spec, variant=variant or "")


def codec_model(spec: CodecSpec, weights: Path | None, untrained: bool, seed: int) -> nn.Module:
    """load_codec's model alone: a picklable way for worker processes to build the same codec."""
    return load_codec(spec, weights=weights, untrained=untrained, seed=seed)[0]
