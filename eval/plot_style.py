"""The one style table every figure of a report draws with, so a reader who learns a line in one
figure finds it in the next: a colour per codec (original faces, which have none: black), a marker
and a dash pattern per face model, and for a single run its codec's colour shaded by rate (light:
lowest rate, dark: highest). Also the axes conventions the figures share: rate on a log axis (the
Bjontegaard deltas integrate over log bpp), legends outside the data, labelled baselines."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from .runs import Run, natural_key

# Qualitative colours a reader tells apart: tab10 without its grey (kept for guides) and Dark2.
PALETTE = tuple(c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7) + tuple(matplotlib.colormaps["Dark2"].colors)
ORIGINAL_COLOR = "black"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DASHES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (6, 2)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2, 2, 2)))
RATE_PAD = 1.15  # the rate axis reaches this factor beyond the lowest and highest rate
LIGHTEST, DARKEST = 0.55, 0.35  # how far a run's shade moves toward white (lowest rate) or black (highest)


HOLLOW_MODES = ("compressed",)  # modes drawn with open markers, so a codec's compressed and decoded points differ at a glance
DODGE, DODGE_SPREAD = 0.02, 0.08  # shares of a rate axis's width: between neighbouring lines' points, and for all of them


@dataclass(frozen=True)
class Look:
    """How one line, run or baseline is drawn; `filled` markers (decoded) or open ones (compressed)."""

    color: tuple[float, float, float] | str
    marker: str
    linestyle: Any
    filled: bool = True

    def kwargs(self, markers: bool = True) -> dict[str, Any]:
        marker = {"marker": self.marker, **({} if self.filled else {"markerfacecolor": "white"})} if markers else {}
        return {"color": self.color, "linestyle": self.linestyle, **marker}


def shade(color: Any, rank: int, count: int) -> tuple[float, float, float]:
    """The colour toward white for the lowest of `count` rates and toward black for the highest."""
    rgb = np.array(mcolors.to_rgb(color))
    t = 0.5 if count < 2 else rank / (count - 1)
    if t < 0.5:
        rgb = rgb + (1 - rgb) * LIGHTEST * (1 - 2 * t)
    else:
        rgb = rgb * (1 - DARKEST * (2 * t - 1))
    return tuple(float(v) for v in rgb)


@dataclass(frozen=True)
class Styles:
    """The style table of one report, made from all its runs so every figure agrees."""

    codecs: dict[str, Any]  # codec -> colour
    models: dict[str, tuple[str, Any]]  # face model (arch) -> (marker, dash)
    ranks: dict[tuple[str, float], tuple[int, int]]  # (codec, quality) -> (rank by rate, qualities of the codec)

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Styles:
        codecs = sorted({r.row["codec"] for r in runs if r.row["codec"]}, key=natural_key)
        archs = sorted({r.row["arch"] for r in runs}, key=natural_key)
        ranks = {}
        for codec in codecs:
            rates: dict[float, list[float]] = {}
            for r in runs:
                if r.row["codec"] == codec:
                    rates.setdefault(r.row["quality"], []).append(r.row["bpp"])
            by_rate = sorted(rates, key=lambda q: (float(np.nanmean(rates[q])) if np.isfinite(rates[q]).any() else q, q))
            ranks.update({(codec, q): (i, len(by_rate)) for i, q in enumerate(by_rate)})
        return cls({c: PALETTE[i % len(PALETTE)] for i, c in enumerate(codecs)},
                   {a: (MARKERS[i % len(MARKERS)], DASHES[i % len(DASHES)]) for i, a in enumerate(archs)}, ranks)

    def line(self, arch: str, codec: str | None, mode: str | None = None) -> Look:
        """A face model's line on a codec in a mode (codec None: its original-face baseline)."""
        marker, dash = self.models[arch]
        return Look(self.codecs[codec] if codec else ORIGINAL_COLOR, marker, dash, mode not in HOLLOW_MODES)

    def codec(self, codec: str) -> Look:
        """A line that belongs to the codec alone (reconstruction quality, whatever the face model)."""
        return Look(self.codecs[codec], "o", "-")

    def run(self, run: Run) -> Look:
        """One run: its line's look, the colour shaded by the run's rate among its codec's qualities."""
        look = self.line(run.row["arch"], run.row["codec"])
        if not run.row["codec"]:
            return look
        return Look(shade(look.color, *self.ranks[(run.row["codec"], run.row["quality"])]), look.marker, look.linestyle)


def rate_limits(rates: Sequence[float]) -> tuple[float, float] | None:
    """The rate axis's limits over the data's rates: padded, and widened around a single rate; None
    where no rate is known."""
    known = [r for r in rates if math.isfinite(r) and r > 0]
    if not known:
        return None
    lo, hi = min(known), max(known)
    pad = max(RATE_PAD, (hi / lo) ** 0.05)
    return lo / pad, hi * pad


def dodge_factors(count: int, rates: Sequence[float]) -> list[float]:
    """Factors that shift `count` lines' rates apart on the log rate axis (DODGE of its width between
    neighbours, DODGE_SPREAD at most for all), centred on the true rate, so points of one rate (a
    codec's decoded and compressed runs, rate-matched anchors) keep their error bars apart."""
    limits = rate_limits(rates)
    if limits is None or count < 2:
        return [1.0] * count
    step = min(DODGE, DODGE_SPREAD / (count - 1)) * math.log10(limits[1] / limits[0])
    return [10.0 ** ((i - (count - 1) / 2) * step) for i in range(count)]


def log_rate_axis(ax: Axes, rates: Sequence[float]) -> None:
    """Rate on a log axis over the data's rates (rate_limits), with plain-number ticks: 1-2-5 a
    decade over wide ranges, more per decade over narrow ones (0.3, 0.4, 0.5, 0.7, 1 over 0.3-1.1
    bpp), a few evenly spaced ones over less than a decade."""
    ax.set_xlabel("mean probe rate [bpp, log scale]")
    limits = rate_limits(rates)
    if limits is None:  # scores files without rates: nothing to place on the axis
        return
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    decades = math.log10(limits[1] / limits[0])
    if decades < 0.6:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    else:
        subs = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0) if decades < 1.2 else (1.0, 2.0, 3.0, 5.0) if decades < 2 else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(np.arange(1.0, 10.0))))
    ax.xaxis.set_minor_formatter(NullFormatter())


def baseline(ax: Axes, value: float, look: Look, label: str, slot: int) -> Line2D:
    """A horizontal reference line (original faces, which have no rate) across the axes, its label
    written on it inside the axes, at the left end for even slots and the right end for odd ones
    so two labels do not overlap."""
    line = ax.axhline(value, linewidth=1.4, label=label, **look.kwargs(markers=False))
    left = slot % 2 == 0
    ax.annotate(label, xy=(0.01 if left else 0.99, value), xycoords=blended_transform_factory(ax.transAxes, ax.transData),
                xytext=(0, 2), textcoords="offset points", ha="left" if left else "right", va="bottom",
                fontsize=7, color=look.color, bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 0.5})
    return line


def legend_outside(ax: Axes, **kwargs: Any) -> None:
    """The axes' legend to their right, off the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=7, **kwargs)
