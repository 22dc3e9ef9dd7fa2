"""Progress bars for every long step, one way: tqdm on stderr with rate and ETA, so the JSON
summaries and tables on stdout stay clean. A bar shows while the "cdfv" logger passes INFO, so
`--quiet` (and a program that silences cdfv's logger) hides bars and messages alike."""
from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm


def shown() -> bool:
    return logging.getLogger("cdfv").isEnabledFor(logging.INFO)


def bar(total: float | None, desc: str, unit: str = "it", initial: float = 0, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar counting `unit`s towards `total` (None: unknown), updated by the caller per batch."""
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not (enabled and shown()), **kwargs)
