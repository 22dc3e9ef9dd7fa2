"""Shared fixtures. Real images come from one setting: $CDFV_TEST_DATA (default ../shared/data
beside the checkout); tests that need them skip with the reason when it is absent. CPU threads are
capped at $CDFV_THREADS (default 1 here)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from cdfv import threads

# One CPU thread per library unless asked otherwise ($CDFV_THREADS), set before any test imports torch: the suite
# runs on shared 2-core machines, where two OpenMP threads per process spin against each other's work.
os.environ.setdefault(threads.ENV, "1")
threads.cap(threads.limit())

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "CDFV_TEST_DATA"


def data_root() -> Path:
    return Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_root()
    if not (root / "lfw").is_dir():
        pytest.skip(f"real test images absent: {root}/lfw not found (set ${DATA_ENV})")
    return root


@pytest.fixture(scope="session")
def lfw_root(shared_data: Path) -> Path:
    return shared_data / "lfw" / "deepfunneled"


@pytest.fixture(scope="session")
def lfw_meta(shared_data: Path) -> Path:
    return shared_data / "lfw" / "meta"


@pytest.fixture(scope="session")
def celeba_root(shared_data: Path) -> Path:
    root = shared_data / "celeba-subset"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each reason tests were skipped for, with how many, without -rs: a newcomer without the data
    folder reads why a hundred tests skip and what to set, in one line instead of a line a test."""
    reasons = Counter(str(r.longrepr[2]).removeprefix("Skipped: ") for r in terminalreporter.stats.get("skipped", [])
                      if isinstance(r.longrepr, tuple))
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count} test{'s' if count > 1 else ''} skipped: {reason}")
