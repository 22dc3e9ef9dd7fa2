"""What software on what machine made an output, so a figure can be traced back to it: cdfv's
version and, run from a checkout, its git commit; the versions of the libraries that shape the
numbers; Python; the CPU and GPUs. Read from package metadata and the OS, never by importing torch,
and computed once per process."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from cdfv import __version__

CHECKOUT = Path(__file__).resolve().parents[1]  # the repository root when cdfv runs from a checkout (editable install)
LIBRARIES = {"torch": ("torch",), "compressai": ("compressai",), "dlib": ("dlib-bin", "dlib")}  # name -> distributions


def _installed(distributions: tuple[str, ...]) -> str | None:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any] | None:
    """The checkout's commit and whether tracked files differ from it; None for an installed wheel."""
    if not (CHECKOUT / ".git").exists() or not (CHECKOUT / "pyproject.toml").is_file():
        return None
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """NVIDIA GPUs from the driver's /proc entries (Linux); elsewhere from torch, if it is loaded."""
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            names += [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("Model:")]
        except OSError:
            continue
    if not names and "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return names


@functools.cache
def provenance() -> dict[str, Any]:
    """cdfv's version and commit, library versions, Python and the machine's CPU and GPUs."""
    return {
        "cdfv": __version__,
        "git": git_state(),
        **{name: _installed(dists) for name, dists in LIBRARIES.items()},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
    }


def describe(p: dict[str, Any] | None = None) -> str:
    """One line for people: `cdfv 0.1.0 (commit 1a2b3c4, uncommitted changes), torch 2.5.1, ...`."""
    p = p or provenance()
    git = p.get("git")
    where = f" (commit {git['commit'][:7]}{', uncommitted changes' if git.get('dirty') else ''})" if git else ""
    libraries = ", ".join(f"{name} {p.get(name) or 'absent'}" for name in LIBRARIES)
    machine = p["cpu"] + (f" ({p['cpu_count']} CPUs)" if p.get("cpu_count") else "") + "".join(f", {g}" for g in p.get("gpus") or [])
    return f"cdfv {p['cdfv']}{where}, {libraries}, Python {p['python']}; {machine}"
