"""Packaging: one `cdfv` import namespace over the top-level folders, nothing else installed."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

PARTS = ("pipeline", "trainer", "eval", "shards")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source")  # a copy of the tracked files: the build leaves build/ behind
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return next(out.glob("cdfv-*.whl"))


def test_wheel_installs_only_the_cdfv_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"cdfv"}
    for part in PARTS:
        assert f"cdfv/{part}/__init__.py" in names
    assert "cdfv/pipeline/cli.py" in names and "cdfv/shards/README.md" in names
    for part in ("pipeline", "trainer", "eval"):
        assert f"cdfv/{part}/__main__.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "cdfv-prep = cdfv.pipeline.cli:main" in text and "cdfv-train = cdfv.trainer.cli:main" in text


def test_no_top_level_part_is_importable_outside_the_checkout(tmp_path: Path) -> None:
    code = ("import importlib.util as u, cdfv.pipeline, cdfv.trainer, cdfv.eval, cdfv.shards;"
            f"print([n for n in {PARTS!r} if u.find_spec(n)])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("part, title", [("pipeline", "Materialise"), ("trainer", "Train cResNet39"), ("eval", "Face verification")])
def test_python_dash_m_runs_the_commands(tmp_path: Path, part: str, title: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"cdfv.{part}", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert title in done.stdout
