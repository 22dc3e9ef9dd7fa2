"""Bjontegaard deltas between verification-rate curves, and which decoded anchor each curve is
measured against.

A curve is one plot line of the report (runs of one model, mode and codec over its qualities):
points (mean probe bpp, metric). The deltas are those of VCEG-M33 computed by the `bjontegaard`
package with Akima interpolation (its authors' recommendation over the original cubic fit):

- BD-rate: the average difference of log10(bpp) at equal metric, as a percentage of the anchor's
  rate (negative: the method needs fewer bits for the same verification performance);
- BD-metric: the average metric difference at equal log10(bpp) (positive: better than the anchor).

Each is integrated only over the interval both curves cover (metric values for BD-rate, rates for
BD-metric); nothing is extrapolated, and curves that do not overlap give no number, with the reason.
A curve needs at least 2 points: with 2 the package joins them by a straight line, with 3 or more
it fits Akima's sub-spline through all of them (the polynomial 'cubic' fit would need 4).
BD-rate also needs the metric to rise strictly with rate along each curve, so that rate is a
function of the metric; a curve that dips or saturates gives no BD-rate, with the reason.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import bjontegaard
import numpy as np

INTERPOLATION = "akima"
MIN_POINTS = 2
BD_METRICS = {"tar_at_far_1e-3": "TAR@FAR=1e-3", "tar_at_far_1e-2": "TAR@FAR=1e-2", "accuracy": "10-fold accuracy"}
NO_FOLDS = "10-fold accuracy is NaN: the pairs have fewer than 2 folds (LFW View 1 has none)"


@dataclass(frozen=True)
class Delta:
    """One Bjontegaard delta, or why there is none; lo..hi is the interval integrated over
    (metric values for BD-rate, bpp for BD-metric)."""

    value: float = math.nan
    reason: str = ""
    lo: float = math.nan
    hi: float = math.nan

    @property
    def available(self) -> bool:
        return not self.reason


def _curve(rate: Sequence[float], metric: Sequence[float], who: str) -> tuple[np.ndarray, np.ndarray] | str:
    """The points sorted by rate, or why they cannot make a curve."""
    r, m = np.asarray(rate, dtype=np.float64), np.asarray(metric, dtype=np.float64)
    if len(r) < MIN_POINTS:
        return f"{who} has {len(r)} rate point(s), needs {MIN_POINTS}"
    if not (np.isfinite(r).all() and (r > 0).all()):
        return f"{who} has a rate that is not a positive number"
    if not np.isfinite(m).all():
        return f"{who} has a metric value that is NaN"
    order = np.argsort(r)
    r, m = r[order], m[order]
    if (np.diff(r) <= 0).any():
        return f"{who} has two points at the same rate"
    return r, m


def _overlap(a: np.ndarray, b: np.ndarray, unit: str) -> tuple[float, float] | str:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if hi <= lo:
        return (f"no overlap: anchor covers {unit} {a.min():.4g}..{a.max():.4g}, "
                f"method {b.min():.4g}..{b.max():.4g}")
    return float(lo), float(hi)


def _prepare(anchor_rate: Sequence[float], anchor_metric: Sequence[float], test_rate: Sequence[float],
             test_metric: Sequence[float]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | str:
    anchor = _curve(anchor_rate, anchor_metric, "anchor")
    if isinstance(anchor, str):
        return anchor
    test = _curve(test_rate, test_metric, "method")
    if isinstance(test, str):
        return test
    return anchor, test


def bd_rate(anchor_rate: Sequence[float], anchor_metric: Sequence[float],
            test_rate: Sequence[float], test_metric: Sequence[float]) -> Delta:
    """Average rate difference in percent at equal metric, over the metric interval both cover."""
    curves = _prepare(anchor_rate, anchor_metric, test_rate, test_metric)
    if isinstance(curves, str):
        return Delta(reason=curves)
    for who, (_, m) in zip(("anchor", "method"), curves):
        if (np.diff(m) <= 0).any():
            values = ", ".join(f"{v:.4g}" for v in m)
            return Delta(reason=f"{who}'s metric does not rise strictly with rate ({values}): rate is not a function of it")
    (ra, ma), (rt, mt) = curves
    span = _overlap(ma, mt, "metric")
    if isinstance(span, str):
        return Delta(reason=span)
    # min_overlap=0: the overlap was checked above and is reported with the value, not warned about
    value = bjontegaard.bd_rate(ra, ma, rt, mt, INTERPOLATION, require_matching_points=False, min_overlap=0)
    return Delta(float(value), "", *span)


def bd_metric(anchor_rate: Sequence[float], anchor_metric: Sequence[float],
              test_rate: Sequence[float], test_metric: Sequence[float]) -> Delta:
    """Average metric difference at equal log10(bpp), over the rate interval both cover."""
    curves = _prepare(anchor_rate, anchor_metric, test_rate, test_metric)
    if isinstance(curves, str):
        return Delta(reason=curves)
    (ra, ma), (rt, mt) = curves
    span = _overlap(ra, rt, "bpp")
    if isinstance(span, str):
        return Delta(reason=span)
    # bd_psnr is the package's BD on any metric against log10(rate), not specific to PSNR
    value = bjontegaard.bd_psnr(ra, ma, rt, mt, INTERPOLATION, require_matching_points=False, min_overlap=0)
    return Delta(float(value), "", *span)


def learned_codec(codec: str | None) -> bool:
    """Whether a scores file's codec label (name-metric) names a CompressAI zoo codec."""
    if not codec:
        return False
    from compressai.zoo import image_models  # imports torch: only asked when a default anchor is chosen

    return any(codec in (name, f"{name}-mse", f"{name}-ms-ssim") for name in image_models)


def choose_anchor(line: str, lines: dict[str, dict[str, Any]], chosen: str | None) -> tuple[str | None, str]:
    """(anchor line, how it was chosen) for one line; (None, reason) when there is none.

    lines maps line names to their first row (mode, codec). chosen (--bd-anchor) wins; else the
    learned-codec decoded line of the line's own codec; else the only learned-codec decoded line."""
    if chosen is not None:
        return chosen, "--bd-anchor"
    learned = [n for n, r in lines.items() if r["mode"] == "decoded" and learned_codec(r["codec"])]
    same = [n for n in learned if lines[n]["codec"] == lines[line]["codec"]]
    if len(same) == 1:
        return same[0], "decoded, same codec"
    if len(same) > 1:
        return None, f"several decoded lines of this codec ({', '.join(same)}): choose one with --bd-anchor"
    if len(learned) == 1:
        return learned[0], "the only learned-codec decoded line"
    if not learned:
        return None, "no learned-codec decoded line in the report: choose an anchor with --bd-anchor"
    return None, f"no decoded line of this codec and several others ({', '.join(learned)}): choose one with --bd-anchor"


def compare(lines: dict[str, list[dict[str, Any]]], anchor: str | None = None) -> list[dict[str, Any]]:
    """One row per line and metric of BD_METRICS: BD-rate and BD-metric against its anchor line.

    lines maps line names to their runs' metrics rows (bpp and each metric); anchor names the line
    every other line is measured against (default: see choose_anchor). A line is not compared with
    itself."""
    if anchor is not None and anchor not in lines:
        raise ValueError(f"--bd-anchor {anchor!r} is not a line of this report; lines: {', '.join(lines) or 'none'}")
    firsts = {name: rows[0] for name, rows in lines.items()}
    out = []
    for name, rows in lines.items():
        target, how = choose_anchor(name, firsts, anchor)
        if target == name:
            continue
        for metric, title in BD_METRICS.items():
            row: dict[str, Any] = {"method": name, "metric": title, "anchor": target or "",
                                   "anchor_choice": how if target else "", "points": len(rows),
                                   "anchor_points": len(lines[target]) if target else 0}
            if target is None:
                rate = value = Delta(reason=how)
            elif metric == "accuracy" and any(math.isnan(r[metric]) for r in rows + lines[target]):
                rate = value = Delta(reason=NO_FOLDS)
            else:
                args = ([r["bpp"] for r in lines[target]], [r[metric] for r in lines[target]],
                        [r["bpp"] for r in rows], [r[metric] for r in rows])
                rate, value = bd_rate(*args), bd_metric(*args)
            row.update({"bd_rate_percent": rate.value, "bd_rate_metric_lo": rate.lo, "bd_rate_metric_hi": rate.hi,
                        "bd_rate_reason": rate.reason, "bd_metric": value.value, "bd_metric_bpp_lo": value.lo,
                        "bd_metric_bpp_hi": value.hi, "bd_metric_reason": value.reason})
            out.append(row)
    return out
