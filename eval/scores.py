"""Cosine scores of a pair list, one Parquet row per pair, nothing dropped silently.

A pair whose probe or reference has no sample (the image is absent, or the pipeline found no face
and wrote a reject) is handled by an explicit policy, and every such row stays in the file with
`missing` set and the reason:

- error (default): stop, naming how many pairs and the first keys;
- skip: keep the row with a NaN score; metrics leave it out and report the count;
- min-score: score -1 (the lowest cosine), the convention of counting a failure to process as a
  non-match: a missing genuine pair is a false reject, a missing impostor a correct reject;
- worst-score: the pessimistic bound: genuine -1 (false reject), impostor +1 (false accept).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cdfv.provenance import provenance
from cdfv.shards import atomic_write_bytes

from .protocol import Pair

if TYPE_CHECKING:  # embedding loads the face models (torch): the command line reads POLICIES without it
    from .embed import EmbeddedSet

POLICIES = ("error", "skip", "min-score", "worst-score")
MODES = ("original", "decoded", "compressed")
RUN_META_KEY = b"cdfv.eval"

SCHEMA = pa.schema([
    ("pair", pa.int32()),
    ("fold", pa.int16()),
    ("probe_key", pa.string()),
    ("reference_key", pa.string()),
    ("label", pa.bool_()),
    ("score", pa.float64()),
    ("missing", pa.bool_()),
    ("missing_reason", pa.string()),
    ("probe_bpp", pa.float64()),
    ("probe_psnr", pa.float64()),
    ("probe_ms_ssim", pa.float64()),
    ("mode", pa.string()),
    ("codec", pa.string()),
    ("quality", pa.float64()),
    ("model_id", pa.string()),
    ("arch", pa.string()),
    ("run", pa.string()),
])


class MissingPairs(RuntimeError):
    """Pairs whose faces are absent under --missing error."""


@dataclass(frozen=True)
class RunInfo:
    """What one scores file is: which solution, on which inputs."""

    mode: str
    codec: str | None
    quality: float | None
    model_id: str
    arch: str
    run: str  # display name, e.g. resnet50_bmshj2018-hyperprior-mse_q6


def _policy_score(policy: str, label: bool) -> float:
    if policy == "skip":
        return math.nan
    if policy == "min-score":
        return -1.0
    return -1.0 if label else 1.0


def _probe_fields(meta: dict[str, Any] | None) -> tuple[float, float, float]:
    """(bpp, psnr, ms_ssim) of a probe sample, NaN where the sample has none (original faces)."""
    meta = meta or {}
    rate, quality = meta.get("rate") or {}, meta.get("quality") or {}
    return (float(rate.get("bpp", math.nan)), float(quality.get("psnr", math.nan)),
            float(quality.get("ms_ssim", math.nan)))


def score_pairs(
    pairs: list[Pair],
    probes: EmbeddedSet,
    references: EmbeddedSet,
    run: RunInfo,
    policy: str = "error",
    reasons: dict[str, str] | None = None,
) -> pa.Table:
    """One row per pair: cosine of the two (normalised) embeddings, or the policy's score."""
    if policy not in POLICIES:
        raise ValueError(f"--missing must be one of {POLICIES}, not {policy!r}")
    reasons = reasons or {}
    rows: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    absent: list[str] = []
    for p in pairs:
        lacking = [(k, s) for k, s in ((p.probe, probes), (p.reference, references)) if k not in s.embeddings]
        reason = "; ".join(f"{k}: {reasons.get(k, f'not in shard set {s.name!r}')}" for k, s in lacking) or None
        if lacking:
            absent.append(reason)
            score = _policy_score(policy, p.label)
        else:
            score = float(np.dot(probes.embeddings[p.probe], references.embeddings[p.reference]))
        bpp, psnr, ms_ssim = _probe_fields(probes.meta.get(p.probe))
        values = {"pair": p.index, "fold": p.fold, "probe_key": p.probe, "reference_key": p.reference,
                  "label": p.label, "score": score, "missing": bool(lacking), "missing_reason": reason,
                  "probe_bpp": bpp, "probe_psnr": psnr, "probe_ms_ssim": ms_ssim, **asdict(run)}
        for name in SCHEMA.names:
            rows[name].append(values[name])
    if absent and policy == "error":
        raise MissingPairs(
            f"{len(absent)} of {len(pairs)} pairs lack a face, first: {absent[0]}. "
            f"Choose --missing skip|min-score|worst-score to score them anyway (the count is reported)."
        )
    return pa.Table.from_pydict(rows, schema=SCHEMA)


def scores_bytes(table: pa.Table, run_meta: dict[str, Any]) -> bytes:
    """The scores file's bytes: the table with the run's provenance (pairs file, policy, counts, and
    the software and machine that scored it: cdfv.provenance) in its key-value metadata under 'cdfv.eval'."""
    run_meta = {**run_meta, "provenance": provenance()}
    table = table.replace_schema_metadata({RUN_META_KEY: json.dumps(run_meta, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_scores(path: Path, table: pa.Table, run_meta: dict[str, Any]) -> None:
    """Writes one scores file atomically (cdfv-eval run puts its files in together: cdfv.atomic.atomic_files)."""
    atomic_write_bytes(path, scores_bytes(table, run_meta))


def read_scores(path: Path) -> tuple[pa.Table, dict[str, Any]]:
    """Reads a scores file and its run metadata; rejects files without the expected columns."""
    table = pq.read_table(path)
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a cdfv-eval scores file (missing columns {', '.join(missing)})")
    meta = table.schema.metadata or {}
    return table, json.loads(meta.get(RUN_META_KEY, b"{}"))


def rejected_reasons(directory: Path) -> dict[str, str]:
    """Why the pipeline made no sample for a key, from the set's rejects-*.parquet files."""
    reasons: dict[str, str] = {}
    for path in sorted(Path(directory).glob("rejects-*.parquet")):
        table = pq.read_table(path, columns=["key", "stage", "reason"])
        for key, stage, reason in zip(*(table.column(c).to_pylist() for c in ("key", "stage", "reason"))):
            reasons[key] = f"rejected at {stage}: {reason}"
    return reasons
