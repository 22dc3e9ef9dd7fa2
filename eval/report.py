"""Runs side by side: one metrics row per scores file (CSV, Markdown, JSON) and the thesis's plots
(Figures 40/45 metrics against rate, ROC curves, Figure 41 score histograms, Figure 46 quality)."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

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


def _mean_per_probe(table: pa.Table, column: str) -> float:
    """Mean over the distinct probe images of the pairs (thesis 5.9.3: the rate of the probe
    images used in the test pairs; a probe in two pairs counts once)."""
    values = dict(zip(table.column("probe_key").to_pylist(), table.column(column).to_pylist()))
    finite = [v for v in values.values() if v is not None and math.isfinite(v)]
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
        **summarize(labels[kept], scores[kept], folds[kept], replicates, seed),
        "source": str(path),
        "untrained": bool((meta.get("model") or {}).get("untrained")) or bool(meta.get("untrained_codec")),
    }
    return Run(first["run"], first["mode"], labels[kept], scores[kept], row)


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
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
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


def write_report(score_files: list[Path], out: Path, replicates: int = 1000, seed: int = 0) -> list[Path]:
    """Tables and plots for the given scores files; returns the files written."""
    if not score_files:
        raise ValueError("no scores files given")
    runs = [load_run(Path(p), replicates, seed) for p in score_files]
    write_tables(runs, out)
    written = [out / "metrics.csv", out / "metrics.md", out / "metrics.json"]
    for name, plot in (("metrics_vs_bpp.png", plot_metrics_vs_rate), ("roc.png", plot_roc),
                       ("score_histograms.png", plot_histograms)):
        plot(runs, out / name)
        written.append(out / name)
    if plot_quality_vs_rate(runs, out / "quality_vs_bpp.png"):
        written.append(out / "quality_vs_bpp.png")
    return written
