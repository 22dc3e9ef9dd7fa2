"""Runs side by side: one metrics row per scores file (CSV, Markdown, JSON), the thesis's plots
(eval/plots.py), Bjontegaard deltas of each plot line against a decoded anchor, and per-codec
rate-distortion results in CompressAI's JSON format; written as a whole (cdfv.atomic), so a
failure leaves the previous report as it was. The CSV and JSON files keep every digit; the
Markdown rounds for people (eval/markdown.py)."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cdfv.atomic import atomic_directory
from cdfv.provenance import describe

from .bd import INTERPOLATION, MIN_POINTS, compare
from .markdown import cell, note_column, table
from .metrics import POINT_METRICS
from .plots import FIGURE_FILES, METRIC_TITLES, figures
from .runs import MISMATCH_MARK, Run, load_runs, one_pairs_file, one_row_per_run, plot_lines, rate_distortion

TAR_METRICS = POINT_METRICS[:2]  # the TAR@FAR columns, which carry a resolution note
TABLE_COLUMNS = (
    "run", "mode", "arch", "codec", "quality", "model_id", "pairs_file", "pairs", "missing", "scored", "bpp", "psnr", "ms_ssim",
    *(f"{m}{s}" for m in POINT_METRICS for s in ("", "_lo", "_hi")), "genuine_pairs", "impostor_pairs",
    *(f"{m}{s}" for m in TAR_METRICS for s in ("_impostors_above", "_note")), "accuracy", "accuracy_std",
)
TABLE_FILES = ("metrics.csv", "metrics.md", "metrics.json", "bd.csv", "bd.json")
DPI = 150


def is_report_file(name: str) -> bool:
    """Whether a file in the report folder is the report's own (replaced by each report), not another
    tool's kept beside it (a reproduction's table7.csv and README.md)."""
    return name in TABLE_FILES or name in FIGURE_FILES or bool(re.fullmatch(r"rd-.*\.json", name))


def _csv_value(value: Any) -> Any:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _csv(rows: list[dict[str, Any]], columns: list[str] | tuple[str, ...]) -> str:
    """Every digit; NaN and None as empty cells."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_value(row.get(k)) for k in columns} for row in rows)
    return buffer.getvalue()


def _interval(row: dict[str, Any], metric: str) -> str:
    value = cell(row[metric], 3)
    if f"{metric}_lo" not in row:  # --bootstrap 0
        return value
    return f"{value} [{cell(row[metric + '_lo'], 3)}, {cell(row[metric + '_hi'], 3)}]"


METRICS_NOTE = (
    "TAR@FAR=t is the largest TAR on the ROC with FAR <= t: the share of genuine scores above the floor(t*n)+1-th "
    "highest of the n impostor scores ('1e-3 point set by'), so a handful of impostor scores decide it; hence its wide "
    "intervals (95% stratified percentile bootstrap). With fewer than 1/t impostors the smallest FAR above 0 is "
    "already above t, so the value is the TAR at FAR 0 and the column says 'not resolved'. "
    "EER: linear interpolation between the ROC points where FRR - FAR changes sign. Rounded to 3 decimals "
    "(bpp, metrics) here; metrics.csv and metrics.json hold every digit.")


def metrics_markdown(runs: list[Run]) -> list[str]:
    """metrics.md's table: metric [95% CI] per run, rounded, with each TAR@FAR's resolution note."""
    rows = [r.row for r in runs]
    columns = {"run": [r["run"] + (" (untrained)" if r["untrained"] else "") + (f" {MISMATCH_MARK}" if r["latent_mismatch"] else "")
                       for r in rows], "mode": [r["mode"] for r in rows],
               "bpp": [cell(r["bpp"], 3) for r in rows]}
    for m in POINT_METRICS:
        header, cells = f"{METRIC_TITLES[m]} [95% CI]", [_interval(r, m) for r in rows]
        if m in TAR_METRICS:
            header, cells = note_column(header, cells, [r.get(f"{m}_note", "") for r in rows])
        columns[header] = cells
    columns["10-fold acc."] = ["" if math.isnan(r["accuracy"]) else f"{cell(r['accuracy'], 3)} ± {cell(r['accuracy_std'], 3)}"
                               for r in rows]
    columns["1e-3 point set by"] = [f"impostor #{r['tar_at_far_1e-3_impostors_above'] + 1} of {r['impostor_pairs']}" for r in rows]
    columns["missing"] = [f"{r['missing']}/{r['pairs']}" for r in rows]
    mismatched = [f"{r['run']} {MISMATCH_MARK}, scored with --allow-latent-mismatch: {r['latent_mismatch']}."
                  for r in rows if r["latent_mismatch"]]
    return [f"Pairs: {rows[0]['pairs_file']}. Made by {describe()}.", "", *table(list(columns), [list(row) for row in zip(*columns.values())]),
            *([""] + mismatched if mismatched else []), "", METRICS_NOTE]


def rd_file(codec: str) -> str:
    return f"rd-{re.sub(r'[^A-Za-z0-9_-]', '-', codec)}.json"


BD_COLUMNS = ("method", "metric", "anchor", "anchor_choice", "points", "anchor_points", "bd_rate_percent",
              "bd_rate_metric_lo", "bd_rate_metric_hi", "bd_rate_reason", "bd_metric", "bd_metric_bpp_lo",
              "bd_metric_bpp_hi", "bd_metric_reason", "latent_mismatch")
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


def bd_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """metrics.md's section of Bjontegaard deltas, a line holding a run scored on other latents
    than its model was trained on marked."""
    lines = ["", "## Bjontegaard deltas against the decoded anchor", ""]
    if rows:
        lines += table(["method", "anchor (chosen by)", "metric", "points (method/anchor)", "BD-rate", "BD-metric"], [[
            r["method"] + (f" {MISMATCH_MARK}" if r["latent_mismatch"] else ""), f"{r['anchor']} ({r['anchor_choice']})" if r["anchor"] else "none", r["metric"],
            f"{r['points']}/{r['anchor_points']}", _delta_cell(r["bd_rate_percent"], r["bd_rate_reason"], 1.0, "%"),
            _delta_cell(r["bd_metric"], r["bd_metric_reason"], 100.0, "pp")] for r in rows])
    else:
        lines.append("No line to compare: BD needs a rate curve besides its anchor.")
    return lines + ["", BD_NOTE]


def report_texts(runs: list[Run], rd: dict[str, dict[str, Any]], bd_anchor: str | None) -> dict[str, str]:
    """The report's tables by file name: metrics (CSV, JSON, Markdown), the Bjontegaard deltas of
    each plot line against its decoded anchor (cdfv.eval.bd; bd_anchor: a plot line's name for all),
    and rd-<codec>.json per codec with decoded runs (runs.rate_distortion)."""
    lines = plot_lines(runs)
    marked = {name for name, group in lines.items() if any(r.row["latent_mismatch"] for r in group)}
    bd = [{**row, "latent_mismatch": row["method"] in marked}  # in bd.csv and bd.json too, not only metrics.md
          for row in compare({name: [r.row for r in group] for name, group in lines.items()}, bd_anchor)]
    plain = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()} for row in bd]
    texts = {
        "metrics.csv": _csv([r.row for r in runs], [*TABLE_COLUMNS, "untrained", "latent_mismatch", "source"]),
        "metrics.json": json.dumps([r.row for r in runs], indent=1, default=str),
        "metrics.md": "\n".join(metrics_markdown(runs) + bd_markdown(bd)) + "\n",
        "bd.csv": _csv(bd, BD_COLUMNS),
        "bd.json": json.dumps({"interpolation": INTERPOLATION, "bjontegaard": version("bjontegaard"), "note": BD_NOTE,
                               "rows": plain}, indent=1, allow_nan=False) + "\n",
    }
    texts.update({rd_file(codec): json.dumps(data, indent=1, allow_nan=False) + "\n" for codec, data in rd.items()})
    return texts


def _named(path: Path, write: Callable[[Path], Any]) -> None:
    """Writes one file; an OSError that does not say which file (a disk full mid-PNG) gets its name."""
    try:
        write(path)
    except OSError as e:
        if e.filename is None:
            e.filename = str(path)
        raise


def write_report(score_files: list[Path], out: Path, replicates: int = 1000, seed: int = 0,
                 bd_anchor: str | None = None) -> list[Path]:
    """The report of the given scores files into `out`, replacing an earlier report there as a
    whole (files of other tools in `out` are kept); returns the files written."""
    if not score_files:
        raise ValueError("no scores files given")
    runs = load_runs(score_files, replicates, seed)
    pairs = one_pairs_file(runs)
    one_row_per_run(runs)
    rd = rate_distortion(runs)
    texts = report_texts(runs, rd, bd_anchor)
    with atomic_directory(out, owns=is_report_file) as tmp:
        for name, text in texts.items():
            _named(tmp / name, lambda path, text=text: path.write_text(text))
        drawn = figures(runs, rd, pairs)
        for name, fig in drawn.items():
            _named(tmp / name, lambda path, fig=fig: fig.savefig(path, dpi=DPI))
    return [out / name for name in (*texts, *drawn)]
