"""cdfv-reproduce without running a reproduction: what it refuses before any work (other settings
in --out, qualities its preset has no codec for, a data folder of another layout), the goal check
of its summary page, and what a missed goal says the gpu preset changes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cdfv.eval.reproduce import PRESETS, main
from cdfv.eval.summary import goal_rows, preset_changes


def lfw_layout(data: Path) -> Path:
    """data/lfw laid out as the command expects, with a one-genuine, one-impostor View 1 pairs file."""
    (data / "lfw" / "meta").mkdir(parents=True)
    (data / "lfw" / "deepfunneled").mkdir()
    (data / "lfw" / "meta" / "pairsDevTest.txt").write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    return data


def test_a_rerun_with_other_settings_is_refused_naming_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    before = {"name": "smoke", "student_width": 4}
    (out / "preset.json").write_text(json.dumps(before))
    data = lfw_layout(tmp_path / "data")
    result = CliRunner().invoke(main, ["--data", str(data), "--preset", "cpu", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2
    assert "holds a run with other settings" in result.output and "student_width" in result.output
    assert json.loads((out / "preset.json").read_text()) == before  # the earlier run's record is kept


def test_qualities_without_a_codec_in_the_preset_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data", str(tmp_path), "--qualities", "1,2", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "trains codecs for [1, 3, 6, 8]" in result.output
    assert not (tmp_path / "out").exists()


def test_a_data_folder_without_celeba_identities_stops_in_one_line(tmp_path: Path) -> None:
    data = lfw_layout(tmp_path / "data")
    result = CliRunner().invoke(main, ["--data", str(data), "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{data / 'celeba-subset'}: no such folder of CelebA identities" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("case, args, message", [
    ("no lfw folder", [], "pairsDevTest.txt:0: cannot read"),
    ("unreadable pairs", ["--pairs", "garbage.txt"], "garbage.txt:1: header"),
    ("missing image root", ["--images", "nowhere"], "nowhere: no such folder of LFW images"),
    ("qualities not integers", ["--qualities", "a,b"], "--qualities a,b: give comma-separated integers"),
])
def test_bad_pairs_images_or_qualities_stop_before_any_work_in_one_line(tmp_path: Path, case: str, args: list[str], message: str) -> None:
    (tmp_path / "garbage.txt").write_text("garbage line here\n")
    args = [str(tmp_path / a) if a in ("garbage.txt", "nowhere") else a for a in args]
    data = tmp_path / "data"
    data.mkdir() if case == "no lfw folder" else lfw_layout(data)
    result = CliRunner().invoke(main, ["--data", str(data), "--preset", "smoke", "--device", "cpu",
                                       "--out", str(tmp_path / "out"), *args])
    assert result.exit_code in (1, 2), case
    assert message in result.output and "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()


def metric(mode: str, q: int, tar: float, arch: str) -> dict:
    return {"mode": mode, "quality": q, "arch": arch, "codec": "bmshj2018-hyperprior-mse", "tar_at_far_1e-2": tar}


def test_goal_rows_compare_the_student_with_the_dlib_decoded_anchor_at_the_same_rate() -> None:
    metrics = [metric("compressed", 1, 0.90, "cresnet39"), metric("decoded", 1, 0.94, "dlib-resnet-v1"),
               metric("decoded", 1, 0.10, "resnet50"),  # another anchor at the same rate is not the goal's
               metric("compressed", 3, 0.50, "cresnet39"), metric("decoded", 3, 0.80, "dlib-resnet-v1")]
    table7 = [{"mode": "compressed", "quality": "1", "ms_per_pair": "2.0"}, {"mode": "decoded", "quality": "1", "ms_per_pair": "20.0"},
              {"mode": "compressed", "quality": "3", "ms_per_pair": "5.0"}, {"mode": "decoded", "quality": "3", "ms_per_pair": "20.0"}]
    q1, q3 = goal_rows(metrics, table7, (1, 3, 6))
    assert q1[0] == "q1" and abs(q1[3] - 0.04) < 1e-9 and q1[4] == "met" and q1[7] == "10.0x" and q1[8] == "met"
    assert q3[4] == "missed by 0.250" and q3[7] == "4.0x" and q3[8] == "missed"
    assert goal_rows(metrics, table7, (6, 8)) == []  # no goal quality in the run


def test_what_the_gpu_preset_changes_is_read_from_the_presets() -> None:
    changes = preset_changes(PRESETS["cpu"], PRESETS["gpu"])
    assert "CelebA photos per identity 4 -> all" in changes
    assert "student width 16 -> 64" in changes
    assert "codec training crop 128 -> 256" in changes
    assert preset_changes(PRESETS["gpu"], PRESETS["gpu"]) == []
