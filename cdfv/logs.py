"""Messages go through `logging`, one logger per module under "cdfv", so a program using cdfv as a
library silences or redirects them as it does any library's (`logging.getLogger("cdfv")`). The
commands call `log_to_stderr` first: messages on stderr, results (JSON summaries, tables) on stdout.
"""
from __future__ import annotations

import logging
import sys
from typing import TextIO


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes, so a caller that swaps it (click's
    test runner, a notebook) still gets the messages."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def log_to_stderr(level: int = logging.INFO) -> None:
    """The "cdfv" logger's records at `level` and above on stderr, as bare messages; calling it
    again only changes the level."""
    logger = logging.getLogger("cdfv")
    logger.setLevel(level)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        logger.addHandler(StderrHandler())
