"""Scores files as a report sees them: one Run per file with its metrics row, runs in natural
order (q9 before q78), grouped into plot lines, and each codec's rate-distortion points."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cdfv import progress
from cdfv.provenance import provenance

from .metrics import summarize
from .scores import read_scores


MISMATCH_MARK = "(other latents than trained on)"  # beside a run scored with --allow-latent-mismatch, wherever it is named


@dataclass
class Run:
    """One scores file, loaded: the pair columns as arrays, and its metrics row."""

    name: str
    mode: str
    labels: np.ndarray
    scores: np.ndarray
    row: dict[str, Any]
    meta: dict[str, Any]  # the scores file's run metadata (pairs file, probe set, models)


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key reading digit runs as numbers, so q9 sorts before q78 and qp12 before qp24."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text))


def codec_setting(codec: str, value: float) -> tuple[str, str]:
    """(codec, setting) as run names and titles show a coded run: a conventional codec's label
    (name-parameter, as evaluate.codec_fields makes it) as its name and its own parameter (jpeg2000, ratio12.2784;
    jpeg, quality5; hevc-intra, qp35), not as a quality; a learned codec's label and quality (q6)."""
    from cdfv.pipeline.conventional import CODECS

    for conventional in CODECS.values():
        if codec == f"{conventional.name}-{conventional.parameter}":
            return conventional.name, f"{conventional.parameter}{value:g}"
    return codec, f"q{value:g}"


def _per_probe(table: pa.Table, column: str) -> list[float]:
    """The finite values of a column over the distinct probe images of the pairs (thesis 5.9.3:
    the rate of the probe images used in the test pairs; a probe in two pairs counts once)."""
    values = dict(zip(table.column("probe_key").to_pylist(), table.column(column).to_pylist()))
    return [v for v in values.values() if v is not None and math.isfinite(v)]


def _mean_per_probe(table: pa.Table, column: str) -> float:
    finite = _per_probe(table, column)
    return float(np.mean(finite)) if finite else math.nan


def pairs_label(meta: dict[str, Any]) -> str:
    """The pairs file a scores file was scored on, as figures and tables name it: its name and the
    start of its sha256 (two files of one name but other pairs never read as the same)."""
    name = Path(meta["pairs_file"]).name if meta.get("pairs_file") else "an unrecorded pairs file"
    return f"{name} (sha256 {meta['pairs_sha256'][:12]})" if meta.get("pairs_sha256") else name


def one_pairs_file(runs: list["Run"]) -> str:
    """The one pairs file all runs of a report were scored on; runs of several are refused, since
    their metrics and rates are over other pairs and faces."""
    labels: dict[str, str] = {}
    for run in runs:
        labels.setdefault(run.row["pairs_file"], run.row["source"])
    if len(labels) > 1:
        (a, first), (b, second) = list(labels.items())[:2]
        raise ValueError(f"{second}: scored on {b}, but {first} on {a}; a report covers one pairs file "
                         f"(report each pairs file into its own --out)")
    return next(iter(labels))


def other_pairs_scores(folder: Path, pairs_sha256: str, replaced: set[str]) -> list[str]:
    """The scores files in `folder` (an earlier cdfv-eval run's) that a run on the pairs file of
    `pairs_sha256` would leave in place (not among the file names it `replaced`) though they were
    scored on another pairs file, each as 'NAME on PAIRS': the folder would then hold two pairs
    files' scores beside a report of one."""
    if not folder.is_dir():
        return []
    other = []
    for path in sorted(folder.glob("*.parquet")):
        if path.name not in replaced:
            meta = read_scores(path)[1]
            if meta.get("pairs_sha256") != pairs_sha256:
                other.append(f"{path.name} on {pairs_label(meta)}")
    return other


def load_run(path: Path, replicates: int = 1000, seed: int = 0) -> Run:
    """Reads a scores file and computes its metrics on the scored (non-NaN) pairs."""
    table, meta = read_scores(path)
    scores = np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    labels = np.asarray(table.column("label").to_pylist(), dtype=bool)
    folds = np.asarray(table.column("fold").to_numpy(zero_copy_only=False))
    kept = ~np.isnan(scores)
    first = {name: table.column(name)[0].as_py() for name in ("run", "mode", "arch", "codec", "quality", "model_id")}
    row: dict[str, Any] = {
        **first,
        "pairs_file": pairs_label(meta),
        "pairs": table.num_rows,
        "missing": int(sum(table.column("missing").to_pylist())),
        "scored": int(kept.sum()),
        "bpp": _mean_per_probe(table, "probe_bpp"),
        "psnr": _mean_per_probe(table, "probe_psnr"),
        "ms_ssim": _mean_per_probe(table, "probe_ms_ssim"),
        "probe_faces": len(_per_probe(table, "probe_bpp")),
        **summarize(labels[kept], scores[kept], folds[kept], replicates, seed),
        "source": str(path),
        "untrained": bool((meta.get("model") or {}).get("untrained")) or bool(meta.get("untrained_codec")),
        "latent_mismatch": meta.get("latent_mismatch") or "",  # scored on other latents than trained on (cdfv-eval run)
        "provenance": {"scores": meta.get("provenance"), "report": provenance()},  # the software that scored, and that measured
    }
    return Run(first["run"], first["mode"], labels[kept], scores[kept], row, meta)


def distinct_files(paths: list[Path]) -> None:
    """Refuses a scores file given twice (also by another path to it): its row would be counted twice."""
    seen: dict[tuple[int, int], Path] = {}
    for path in map(Path, paths):
        st = path.stat()
        first = seen.setdefault((st.st_dev, st.st_ino), path)
        if first is not path:
            raise ValueError(f"{path}: the same scores file as {first}, given twice; a report takes each once")


def one_row_per_run(runs: list[Run]) -> None:
    """Refuses two scores files of one run name (two models or sets that name alike): the report's
    rows, plot lines and deltas are keyed by it, so one would be counted under the other's name."""
    seen: dict[str, Run] = {}
    for run in runs:
        first = seen.setdefault(run.name, run)
        if first is not run:
            raise ValueError(f"{run.row['source']}: run {run.name} again ({run.row['model_id']}), already in "
                             f"{first.row['source']} ({first.row['model_id']}); a report holds one row per run: "
                             f"report them into separate --out folders")


def load_runs(paths: list[Path], replicates: int = 1000, seed: int = 0) -> list[Run]:
    """The runs of a report in natural order of their names, whatever order the files came in, each
    file once."""
    distinct_files(paths)
    bar = progress.bar(len(paths), "metrics", unit="run", iterable=paths)
    return sorted((load_run(Path(p), replicates, seed) for p in bar), key=lambda r: natural_key(r.name))


def line_name(run: Run) -> str:
    """The plot line a coded run belongs to: its model, mode and codec, as --bd-anchor names it."""
    return f"{run.row['arch']} {run.mode} {run.row['codec']}"


def plot_lines(runs: list[Run]) -> dict[str, list[Run]]:
    """Coded runs grouped into plot lines (one model, mode and codec over its qualities), in
    natural order, each line's runs by rate."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.mode != "original":
            groups.setdefault(line_name(run), []).append(run)
    return {k: sorted(groups[k], key=lambda r: r.row["bpp"]) for k in sorted(groups, key=natural_key)}


def _qualities(runs: list[Run]) -> str:
    return ", ".join(f"{run.row['quality']:g}" for run in runs)


def rate_distortion(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """Per codec, the decoded runs' mean probe bpp, PSNR and MS-SSIM per quality, by rate, as
    CompressAI's results JSON (what `python -m compressai.utils.plot -f FILE` reads), so these
    points plot beside CompressAI's published curves. Runs of one codec and quality by several
    face models are the same probe faces and count once."""
    by_codec: dict[str, dict[float, Run]] = {}
    for run in runs:
        if run.mode != "decoded":
            continue
        points = by_codec.setdefault(run.row["codec"], {})
        seen = points.setdefault(run.row["quality"], run)
        if seen is not run and (run.row["bpp"], run.meta.get("pairs_file")) != (seen.row["bpp"], seen.meta.get("pairs_file")):
            raise ValueError(f"{run.row['source']}: {run.row['codec']} q{_qualities([run])} has other probe faces "
                             f"than {seen.row['source']} (pairs file or rates differ)")
    results = {}
    for codec in sorted(by_codec, key=natural_key):
        points = by_codec[codec]
        kept = sorted((r for r in points.values() if math.isfinite(r.row["psnr"]) and math.isfinite(r.row["ms_ssim"])),
                      key=lambda r: r.row["bpp"])
        if not kept:
            continue
        pairs_files = {str(r.meta.get("pairs_file", "an unrecorded pairs file")) for r in kept}
        if len(pairs_files) > 1:
            raise ValueError(f"{codec}: decoded runs from different pairs files ({', '.join(sorted(pairs_files))})")
        counts = sorted({r.row["probe_faces"] for r in kept})
        faces = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        recorded = [(r.row["quality"], (r.meta.get("codec") or {}).get("weights")) for r in kept]
        weights = "; ".join(f"q{q:g} {w}" for q, w in recorded) if any(w for _, w in recorded) else None
        text = (f"{codec}: decoded probe faces at quality (or codec parameter) {_qualities(kept)}, mean over the "
                f"{faces} distinct probe faces of {pairs_files.pop()}; bpp as cdfv-prep records it (coded bits per "
                f"face pixel), PSNR and MS-SSIM on RGB. Codec weights: {weights or 'not recorded in the scores files'}.")
        if any(r.meta.get("untrained_codec") for r in kept):
            text += " Untrained codec."
        left_out = [r for r in points.values() if r not in kept]
        if left_out:
            text += f" Left out (no PSNR/MS-SSIM recorded): {_qualities(left_out)}."
        results[codec] = {"name": codec, "description": text, "results": {
            "bpp": [r.row["bpp"] for r in kept], "psnr-rgb": [r.row["psnr"] for r in kept],
            "ms-ssim-rgb": [r.row["ms_ssim"] for r in kept], "quality": [r.row["quality"] for r in kept]}}
    return results
