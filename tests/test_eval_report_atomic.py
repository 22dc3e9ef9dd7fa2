"""cdfv-eval writes its report as a whole: a disk that fills mid-PNG (simulated, and for real under
a file-size limit), an error or a kill leaves the previous report byte for byte, or no report; no
temporary folder and no empty file stays behind; other tools' files beside the report are kept."""
from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from cdfv.eval.cli import main
from cdfv.eval.report import write_report

from report_helpers import cpu_preset_like


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    """An earlier report's scores (dlib and ResNet50 on JPEG) and a later one's (JPEG 2000 too): they differ in every file."""
    files = cpu_preset_like(tmp_path_factory.mktemp("scores"))
    earlier = [p for p in files if "jpeg-quality" in p.name or p.stem.endswith("original")]
    return earlier, earlier + [p for p in files if "jpeg2000" in p.name]


@pytest.fixture(scope="module")
def previous(two_sets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The earlier scores' report, written once; each test takes a copy."""
    return write_report(two_sets[0], tmp_path_factory.mktemp("previous") / "report", replicates=0)[0].parent


def copy_of(report: Path, parent: Path) -> Path:
    shutil.copytree(report, parent / "report")
    return parent / "report"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(parent: Path) -> list[str]:
    """Temporary folders of a swap and temporary files beside the report, and empty files, anywhere
    under parent (a lock file holding its last holder's name is neither)."""
    temporary = [p.name for p in parent.iterdir() if re.search(r"\.(tmp|old)", p.name)]
    empty = [str(p) for p in parent.rglob("*") if p.is_file() and p.stat().st_size == 0]
    return temporary + empty


def half_then_full_disk(target: str):
    """Figure.savefig that writes half the PNG of `target` and fails as a full disk does."""
    real = Figure.savefig

    def savefig(fig: Figure, path: Path, **kwargs) -> None:
        if Path(path).name != target:
            return real(fig, path, **kwargs)
        real(fig, path, **kwargs)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return savefig


def test_a_disk_full_mid_plot_keeps_the_previous_report(two_sets, previous: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = copy_of(previous, tmp_path)
    (out / "table7.csv").write_text("solution,ms_per_pair\nx,1.5\n")  # another tool's file beside the report
    before = snapshot(out)
    monkeypatch.setattr(Figure, "savefig", half_then_full_disk("roc.png"))
    with pytest.raises(OSError) as failure:
        write_report(two_sets[1], out, replicates=0)
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(out / "roc.png")
    assert snapshot(out) == before  # not the new tables beside the old plots, not half a PNG
    assert leftovers(tmp_path) == []


def test_the_command_says_which_file_in_one_line(two_sets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    earlier, _ = two_sets
    out = tmp_path / "report"
    monkeypatch.setattr(Figure, "savefig", half_then_full_disk("score_histograms.png"))
    result = CliRunner().invoke(main, ["report", *map(str, earlier), "--bootstrap", "0", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Error: {out / 'score_histograms.png'}: No space left on device; {out} is left as it was" in result.output
    assert not out.exists() and leftovers(tmp_path) == []  # no earlier report: none at all, not a part of one


def test_a_real_write_failure_under_a_file_size_limit(two_sets, previous: Path, tmp_path: Path) -> None:
    """The kernel refuses the write past RLIMIT_FSIZE (EFBIG), as a full disk refuses it (ENOSPC)."""
    out = copy_of(previous, tmp_path)
    before = snapshot(out)
    tables = max(len(v) for k, v in before.items() if not k.endswith(".png"))
    plots = min(len(v) for k, v in before.items() if k.endswith(".png"))
    assert tables < plots
    limit = (tables + plots) // 2  # every table fits, no plot does
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        from cdfv.eval.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    result = subprocess.run([sys.executable, "-c", script, "report", *map(str, two_sets[1]), "--bootstrap", "0", "--out", str(out)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and f"{out}/" in result.stderr and f"{out} is left as it was" in result.stderr
    assert snapshot(out) == before
    assert leftovers(tmp_path) == []


def test_a_rewrite_replaces_every_report_file_and_keeps_other_tools_files(two_sets, tmp_path: Path) -> None:
    earlier, later = two_sets
    out = tmp_path / "report"
    write_report(later, out, replicates=0)
    assert (out / "rd-jpeg2000-ratio.json").exists()
    (out / "table7.csv").write_text("solution\nx\n")
    (out / "README.md").write_text("# summary\n")
    written = write_report(earlier, out, replicates=0)
    names = {p.name for p in out.iterdir()}
    assert names == {p.name for p in written} | {"table7.csv", "README.md"}
    assert "rd-jpeg2000-ratio.json" not in names  # a stale file of the earlier report goes with it
    assert (out / "table7.csv").read_text() == "solution\nx\n" and (out / "README.md").read_text() == "# summary\n"
    assert leftovers(tmp_path) == []


def test_a_folder_inside_the_report_folder_is_refused_before_any_work(two_sets, tmp_path: Path) -> None:
    earlier, _ = two_sets
    (tmp_path / "results" / "scores").mkdir(parents=True)
    result = CliRunner().invoke(main, ["report", *map(str, earlier), "--bootstrap", "0", "--out", str(tmp_path / "results")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{tmp_path / 'results' / 'scores'}: a folder inside an output folder that is replaced as a whole" in result.output
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["scores"] and leftovers(tmp_path) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_leftovers_are_cleared_by_the_next_write(two_sets, previous: Path, tmp_path: Path) -> None:
    out = copy_of(previous, tmp_path)
    before = snapshot(out)
    pid = dead_pid()
    half = tmp_path / f".report.tmp-{pid}-0badc0de"  # killed while building: half a report and an empty PNG
    half.mkdir()
    (half / "metrics.md").write_text("| run |")
    (half / "roc.png").write_bytes(b"")
    busy = tmp_path / f".report.tmp-{os.getppid()}-0badc0de"  # a live writer's (our parent's): left alone
    busy.mkdir()
    write_report(two_sets[0], out, replicates=0)  # the same scores: the same bytes
    assert snapshot(out) == before and leftovers(tmp_path) == [busy.name]
    busy.rmdir()

    os.rename(out, tmp_path / f".report.old-{pid}-0badc0de")  # killed between the two renames of a swap
    (tmp_path / f".report.tmp-{pid}-0badc0de").mkdir()
    write_report(two_sets[0], out, replicates=0)
    assert snapshot(out) == before and leftovers(tmp_path) == []
