"""The report's figures as matplotlib Figures (the tests read them; report.py saves them), all
drawn from one Styles table: Figures 40/45 (metrics against rate), ROC curves, Figure 41 (score
histograms) and Figure 46 (reconstruction quality against rate)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter

from .metrics import FAR_TARGETS, POINT_METRICS, roc
from .plot_style import Styles, baseline, dodge_factors, legend_outside, log_rate_axis
from .runs import MISMATCH_MARK, Run, codec_setting, natural_key, plot_lines

METRIC_TITLES = {"tar_at_far_1e-3": "TAR@FAR=1e-3", "tar_at_far_1e-2": "TAR@FAR=1e-2", "eer": "EER", "auc": "AUC"}
MAX_CURVES = 10  # curves one axes holds apart (a qualitative palette's size); more go into panels
HIST_BINS = 40
IMPOSTOR_COLOR, GENUINE_COLOR = "#d95f02", "#1b9e77"  # told apart with red-green colour blindness too


def _originals(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.mode == "original"]


def _resolution(runs: list[Run], metric: str) -> str:
    """The resolution note of the run with the fewest impostors, where a TAR@FAR panel has one."""
    notes = [r.row.get(f"{metric}_note", "") for r in sorted(runs, key=lambda r: r.row["impostor_pairs"])]
    return next((n for n in notes if n), "")


def metrics_vs_rate(runs: list[Run], styles: Styles) -> Figure | None:
    """Figure 40/45: each metric against mean probe bpp (log axis), one line per model, mode and
    codec with 95 % intervals as error bars, original faces as labelled horizontal baselines.
    None when no run has a rate (original faces only): there is no rate axis to draw."""
    lines = plot_lines(runs)
    if not lines:
        return None
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    rates = [r.row["bpp"] for group in lines.values() for r in group]
    dodge = dict(zip(lines, dodge_factors(len(lines), rates)))
    for ax, metric in zip(axes.flat, POINT_METRICS):
        for name, group in lines.items():
            x = [r.row["bpp"] * dodge[name] for r in group]
            y = np.array([r.row[metric] for r in group])
            lo = np.array([r.row.get(metric + "_lo", v) for r, v in zip(group, y)])
            hi = np.array([r.row.get(metric + "_hi", v) for r, v in zip(group, y)])
            look = styles.line(group[0].row["arch"], group[0].row["codec"], group[0].mode)
            ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), capsize=3, markersize=5, linewidth=1.4,
                        label=_marked(name, group), **look.kwargs())
        for slot, run in enumerate(_originals(runs)):
            baseline(ax, run.row[metric], styles.line(run.row["arch"], None), f"{run.row['arch']} original", slot)
        note = _resolution(runs, metric)
        ax.set_title(METRIC_TITLES[metric] + (f"\n{note}" if note else ""), fontsize=10)
        log_rate_axis(ax, [r.row["bpp"] for group in lines.values() for r in group])
        ax.grid(alpha=0.3, which="both")
        ax.margins(y=0.08)
    for ax in axes[0]:
        ax.set_xlabel("")  # the column shares the bottom axes' rate axis
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    shift = max(dodge.values()) - 1.0
    if shift > 0:
        fig.supxlabel(f"Lines drawn apart: each line's points shifted by one factor, up to \u00b1{100 * shift:.1f} % of their rate, "
                      f"so error bars at one rate do not cover each other\n(metrics.csv holds the measured rates). "
                      f"Open markers: compressed domain; filled: decoded.", fontsize=8, color="0.35")
    return fig


def roc_panels(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """The runs one ROC axes holds, or panels when they are more than MAX_CURVES: one per codec
    (each with the original-face curves for reference), or per face model when there is one codec."""
    if len(runs) <= MAX_CURVES:
        return [("", runs)]
    codecs = sorted({r.row["codec"] for r in runs if r.row["codec"]}, key=natural_key)
    if len(codecs) > 1:
        return [(codec, _originals(runs) + [r for r in runs if r.row["codec"] == codec]) for codec in codecs]
    archs = sorted({r.row["arch"] for r in runs}, key=natural_key)
    return [(arch, [r for r in runs if r.row["arch"] == arch]) for arch in archs]


def _marked(label: str, runs: list[Run]) -> str:
    """A legend label, marked where a run was scored on other latents than its model was trained on."""
    return f"{label} {MISMATCH_MARK}" if any(r.row["latent_mismatch"] for r in runs) else label


def _roc_label(run: Run, codec_shown: bool) -> str:
    row = run.row
    if run.mode == "original":
        return f"{row['arch']} original"
    codec, setting = codec_setting(row["codec"], row["quality"])
    return _marked(f"{row['arch']} {run.mode}{f' {codec}' if codec_shown else ''} {setting} ({row['bpp']:.3g} bpp)", [run])


def roc_figure(runs: list[Run], styles: Styles) -> Figure:
    """ROC curves on a log FAR axis (where TAR@FAR=1e-3 lives) from the decade of the smallest FAR
    above 0 the largest impostor set resolves (1/n; at most 0.1); FAR 0 is drawn at the left edge.
    Split into panels (roc_panels)."""
    panels = roc_panels(runs)
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(7.5 * cols, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    left = min(0.1, 10.0 ** math.floor(math.log10(1 / max(r.row["impostor_pairs"] for r in runs))))
    for ax, (title, members) in zip(axes.flat, panels):
        for run in members:
            curve = roc(run.labels, run.scores)
            look = styles.run(run)
            ax.plot(np.maximum(curve.far, left), curve.tar, linewidth=1.3 if run.row["codec"] else 1.6,
                    label=_roc_label(run, codec_shown=not title or title not in styles.codecs), **look.kwargs(markers=False))
        for target in FAR_TARGETS:
            ax.axvline(target, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.set_xlim(left, 1)
        ax.xaxis.set_minor_formatter(NullFormatter())  # decades only, also over a range under one decade
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("FAR (log scale)")
        ax.set_ylabel("TAR")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        legend_outside(ax)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    return fig


def histogram_rows(runs: list[Run]) -> list[tuple[str, list[Run]]]:
    """Histogram panels by rows: original faces first, then one row per plot line by rate."""
    rows = [("original faces", _originals(runs))] if _originals(runs) else []
    return rows + list(plot_lines(runs).items())


def score_ranges(runs: list[Run]) -> dict[str, tuple[float, float]]:
    """Per face model, the range its scores span over all runs (padded 2 %): one model's panels
    share bins and limits, whatever range its embedding's cosines fall in."""
    ranges = {}
    for arch in {r.row["arch"] for r in runs}:
        scores = np.concatenate([r.scores for r in runs if r.row["arch"] == arch])
        lo, hi = float(scores.min()), float(scores.max())
        pad = 0.02 * (hi - lo) if hi > lo else 0.01
        ranges[arch] = (lo - pad, hi + pad)
    return ranges


def histograms(runs: list[Run]) -> Figure:
    """Figure 41: same-person and different-person score distributions, a panel per run, a row per
    plot line (columns by rate), over each face model's own score range."""
    rows = histogram_rows(runs)
    cols = max(len(members) for _, members in rows)
    fig = Figure(figsize=(0.6 + 2.6 * cols, 0.5 + 1.8 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    ranges = score_ranges(runs)
    for row_axes, (name, members) in zip(axes, rows):
        for ax, run in zip(row_axes, members):
            bins = np.linspace(*ranges[run.row["arch"]], HIST_BINS + 1)
            for scores, color, label in ((run.scores[~run.labels], IMPOSTOR_COLOR, "different persons"),
                                         (run.scores[run.labels], GENUINE_COLOR, "same person")):
                ax.hist(scores, bins=bins, histtype="step", linewidth=1.1, color=color, label=label)  # outlines: no blend where they overlap
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # pair counts
            ax.set_xlim(bins[0], bins[-1])
            ax.set_title(run.row["arch"] if run.mode == "original"
                         else f"{codec_setting(run.row['codec'], run.row['quality'])[1]}, {run.row['bpp']:.3g} bpp",
                         fontsize=7)
            ax.tick_params(labelsize=6)
        row_axes[0].set_ylabel(name.replace(" ", "\n", 2), fontsize=7)
        for ax in row_axes[len(members):]:
            ax.set_axis_off()
    axes[-1][0].set_xlabel("cosine score", fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)  # the top left holds the pairs file
    return fig


def quality_vs_rate(rd: dict[str, dict[str, Any]], styles: Styles) -> Figure | None:
    """Figure 46: mean probe MS-SSIM and PSNR against bpp (log axis), one line per codec: the
    reconstruction belongs to the codec, whatever face model scored it (runs.rate_distortion).
    None when no decoded run records reconstruction quality."""
    if not rd:
        return None
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for codec, data in rd.items():
        points = data["results"]
        look = styles.codec(codec)
        axes[0].plot(points["bpp"], points["ms-ssim-rgb"], label=codec, **look.kwargs())
        axes[1].plot(points["bpp"], points["psnr-rgb"], label=codec, **look.kwargs())
    for ax, title in zip(axes, ("MS-SSIM", "PSNR [dB]")):
        log_rate_axis(ax, [bpp for data in rd.values() for bpp in data["results"]["bpp"]])
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    return fig


FIGURE_FILES = ("metrics_vs_bpp.png", "roc.png", "score_histograms.png", "quality_vs_bpp.png")


def figures(runs: list[Run], rd: dict[str, dict[str, Any]], pairs: str) -> dict[str, Figure]:
    """Every figure of the report by file name (FIGURE_FILES), those that have something to show,
    each naming the pairs file its figures come from (runs.pairs_label) in its top left corner."""
    styles = Styles.of(runs)
    made = (metrics_vs_rate(runs, styles), roc_figure(runs, styles), histograms(runs), quality_vs_rate(rd, styles))
    drawn = {name: fig for name, fig in zip(FIGURE_FILES, made) if fig is not None}
    for fig in drawn.values():
        fig.suptitle(f"LFW pairs: {pairs}", x=0.01, ha="left", fontsize=8, color="0.35")
    return drawn
