"""Rate matching: one codec parameter per dataset so that the mean rate over a sample of faces lands
on a target (a learned codec's mean bpp over the same faces), as the thesis matched its anchors.

The mean rate is assumed monotone in the parameter (it is for JPEG quality, JPEG 2000 ratio and
HEVC QP), so bisection finds it; an integer parameter may have no value close enough, and then
matching fails and says which neighbours bracket the target rather than pretending.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
from tqdm import tqdm

from cdfv import progress
from cdfv.pipeline.conventional import Codec

AIM = 0.25  # a continuous parameter is refined to tolerance * AIM, leaving room for the full set
# a continuous parameter's bracket is not narrowed below this ratio (JPEG 2000's ratio 4..1000: at most
# 13 halvings, which bounds the search and gives its progress bar a total): a 0.1 % step in the ratio
# moves a 224x224 face's codestream by 0.1 %, a byte or a few, so a rate still off there is a jump in
# the codec's rates that more halvings would not cross
RESOLUTION = 1.001


class RateNotReachable(ValueError):
    """No parameter value brings the mean rate within the tolerance of the target."""


class RateMatch(NamedTuple):
    value: float
    mean_bpp: float


def mean_bpp(codec: Codec, faces: list[np.ndarray], value: float, advance: Callable[[int], object] = lambda n: None) -> float:
    """Mean payload rate of the faces coded at value; `advance(1)` after each face."""
    rates = []
    for face in faces:
        rates.append(codec.code(face, value).bpp)
        advance(1)
    return float(np.mean(rates))


def _midpoint(codec: Codec, a: float, b: float) -> float:
    return (a + b) // 2 if codec.integer else math.sqrt(a * b)  # ratios and rates are log-scaled


def steps_left(codec: Codec, a: float, b: float) -> int:
    """The most bisection trials left in the bracket [a, b]: halvings until an integer bracket
    holds neighbours, or a continuous one is narrower than RESOLUTION. The progress bar's total."""
    width = (b - a) if codec.integer else math.log(b / a) / math.log(RESOLUTION)
    return math.ceil(math.log2(width)) if width > 1 else 0


def match_rate(codec: Codec, faces: list[np.ndarray], target_bpp: float, tolerance: float = 0.05) -> RateMatch:
    """The parameter value whose mean rate over faces is closest to target_bpp (relative error at
    most tolerance); RateNotReachable if the range or an integer parameter's steps cannot get there."""
    if not faces:
        raise ValueError("rate matching needs at least one face")
    if target_bpp <= 0 or tolerance <= 0:
        raise ValueError(f"target_bpp and tolerance must be positive, got {target_bpp}, {tolerance}")
    # the total is the most trials the search can take (its two ends and every halving), lowered as
    # the bracket narrows or a continuous parameter lands early, so the ETA only shortens
    most = 2 + steps_left(codec, codec.low, codec.high)
    with progress.bar(most * len(faces), f"{codec.name} rate match ({len(faces)} faces a trial, at most {most} trials)",
                      unit="img") as trials:
        return _bisect(codec, faces, target_bpp, tolerance, trials)


def _bisect(codec: Codec, faces: list[np.ndarray], target_bpp: float, tolerance: float, trials: tqdm) -> RateMatch:
    """match_rate's search; each trial codes every face, counted on `trials`, whose total is set to
    the trials done and the most still to come (steps_left) after each one."""
    rates: dict[float, float] = {}

    def rate(value: float) -> float:
        if value not in rates:
            rates[value] = mean_bpp(codec, faces, value, trials.update)
            trials.set_postfix({codec.parameter: f"{value:g}", "bpp": f"{rates[value]:.4f}"})
        return rates[value]

    def expect(more: int) -> None:
        trials.total = (len(rates) + more) * len(faces)
        trials.refresh()

    def error(value: float) -> float:
        return abs(rate(value) / target_bpp - 1.0)

    a, b = codec.low, codec.high
    lowest, highest = sorted((rate(a), rate(b)))
    if not lowest * (1 - tolerance) <= target_bpp <= highest * (1 + tolerance):
        raise RateNotReachable(
            f"{codec.name}: target {target_bpp:.4f} bpp is outside the reachable mean rates "
            f"{lowest:.4f}..{highest:.4f} bpp ({codec.parameter} {codec.low:g}..{codec.high:g})"
        )
    while steps_left(codec, a, b):
        m = _midpoint(codec, a, b)
        if not codec.integer and error(m) <= tolerance * AIM:
            break
        if (rate(m) < target_bpp) == codec.rate_rises:
            a = m
        else:
            b = m
        expect(steps_left(codec, a, b))
    expect(0)
    best = min(rates, key=error)
    if error(best) > tolerance:
        raise RateNotReachable(
            f"{codec.name}: no {codec.parameter} gives a mean rate within {tolerance:.0%} of {target_bpp:.4f} bpp: "
            f"{codec.parameter}={a:g} gives {rate(a):.4f} bpp, {codec.parameter}={b:g} gives {rate(b):.4f} bpp"
        )
    return RateMatch(best, rates[best])
