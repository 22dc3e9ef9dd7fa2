"""One solution on one pair list: which shard sets feed the probe and the reference per mode (thesis
5.2, 5.3, 6.2), embeddings shared between runs, and the scores table."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from cdfv.shards import Damage, ShardSet

from .embed import EmbeddedSet, embed_keys
from .facemodels import FaceModel, latents_label, same_latents, trained_latents
from .protocol import Pair
from .runs import codec_setting
from .scores import MODES, RunInfo, rejected_reasons, score_pairs

# What each mode compares: (probe variant, reference variant) as shard-set meta 'variant' says.
MODE_VARIANTS = {
    "original": ("original", "original"),  # both faces original (ATC)
    "decoded": ("decoded", "original"),  # probe decoded, reference original (CTA)
    "compressed": ("latent", "latent"),  # both faces as entropy-decoded latents
}


@dataclass
class _Cached:
    requested: set[str]
    embedded: EmbeddedSet


@dataclass
class EmbeddingCache:
    """Embeddings keyed by (model id, shard set directory), so the original faces that serve as
    references for the original anchor and every decoded anchor are embedded once."""

    sets: dict[tuple[str, str], _Cached] = field(default_factory=dict)
    damage_policy: str = "error"  # a damaged shard stops the run, or (skip) its pairs are missing with the reason

    def get(self, embedder: FaceModel, shard_set: ShardSet, keys: set[str], batch_size: int) -> EmbeddedSet:
        slot = (embedder.info["model_id"], str(shard_set.directory.resolve()))
        cached = self.sets.get(slot)
        if cached is None or not keys <= cached.requested:
            wanted = keys | (cached.requested if cached else set())
            embedded = embed_keys(embedder, shard_set, wanted, batch_size, Damage(self.damage_policy))
            cached = self.sets[slot] = _Cached(wanted, embedded)
        return cached.embedded


def codec_fields(shard_set: ShardSet) -> tuple[str | None, float | None]:
    """(codec label, quality) from a set's meta: name-metric and quality for learned codecs,
    name-parameter and value for conventional ones; (None, None) for original faces."""
    codec = shard_set.meta.get("codec")
    if not codec:
        return None, None
    if "quality" in codec:
        label = f"{codec['name']}-{codec['metric']}" if codec.get("metric") else codec["name"]
        label += f"-{codec['variant']}" if codec.get("variant") else ""
        return label, float(codec["quality"])
    return f"{codec['name']}-{codec['parameter']}", float(codec["value"])


def run_name(arch: str, mode: str, codec: str | None, quality: float | None) -> str:
    """Display name in the thesis's style: resnet50_original, resnet50_<codec>_q6, cresnet39_<codec>_q6;
    a conventional codec by its parameter: resnet50_jpeg2000_ratio12.2784."""
    if mode == "original" or codec is None:
        return f"{arch}_original"
    if quality is None:
        return f"{arch}_{codec}_q?"
    return "_".join((arch, *codec_setting(codec, quality)))


def check_variant(mode: str, probe_set: ShardSet, reference_set: ShardSet) -> None:
    """Refuses a mode fed with the wrong kind of faces (e.g. decoded faces as references)."""
    want_probe, want_reference = MODE_VARIANTS[mode]
    for role, shard_set, want in (("probe", probe_set, want_probe), ("reference", reference_set, want_reference)):
        got = shard_set.meta.get("variant")
        if got != want:
            raise ValueError(f"{mode} mode needs {want} {role} faces; shard set {shard_set.name!r} is {got!r}")


def latent_mismatch(model_name: str, info: dict[str, Any], shard_set: ShardSet, allow: bool = False) -> str | None:
    """Refuses a latent model on latents other than those it was trained on (another codec, metric,
    quality or codec weights: its scores would read as that set's without a word), naming both;
    with `allow` (--allow-latent-mismatch) returns what differs, for the scores file and report to
    say. None when they agree or the model records no training latents (an untrained export)."""
    trained = trained_latents(info)
    if not trained or same_latents(trained, shard_set.meta.get("codec")):
        return None
    said = (f"{model_name} was trained on {latents_label(trained)}, but shard set {shard_set.name!r} holds "
            f"{latents_label(shard_set.meta.get('codec'))}")
    if not allow:
        raise ValueError(f"{said}; score it on latents of its own codec, quality and weights, or give "
                         f"--allow-latent-mismatch to score it anyway (the report marks the run)")
    return said


def evaluate(
    pairs: list[Pair],
    mode: str,
    embedder: FaceModel,
    probe_set: ShardSet,
    reference_set: ShardSet,
    policy: str = "error",
    batch_size: int = 128,
    cache: EmbeddingCache | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Scores every pair for one solution; returns the table and its run metadata."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    check_variant(mode, probe_set, reference_set)
    cache = cache or EmbeddingCache()
    probe_keys = {p.probe for p in pairs}
    reference_keys = {p.reference for p in pairs}
    same_set = probe_set.directory.resolve() == reference_set.directory.resolve()
    if same_set:
        probes = references = cache.get(embedder, probe_set, probe_keys | reference_keys, batch_size)
    else:
        probes = cache.get(embedder, probe_set, probe_keys, batch_size)
        references = cache.get(embedder, reference_set, reference_keys, batch_size)
    codec, quality = codec_fields(probe_set)
    info = embedder.info
    run = RunInfo(mode, codec, quality, info["model_id"], info["arch"], run_name(info["arch"], mode, codec, quality))
    reasons = {**rejected_reasons(reference_set.directory), **rejected_reasons(probe_set.directory),
               **references.damaged, **probes.damaged}
    table = score_pairs(pairs, probes, references, run, policy, reasons)
    missing = table.column("missing").to_pylist()
    run_meta = {
        "run": run.run,
        "mode": mode,
        "probe_set": probe_set.name,
        "reference_set": reference_set.name,
        "model": {k: info.get(k) for k in ("model_id", "arch", "input_kind", "embedding_dim", "untrained", "weights",
                                           "train_shards", "preprocessing")},
        "untrained_codec": bool(probe_set.meta.get("untrained")),
        "missing_policy": policy,
        "pairs": len(pairs),
        "missing_pairs": int(sum(missing)),
        "flip": embedder.flip,
        "precision": embedder.precision,
        "embedded_images": len(set(probes.embeddings) | set(references.embeddings)),
    }
    return table, run_meta
