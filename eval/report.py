"""Runs side by side: one metrics row per scores file (CSV, Markdown, JSON), the thesis's plots
(Figures 40/45 metrics against rate, ROC curves, Figure 41 score histograms, Figure 46 quality),
Bjontegaard deltas of each plot line against a decoded anchor, and per-codec rate-distortion
results in CompressAI's JSON format."""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from cdfv import progress  # noqa: E402
from cdfv.provenance import describe, provenance  # noqa: E402

from .bd import INTERPOLATION, MIN_POINTS, compare  # noqa: E402
from .metrics import POINT_METRICS, roc, summarize  # noqa: E402
from .scores import read_scores  # noqa: E402

METRIC_TITLES = {"tar_at_far_1e-3": "TAR@FAR=1e-3", "tar_at_far_1e-2": "TAR@FAR=1e-2", "eer": "EER", "auc": "AUC"}
TABLE_COLUMNS = (
    "run", "mode", "arch", "codec", "quality", "model_id", "pairs", "missing", "scored", "bpp", "psnr", "ms_ssim",
    *(f"{m}{s}" for m in POINT_METRICS for s in ("", "_lo", "_hi")),
    "tar_at_far_1e-3_impostors_above", "accuracy", "accuracy_std",
)


@dataclass
class Run:
    """One scores file, loaded: the pair columns as arrays, and its metrics row."""

    name: str
    mode: str
    labels: np.ndarray
    scores: np.ndarray
    row: dict[str, Any]
    meta: dict[str, Any]  # the scores file's run metadata (pairs file, probe set, models)


def _per_probe(table: pa.Table, column: str) -> list[float]:
    """The finite values of a column over the distinct probe images of the pairs (thesis 5.9.3:
    the rate of the probe images used in the test pairs; a probe in two pairs counts once)."""
    values = dict(zip(table.column("probe_key").to_pylist(), table.column(column).to_pylist()))
    return [v for v in values.values() if v is not None and math.isfinite(v)]


def _mean_per_probe(table: pa.Table, column: str) -> float:
    finite = _per_probe(table, column)
    return float(np.mean(finite)) if finite else math.nan


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
        "provenance": {"scores": meta.get("provenance"), "report": provenance()},  # the software that scored, and that measured
    }
    return Run(first["run"], first["mode"], labels[kept], scores[kept], row, meta)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def write_tables(runs: list[Run], out: Path) -> None:
    """metrics.csv (every column), metrics.json, and metrics.md (metric [95% CI] per run)."""
    out.mkdir(parents=True, exist_ok=True)
    columns = list(TABLE_COLUMNS) + ["untrained", "source"]
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for run in runs:
            writer.writerow({k: _fmt(run.row.get(k)) for k in columns})
    (out / "metrics.json").write_text(json.dumps([r.row for r in runs], indent=1, default=str))
    head = ["run", "mode", "bpp", *(METRIC_TITLES[m] + " [95% CI]" for m in POINT_METRICS), "10-fold acc.", "1e-3 point set by", "missing"]
    lines = [f"Made by {describe()}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        r = run.row
        cells = [r["run"] + (" (untrained)" if r["untrained"] else ""), r["mode"], _fmt(r["bpp"])]
        cells += [f"{r[m]:.4f} [{r.get(m + '_lo', math.nan):.4f}, {r.get(m + '_hi', math.nan):.4f}]" for m in POINT_METRICS]
        acc = "" if math.isnan(r["accuracy"]) else f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f}"
        rank = r["tar_at_far_1e-3_impostors_above"] + 1
        cells += [acc, f"impostor #{rank} of {r['impostor_pairs']}", f"{r['missing']}/{r['pairs']}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "TAR@FAR=t is the largest TAR on the ROC with FAR <= t: the share of genuine scores above the "
              "floor(t*n)+1-th highest of the n impostor scores ('1e-3 point set by'), so a handful of impostor "
              "scores decide it; hence its wide intervals (95% stratified percentile bootstrap). "
              "EER: linear interpolation between the ROC points where FRR - FAR changes sign."]
    (out / "metrics.md").write_text("\n".join(lines) + "\n")


def _methods(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs grouped into plot lines: one line per model and codec over its qualities."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if run.mode != "original":
            groups.setdefault(f"{run.row['arch']} {run.mode} {run.row['codec']}", []).append(run)
    return {k: sorted(v, key=lambda r: r.row["bpp"]) for k, v in groups.items()}


def plot_metrics_vs_rate(runs: list[Run], path: Path) -> None:
    """Figure 40/45: each metric against mean probe bpp, CI as error bars, original anchors as
    dashed horizontal lines."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, metric in zip(axes.flat, POINT_METRICS):
        for name, group in _methods(runs).items():
            x = [r.row["bpp"] for r in group]
            y = np.array([r.row[metric] for r in group])
            lo = np.array([r.row.get(metric + "_lo", v) for r, v in zip(group, y)])
            hi = np.array([r.row.get(metric + "_hi", v) for r, v in zip(group, y)])
            ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), marker="o", capsize=3, label=name)
        for run in runs:
            if run.mode == "original":
                ax.axhline(run.row[metric], linestyle="--", color="black", label=run.name)
        ax.set_xlabel("mean probe rate [bpp]")
        ax.set_title(METRIC_TITLES[metric])
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(runs: list[Run], path: Path) -> None:
    """ROC curves of all runs on a logarithmic FAR axis (where TAR@FAR=1e-3 lives)."""
    fig, ax = plt.subplots(figsize=(7, 6))
    for run in runs:
        curve = roc(run.labels, run.scores)
        ax.plot(np.maximum(curve.far, 1e-4), curve.tar, label=run.name)
    for target in (1e-3, 1e-2):
        ax.axvline(target, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_histograms(runs: list[Run], path: Path) -> None:
    """Figure 41: score distributions per label, one panel per run."""
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.5 * rows), squeeze=False)
    bins = np.linspace(-1, 1, 81)
    for ax, run in zip(axes.flat, runs):
        ax.hist(run.scores[~run.labels], bins=bins, color="tab:red", alpha=0.6, label="different")
        ax.hist(run.scores[run.labels], bins=bins, color="tab:green", alpha=0.6, label="same")
        ax.set_title(run.name, fontsize=8)
        ax.set_xlabel("cosine score")
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quality_vs_rate(runs: list[Run], path: Path) -> bool:
    """Figure 46: mean probe PSNR and MS-SSIM against bpp of the decoded runs; False (no file)
    when no run carries reconstruction quality."""
    groups = {k: [r for r in v if math.isfinite(r.row["psnr"])] for k, v in _methods(runs).items()}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, group in groups.items():
        x = [r.row["bpp"] for r in group]
        axes[0].plot(x, [r.row["ms_ssim"] for r in group], marker="o", label=name)
        axes[1].plot(x, [r.row["psnr"] for r in group], marker="o", label=name)
    for ax, title in zip(axes, ("MS-SSIM", "PSNR [dB]")):
        ax.set_xlabel("mean probe rate [bpp]")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


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
    for codec, points in by_codec.items():
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


def write_rate_distortion(runs: list[Run], out: Path) -> list[Path]:
    """rd-<codec>.json per codec with decoded runs (see rate_distortion)."""
    written = []
    for codec, data in rate_distortion(runs).items():
        path = out / f"rd-{re.sub(r'[^A-Za-z0-9_-]', '-', codec)}.json"
        path.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
        written.append(path)
    return written


BD_COLUMNS = ("method", "metric", "anchor", "anchor_choice", "points", "anchor_points", "bd_rate_percent",
              "bd_rate_metric_lo", "bd_rate_metric_hi", "bd_rate_reason", "bd_metric", "bd_metric_bpp_lo",
              "bd_metric_bpp_hi", "bd_metric_reason")
BD_NOTE = (
    f"BD-rate: average rate difference at equal metric, in percent of the anchor's rate (negative: fewer bits). "
    f"BD-metric: average metric difference at equal log10(bpp), in percentage points (positive: better). "
    f"Both by the bjontegaard package with {INTERPOLATION} interpolation, integrated only over the interval both "
    f"curves cover (no extrapolation; no overlap: n/a). A curve needs {MIN_POINTS} rate points: with 2 they are "
    f"joined by a straight line, with 3 or more by Akima's sub-spline (VCEG-M33's cubic fit would need 4), so "
    f"curves of 2 or 3 points (column 'points') give rougher deltas. BD-rate needs the metric to rise strictly with "
    f"rate along both curves, else n/a. Default anchor: the decoded line of the method's learned codec, else the "
    f"only learned-codec decoded line; `--bd-anchor LINE` chooses one for all. Accuracy is the 10-fold accuracy: "
    f"n/a where the pairs have no folds (LFW View 1).")


def _delta_cell(value: float, reason: str, scale: float, unit: str) -> str:
    return f"n/a: {reason}" if reason else f"{value * scale:+.2f} {unit}"


def write_bd(runs: list[Run], out: Path, anchor: str | None = None) -> list[Path]:
    """bd.csv, bd.json and a section of metrics.md: each plot line against its decoded anchor
    (see cdfv.eval.bd), on TAR@FAR=1e-3, TAR@FAR=1e-2 and 10-fold accuracy."""
    rows = compare({name: [r.row for r in group] for name, group in _methods(runs).items()}, anchor)
    with open(out / "bd.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BD_COLUMNS)
        writer.writeheader()
        writer.writerows({k: _fmt(row[k]) for k in BD_COLUMNS} for row in rows)
    plain = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in rows]
    (out / "bd.json").write_text(json.dumps({"interpolation": INTERPOLATION, "bjontegaard": version("bjontegaard"),
                                             "note": BD_NOTE, "rows": plain}, indent=1, allow_nan=False) + "\n")
    lines = ["", "## Bjontegaard deltas against the decoded anchor", ""]
    if rows:
        head = ["method", "anchor (chosen by)", "metric", "points (method/anchor)", "BD-rate", "BD-metric"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            chosen = f"{r['anchor']} ({r['anchor_choice']})" if r["anchor"] else "none"
            lines.append("| " + " | ".join([
                r["method"], chosen, r["metric"], f"{r['points']}/{r['anchor_points']}",
                _delta_cell(r["bd_rate_percent"], r["bd_rate_reason"], 1.0, "%"),
                _delta_cell(r["bd_metric"], r["bd_metric_reason"], 100.0, "pp")]) + " |")
    else:
        lines.append("No line to compare: BD needs a rate curve besides its anchor.")
    lines += ["", BD_NOTE]
    with open(out / "metrics.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    return [out / "bd.csv", out / "bd.json"]


def write_report(score_files: list[Path], out: Path, replicates: int = 1000, seed: int = 0,
                 bd_anchor: str | None = None) -> list[Path]:
    """Tables, Bjontegaard deltas (against bd_anchor, a plot line's name, or each line's default
    decoded anchor), rate-distortion JSON and plots for the given scores files; returns the files written."""
    if not score_files:
        raise ValueError("no scores files given")
    runs = [load_run(Path(p), replicates, seed) for p in progress.bar(len(score_files), "metrics", unit="run", iterable=score_files)]
    write_tables(runs, out)
    written = [out / "metrics.csv", out / "metrics.md", out / "metrics.json"]
    written += write_bd(runs, out, bd_anchor)
    written += write_rate_distortion(runs, out)
    for name, plot in (("metrics_vs_bpp.png", plot_metrics_vs_rate), ("roc.png", plot_roc),
                       ("score_histograms.png", plot_histograms)):
        plot(runs, out / name)
        written.append(out / name)
    if plot_quality_vs_rate(runs, out / "quality_vs_bpp.png"):
        written.append(out / "quality_vs_bpp.png")
    return written
