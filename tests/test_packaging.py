"""Packaging: one `cdfv` import namespace over the top-level folders, nothing else installed; every
imported package declared; the README's install beside an existing torch keeps that torch."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
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


# ---- dependencies -------------------------------------------------------------------------------

SOURCES = ("pipeline", "trainer", "eval", "shards", "cdfv", "tests", "benchmarks")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_distributions() -> set[str]:
    """Every distribution pyproject.toml names: dependencies and every extra."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with the standard library")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonical(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files importing it, over the source folders (standard library,
    cdfv itself and the test helpers left out)."""
    local = {"cdfv", *PARTS} | {p.stem for p in (REPO / "tests").glob("*.py")}
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {n.split(".")[0] for n in names} - local - set(sys.stdlib_module_names):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def module_owners() -> dict[str, set[str]]:
    """Top-level module -> installed distributions holding it, from their RECORD files (top_level.txt
    can be wrong: dlib-bin's names only its extension module)."""
    owners: dict[str, set[str]] = {}
    for dist in importlib.metadata.distributions():
        tops = {line.split(",", 1)[0].split("/", 1)[0] if "/" in line.split(",", 1)[0] else line.split(".", 1)[0]
                for line in (dist.read_text("RECORD") or "").splitlines()}
        for top in tops - {""}:
            if not top.endswith((".dist-info", ".data")) and top != "..":
                owners.setdefault(top, set()).add(canonical(dist.metadata["Name"]))
    return owners


def test_every_third_party_import_is_declared() -> None:
    declared, owners = declared_distributions(), module_owners()
    imports = third_party_imports()
    assert {"torch", "compressai", "cv2", "dlib", "pyarrow"} <= set(imports)  # the scan sees what is there
    undeclared = {module: (sorted(owners.get(module, {"not installed"})), sorted(files)) for module, files in imports.items()
                  if not owners.get(module, set()) & declared}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


# ---- installing beside a torch that is already there (README "Installing"; needs the package registry) ----

FREEZE_TORCH = "pip freeze | grep -E '^(torch|torchvision)==' > constraints.txt"
INSTALL_CONSTRAINED = "pip install -c constraints.txt -e ."


def pip_plan(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """What `pip install ARGS` would install here (name -> version), from pip's own dry run; nothing
    is installed."""
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    plan = json.loads(report.read_text())["install"] if done.returncode == 0 else []
    return done, {canonical(p["metadata"]["name"]): p["metadata"]["version"] for p in plan}


@pytest.mark.slow
def test_install_keeps_the_torch_already_installed(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    assert FREEZE_TORCH in readme and INSTALL_CONSTRAINED in readme
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    pins = [line for line in freeze.splitlines() if re.match(r"^(torch|torchvision)==", line)]  # the README's grep
    assert {p.split("==")[0] for p in pins} == {"torch", "torchvision"}, pins
    (tmp_path / "constraints.txt").write_text("\n".join(pins) + "\n")

    for recipe in ([], ["-c", "constraints.txt"]):  # CPU recipe (torch first, then cdfv) and the constraints file
        done, plan = pip_plan(tmp_path, *recipe, "-e", str(REPO))
        assert done.returncode == 0, done.stderr[-2000:]
        assert "cdfv" in plan and not {"torch", "torchvision"} & set(plan), plan

    # a requirement that needs another torch: pip would replace this one, unless the constraints stop it
    installed = dict(p.split("==") for p in pins)
    older = "torchvision<" + ".".join(installed["torchvision"].split(".")[:2])  # an older minor, made for an older torch
    done, plan = pip_plan(tmp_path, "-e", str(REPO), older)
    assert done.returncode == 0, done.stderr[-2000:]
    assert plan.get("torch") not in (None, installed["torch"]), plan
    done, plan = pip_plan(tmp_path, "-c", "constraints.txt", "-e", str(REPO), older)
    assert done.returncode != 0 and "conflicting dependencies" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_the_default_install_resolves_without_backtracking(tmp_path: Path) -> None:
    """The README's first command, `pip install -e '.[test]'`, resolved as in a fresh virtual
    environment (--ignore-installed; nothing is installed): pip takes one release of each package.
    Backtracking (pip downloads a release, finds it needs what a ceiling rules out, and tries an
    older one) means pyproject.toml lacks a pin."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--report",
                           str(tmp_path / "report.json"), "-e", f"{REPO}[test]"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    backtracked = re.findall(r"pip is looking at multiple versions of (\S+)", done.stdout + done.stderr)
    assert not backtracked, f"pip backtracked over {backtracked}: pin their newest compatible release in pyproject.toml"
