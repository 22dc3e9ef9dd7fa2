"""cdfv-reproduce without running a reproduction: what it refuses before any work (other settings
in --out, qualities its preset has no codec for, a data folder of another layout), the goal check
of its summary page (never met at chance), its tables rounded for people, step times in run order,
and what a missed goal says the gpu preset changes."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cdfv.reproduction.cli import main
from cdfv.reproduction.presets import PRESETS
from cdfv.reproduction.steps import Evaluation, Layout, Steps
from cdfv.reproduction.summary import goal_rows, goal_verdict, preset_changes, results_table, step_times, table7_table


def lfw_layout(data: Path) -> Path:
    """data/lfw laid out as the command expects, with a one-genuine, one-impostor View 1 pairs file
    and placeholder files for the images it names."""
    (data / "lfw" / "meta").mkdir(parents=True)
    (data / "lfw" / "meta" / "pairsDevTest.txt").write_text("1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    for name, n in (("Ann", 2), ("Bob", 1)):
        (data / "lfw" / "deepfunneled" / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            (data / "lfw" / "deepfunneled" / name / f"{name}_{i:04d}.jpg").write_bytes(b"jpeg")
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


@pytest.mark.parametrize("preset, args, recorded", [("cpu", [], [1]), ("smoke", [], [1, 3]), ("cpu", ["--qualities", "1,3"], [1, 3])])
def test_a_run_trains_its_presets_qualities_unless_told_otherwise(tmp_path: Path, preset: str, args: list[str],
                                                                  recorded: list[int]) -> None:
    """The cpu preset fits two hours on 2 cores at q1 alone; --qualities still adds q3."""
    data = lfw_layout(tmp_path / "data")  # no CelebA folders: the run stops at its first step, after recording its settings
    result = CliRunner().invoke(main, ["--data", str(data), "--preset", preset, "--device", "cpu", "--out", str(tmp_path / "out"),
                                       *args])
    assert result.exit_code == 1 and "no such folder of CelebA identities" in result.output
    assert json.loads((tmp_path / "out" / "preset.json").read_text())["qualities"] == recorded


REPORTED_PAIRS = ("pairsDevTest", "pairs.txt")  # the LFW pairs files a report scores


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_every_recipe_choice_names_what_made_it_and_none_is_a_reported_pairs_file(name: str) -> None:
    """Issue 26: choices on development pairs only, and the report says which."""
    choices = dict(PRESETS[name].choices)
    for what in ("training photos", "codec recipe", "codec steps", "identity codec", "joint codec", "transplant junctions and epochs",
                 "transplant loss and tail", "dlib's face box"):
        assert any(c.startswith(what) for c in choices), f"{name}: no choice about {what}"
    for what, how in choices.items():
        assert how and not any(f in how for f in REPORTED_PAIRS), f"{name}: {what} was made on a reported pairs file: {how}"


def test_the_summary_page_names_the_pairs_each_choice_was_made_on(tmp_path: Path) -> None:
    text, evaluation = summary_page(tmp_path)
    section = text.split("## Choices and what made them")[1].split("\n## ")[0]
    assert f"(this run reports `{evaluation.pairs.name}`)" in section
    for what, how in PRESETS["cpu"].choices:
        assert f"- {what}: {how}" in section


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


@pytest.mark.parametrize("pairs, message", [
    # the second pair names Bob_0002, which the image root lacks
    ("1\nAnn\t1\t2\nAnn\t1\tBob\t2\n", "pairs.txt:3: names Bob__Bob_0002, but {images}/Bob/Bob_0002.jpg is absent"),
    ("probe,reference,label\nAnn__Ann_0001,Ann__Ann_0002,1\n\nAnn__Ann_0001,Bob__Bob_0002,0\n",
     "pairs.csv:4: names Bob__Bob_0002, but {images}/Bob/Bob_0002.jpg is absent"),
    ("probe,reference,label\nAnn__Ann_0001,Ann_0002,1\n", "pairs.csv:2: key 'Ann_0002' is not <person>__<image stem>"),
    ("probe,reference,label\nAnn__Ann_0001,Ann__x__y,1\n", "pairs.csv:2: key 'Ann__x__y' is not <person>__<image stem>"),
])
def test_a_pairs_file_naming_an_absent_image_or_a_bad_key_stops_before_any_training(tmp_path: Path, monkeypatch, pairs: str,
                                                                                     message: str) -> None:
    """Today's run read the images only in its evaluation half, after every training step."""
    import cdfv.reproduction.plan as plan

    monkeypatch.setattr(plan, "learn", lambda *args: pytest.fail("training started"))
    data = a_data_folder(tmp_path / "data")
    path = tmp_path / ("pairs.csv" if pairs.startswith("probe") else "pairs.txt")
    path.write_text(pairs)
    result = CliRunner().invoke(main, ["--data", str(data), "--pairs", str(path), "--preset", "smoke", "--device", "cpu",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert message.format(images=data / "lfw" / "deepfunneled") in result.output and "Traceback" not in result.output
    assert f"{path}:" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def metric(mode: str, q: int, tar: float, arch: str, auc_lo: float = 0.9, tar_lo: float | None = None,
           impostors: int = 500) -> dict:
    return {"mode": mode, "quality": q, "arch": arch, "codec": "bmshj2018-hyperprior-mse", "tar_at_far_1e-2": tar,
            "tar_at_far_1e-2_lo": tar - 0.02 if tar_lo is None else tar_lo, "auc_lo": auc_lo, "impostor_pairs": impostors}


def timed(solution: str, mode: str, q: int, ms: float, entropy: float, **extra: str) -> dict:
    """A table7.csv row as cdfv-eval complexity writes it: the time per pair without entropy decoding
    (the thesis's), and with it for the faces the path decodes (decoded: the probe, compressed: both)."""
    faces = {"decoded": 1, "compressed": 2}[mode]
    return {"solution": solution, "mode": mode, "quality": str(q), "ms_per_pair": str(ms), "entropy_ms_per_face": str(entropy),
            "ms_per_pair_with_entropy": str(ms + faces * entropy), **extra}


TABLE7 = [timed("cresnet39_bmshj2018-hyperprior_q1", "compressed", 1, 2.0, 0.5, gmac_true="0.151396352"),
          timed("dlib-resnet-v1_bmshj2018-hyperprior_q1", "decoded", 1, 29.0, 0.5),
          timed("cresnet39_bmshj2018-hyperprior_q3", "compressed", 3, 5.0, 1.0),
          timed("transplant-l2_bmshj2018-hyperprior_q3", "compressed", 3, 2.5, 1.0, gmac_true="0.05"),
          timed("dlib-resnet-v1_bmshj2018-hyperprior_q3", "decoded", 3, 19.0, 1.0)]


def test_goal_rows_compare_every_compressed_model_with_the_dlib_decoded_anchor_at_the_same_rate() -> None:
    metrics = [metric("compressed", 1, 0.90, "cresnet39"), metric("decoded", 1, 0.94, "dlib-resnet-v1"),
               metric("decoded", 1, 0.10, "resnet50"),  # another anchor at the same rate is not the goal's
               metric("compressed", 3, 0.50, "cresnet39"), metric("decoded", 3, 0.80, "dlib-resnet-v1"),
               metric("compressed", 3, 0.78, "transplant-l2")]
    q1, q3, q3_transplant = goal_rows(metrics, TABLE7, (1, 3, 6))
    # times with entropy decoding: 2 + 2 x 0.5 against 29 + 0.5; the thesis's convention 29 / 2 beside it
    assert q1 == ["q1", "cresnet39", "0.900", "0.940", "0.040", "met", "0.151", "3.0", "29.5", "9.8x", "14.5x", "met"]
    assert q3[1] == "cresnet39" and q3[5] == "missed by 0.250" and q3[6] == "-" and q3[9:] == ["2.9x", "3.8x", "missed"]
    # 19 / 2.5 = 7.6x as the thesis times it meets the goal; with entropy decoding, 20 / 4.5 = 4.4x does not
    assert q3_transplant[1:3] == ["transplant-l2", "0.780"] and q3_transplant[5] == "met"
    assert q3_transplant[7:] == ["4.5", "20.0", "4.4x", "7.6x", "missed"]
    for row in (q1, q3, q3_transplant):  # entropy decoding costs the compressed path more: both faces against one
        assert float(row[9].rstrip("x")) < float(row[10].rstrip("x"))
    assert goal_verdict([q1, q3, q3_transplant], (1, 3)) == "missed"  # at q3 every model misses one goal
    assert goal_verdict([q1, q3_transplant[:11] + ["met"]], (1, 3)) == "met"
    assert goal_verdict([q1], (1, 3)) == "not judged"  # nothing at q3
    assert goal_rows(metrics, TABLE7, (6, 8)) == [] and goal_verdict([], (6, 8)) == "not judged"  # no goal quality in the run
    old = [{k: v for k, v in r.items() if "entropy" not in k} for r in TABLE7]  # a table7.csv from before the column
    assert goal_rows(metrics, old, (1,))[0][7:] == ["-", "-", "-", "14.5x", "-"]


def test_the_joint_codecs_student_is_a_goal_row_of_its_own_timed_with_its_codec() -> None:
    """Its arch is the MSE codec's student's: the row names its codec, and Table 7's row of that
    codec (cdfv-eval complexity names it by variant) gives its time; the anchor stays the MSE codec's."""
    plain = {**metric("compressed", 1, 0.42, "dlib-transplant-level0"), "codec": "bmshj2018-hyperprior-mse"}
    joint = {**plain, "tar_at_far_1e-2": 0.55, "codec": "bmshj2018-hyperprior-mse-joint"}
    anchors = [metric("decoded", 1, 0.93, "dlib-resnet-v1"), {**metric("decoded", 1, 0.99, "dlib-resnet-v1"),
                                                             "codec": "bmshj2018-hyperprior-mse-id"}]
    table7 = [timed("dlib-resnet-v1_bmshj2018-hyperprior_q1", "decoded", 1, 29.0, 0.5),
              timed("dlib-resnet-v1_bmshj2018-hyperprior-id_q1", "decoded", 1, 29.0, 0.7),
              timed("dlib-transplant-level0_bmshj2018-hyperprior_q1", "compressed", 1, 2.0, 0.5),
              timed("dlib-transplant-level0_bmshj2018-hyperprior-joint_q1", "compressed", 1, 3.0, 0.6)]
    rows = goal_rows([joint, plain, *anchors], table7, (1,))
    assert [r[1:5] for r in rows] == [["dlib-transplant-level0", "0.420", "0.930", "0.510"],
                                      ["dlib-transplant-level0 (joint codec)", "0.550", "0.930", "0.380"]]
    assert [r[7:9] for r in rows] == [["3.0", "29.5"], ["4.2", "29.5"]]


@pytest.mark.parametrize("student, anchor, verdict", [
    # both at TAR 0: a gap of 0 is no result
    (metric("compressed", 1, 0.0, "cresnet39", auc_lo=0.47, tar_lo=0.0), metric("decoded", 1, 0.0, "dlib-resnet-v1", 0.48, 0.0),
     "not met: student at chance (AUC from 0.470, TAR from 0.000)"),
    # a student whose AUC interval reaches 0.5 is at chance, however close its TAR is
    (metric("compressed", 1, 0.05, "cresnet39", auc_lo=0.5), metric("decoded", 1, 0.06, "dlib-resnet-v1"),
     "not met: student at chance (AUC from 0.500, TAR from 0.030)"),
    # TAR@FAR=1e-2 at a random scorer's 0.01
    (metric("compressed", 1, 0.03, "cresnet39", tar_lo=0.01), metric("decoded", 1, 0.05, "dlib-resnet-v1"),
     "not met: student at chance (AUC from 0.900, TAR from 0.010)"),
    (metric("compressed", 1, 0.5, "cresnet39"), metric("decoded", 1, 0.52, "dlib-resnet-v1", auc_lo=0.45),
     "not met: anchor at chance (AUC from 0.450, TAR from 0.500)"),
    (metric("compressed", 1, 0.5, "cresnet39", impostors=60), metric("decoded", 1, 0.52, "dlib-resnet-v1", impostors=60),
     "not judged: student FAR 1e-2 not resolved: 60 impostors, needs 100"),
])
def test_the_goal_is_never_met_at_chance(student: dict, anchor: dict, verdict: str) -> None:
    (row,) = goal_rows([student, anchor], TABLE7, (1,))
    assert row[5] == verdict


def test_the_identity_codecs_criteria_are_judged_or_say_why_not() -> None:
    """Issue 27's done criteria: the identity codec's gap to the originals at q1 and its BD-rate
    against the MSE codec, the joint student's gain over the MSE codec's student of its junction."""
    from cdfv.reproduction.summary import identity_rows

    original = {**metric("original", None, 0.97, "dlib-resnet-v1"), "codec": None}
    id_q1 = {**metric("decoded", 1, 0.96, "dlib-resnet-v1"), "codec": "bmshj2018-hyperprior-mse-id", "bpp": 0.121}
    plain, joint = (metric("compressed", 1, tar, "dlib-transplant-level0") for tar in (0.42, 0.55))
    joint.update(codec="bmshj2018-hyperprior-mse-joint", bpp=0.12)
    bd = [{"method": "dlib-resnet-v1 decoded bmshj2018-hyperprior-mse-id", "metric": "TAR@FAR=1e-2", "bd_rate_percent": "-45.2"}]
    hevc = [{"method": "dlib-resnet-v1 decoded bmshj2018-hyperprior-mse-id", "metric": "TAR@FAR=1e-2", "bd_rate_percent": "",
             "bd_rate_reason": "the curves' TAR ranges do not overlap"}]
    gap, against_mse, against_hevc, gain = identity_rows([original, id_q1, plain, joint], bd, hevc, (1, 3))
    assert gap[1:] == ["q1 (0.121 bpp)", "0.960", "0.970", "-0.010", "within 0.02", "met"]
    assert against_mse[2] == "-45.2 %" and against_mse[-1] == "met"
    assert against_hevc[-1] == "not judged: the curves' TAR ranges do not overlap"
    assert gain[2:] == ["0.550", "0.420", "0.130", "at least +0.1", "met"]
    worse = {**id_q1, "tar_at_far_1e-2": 0.90}
    assert identity_rows([original, worse], [], [], (1,))[0][-1] == "missed (-0.070)"
    assert identity_rows([original, worse], [], [], (1,))[1][-1] == "not judged: no line dlib-resnet-v1 decoded " \
        "bmshj2018-hyperprior-mse-id in the report"
    few = {**joint, "impostor_pairs": 60}
    assert identity_rows([plain, few], [], [], (1,))[0][-1] == "not judged: joint student FAR 1e-2 not resolved: 60 impostors, needs 100"
    assert identity_rows([original, plain], [], [], (1, 3)) == []  # a run without the identity and joint codecs


def test_a_goal_without_intervals_is_not_judged() -> None:
    student, anchor = metric("compressed", 1, 0.9, "cresnet39"), metric("decoded", 1, 0.92, "dlib-resnet-v1")
    del student["auc_lo"]
    assert goal_rows([student, anchor], TABLE7, (1,))[0][5] == "not judged: student has no intervals"


def test_step_times_in_run_order_with_a_total(tmp_path: Path) -> None:
    steps = Steps(tmp_path)
    for name, seconds in (("link", 0.3), ("faces-lfw", 12.7), ("codec-q9", 100.0), ("codec-q78", 50.0)):
        steps.run(name, lambda: None)
        record = steps.record(name)
        (steps.dir / f"{name}.json").write_text(json.dumps({**record, "seconds": seconds}))
    again = Steps(tmp_path)  # a resumed run: every step done earlier, taken in the same order, not by name
    for name in ("link", "faces-lfw", "codec-q9", "codec-q78"):
        again.run(name, lambda: None)
    again.order.append("summary")  # the step writing the page, not finished while it writes
    assert step_times(again)[2:] == ["| link | 0.3 |", "| faces-lfw | 12.7 |", "| codec-q9 | 100.0 |", "| codec-q78 | 50.0 |",
                                     "| **total** | **163.0** (2.7 min) |"]


def test_table7_and_results_are_rounded_for_people() -> None:
    row = {"solution": "dlib-resnet-v1_original", "gmac_table7": "0.270854144", "gmac_true": "0.270854144",
           "kmac_per_px_table7": "5.398081632653061", "ms_per_pair": "76.86535634999245", "model_id": "dlib-resnet-v1:sha256-b0"}
    decoded = {**row, "solution": "x_q1", "gmac_table7": "21.661804544", "kmac_per_px_table7": "431.71644897959186",
               "ms_per_pair": "1229.8457015998792"}
    assert table7_table([row, decoded])[2:] == [
        "| dlib-resnet-v1_original | 0.271 | 0.271 | 5.4 | 76.9 | dlib-resnet-v1:sha256-b0 |",
        "| x_q1 | 21.662 | 0.271 | 431.7 | 1229.8 | dlib-resnet-v1:sha256-b0 |"]
    run = {"run": "dlib-resnet-v1_original", "mode": "original", "arch": "dlib-resnet-v1", "codec": None, "bpp": math.nan,
           "psnr": math.nan, "tar_at_far_1e-3": 0.926, "tar_at_far_1e-2": 0.968, "eer": 0.022000000000000002,
           "auc": 0.998316, "impostor_pairs": 500}
    coded = {**run, "run": "jpeg_q9", "mode": "decoded", "codec": "jpeg", "bpp": 0.31968123, "psnr": 34.02571, "impostor_pairs": 20}
    header, _, *rows = results_table([run, coded])
    assert header == "| run | mode | bpp | PSNR [dB] | TAR@FAR=1e-3 | TAR@FAR=1e-2 | EER | AUC |"
    assert rows == ["| dlib-resnet-v1_original | original | - | - | 0.926 (FAR 1e-3 not resolved: 500 impostors, needs 1000) "
                    "| 0.968 | 0.022 | 0.998 |",
                    "| jpeg_q9 | decoded | 0.320 | 34.03 | 0.926 (FAR 1e-3 not resolved: 20 impostors, needs 1000) "
                    "| 0.968 (FAR 1e-2 not resolved: 20 impostors, needs 100) | 0.022 | 0.998 |"]
    header, _, *rows = results_table([run, {**coded, "impostor_pairs": 500}])  # one impostor count: the note once, in the header
    assert header.startswith("| run | mode | bpp | PSNR [dB] | TAR@FAR=1e-3 (FAR 1e-3 not resolved: 500 impostors, needs 1000) | ")
    assert "not resolved" not in "".join(rows)


def test_what_the_gpu_preset_changes_is_read_from_the_presets() -> None:
    changes = preset_changes(PRESETS["cpu"], PRESETS["gpu"])
    assert "views per face 1 -> 4" in changes and not any(c.startswith("CelebA photos") for c in changes)  # all, both
    assert "whole-face codec steps (MSE and identity codecs) 150 -> 2000" in changes
    assert "student width 16 -> 64" in changes
    assert "codec training crop 128 -> 256" in changes
    assert preset_changes(PRESETS["gpu"], PRESETS["gpu"]) == []
    from dataclasses import replace

    plain = replace(PRESETS["gpu"], id_weight=None, joint_junction=None)  # a preset without the identity and joint codecs
    assert "identity term weight 18.6 -> none" in preset_changes(PRESETS["gpu"], plain)
    assert "joint codec junction none -> level0" in preset_changes(plain, PRESETS["gpu"])
    with pytest.raises(ValueError, match="does not train"):
        replace(PRESETS["gpu"], joint_junction="level2", transplant_junctions=("level0",))


CODEC_TRAINING = {"steps": 150, "start_weights": "untrained:seed0", "shards": "faces-dlib-resnet-v1", "batch_size": 8, "lr": 5e-5,
                  "lr_schedule": "constant", "patch": None, "lambda": 0.0018, "rate_target": None, "identity": None, "student": None}


def summary_page(tmp_path: Path, preset: str = "cpu", replicates: int = 20) -> tuple[str, Evaluation]:
    """The page written from a report, Table 7 and step records as a run leaves them."""
    from cdfv.eval.report import write_report
    from cdfv.reproduction.summary import write_reproduction_summary
    from report_helpers import LEARNED, cpu_preset_like

    layout = Layout(tmp_path / "data", tmp_path / "out")
    (tmp_path / "pairsDevTest.txt").write_text("1\nAnn\t1\t2\n")
    evaluation = Evaluation.of(layout.out, tmp_path / "pairsDevTest.txt", tmp_path / "lfw")
    files = [p for p in cpu_preset_like(tmp_path / "scores") if LEARNED in p.name or p.stem.endswith("original")]
    write_report(files, evaluation.report, replicates=replicates)
    (evaluation.report / "table7.csv").write_text(
        "solution,mode,quality,model_id,gmac_table7,gmac_true,kmac_per_px_table7,ms_per_pair,entropy_ms_per_face,"
        "ms_per_pair_with_entropy\n"
        "dlib-resnet-v1_bmshj2018-hyperprior_q1,decoded,1,dlib-id,10.105448448,2.771970048,201.39,194.03855048748255,"
        "13.504,207.54255048748255\n"
        "cresnet39_bmshj2018-hyperprior_q1,compressed,1,c-id,0.339091456,0.240787456,6.758,4.264711412508859,13.504,"
        "31.272711412508859\n")
    import torch

    for q in (1, 3):
        for path, training in ((layout.base_codec(q), {**CODEC_TRAINING, "patch": 128, "steps": 1000}),
                               (layout.codec(q), {**CODEC_TRAINING, "start_weights": "file:codec.pt:sha256-base"}),
                               (layout.codec(q, "id"), {**CODEC_TRAINING, "rate_target": 0.1234, "rate_weight": 1.7,
                                                        "identity": {"weight": 18.6, "distance": "cos", "map": None}})):
            path.parent.mkdir(parents=True)
            torch.save({"format": "cdfv-codec", "training": training}, path)
    learned, measured = Steps(layout.out), Steps(evaluation.root)
    learned.log.write_text("cdfv-train --task codec ...\n")
    measured.log.write_text("cdfv-prep run --dataset lfw ...\n")
    for steps, records in ((learned, {"link": {"celeba_photos": 8, "celeba_identities": 2, "natural": 1},
                                      "codec-q3": {}, "codec-q1": {}}),
                           (measured, {"link-lfw": {"pairs": 1000, "lfw_images": 1549, **evaluation.record()},
                                       "anchors": {"sets": [], "unreachable": []}})):
        for name, record in records.items():
            steps.run(name, lambda record=record: record)
    measured.order.append("summary")
    return write_reproduction_summary(layout, evaluation, PRESETS[preset], (1, 3), learned, measured).read_text(), evaluation


def test_the_summary_page_from_a_runs_files(tmp_path: Path) -> None:
    """Rounded, resolution notes, the goal's rule, the student judged at chance, step times in run order."""
    from cdfv.reproduction.summary import GOAL_RULE

    text, evaluation = summary_page(tmp_path)
    assert not re.search(r"\d\.\d{5,}", text)  # no 0.270854144
    assert "| 10.105 | 2.772 | 201.4 | 194.0 | 13.5 | 207.5 |" in text and "| 0.339 | 0.241 | 6.8 | 4.3 | 13.5 | 31.3 |" in text
    assert "| 207.5 | 6.6x | 45.5x | met |" in text  # the speed-up with entropy decoding, the thesis's beside it
    assert "| TAR@FAR=1e-3 (FAR 1e-3 not resolved: 500 impostors, needs 1000) | TAR@FAR=1e-2 |" in text
    assert GOAL_RULE in text and "| q1 | cresnet39 | 0.026 |" in text and "not met: student at chance" in text
    assert "The goal is missed with this preset's cuts." in text
    times = text.split("## Time per step")[1].split("##")[0]
    assert [line.split(" | ")[0] for line in times.splitlines() if line.startswith("| ") and "step" not in line] == \
        ["| link", "| codec-q3", "| codec-q1", "| link-lfw", "| anchors", "| **total**"]
    assert f"evaluated on `{evaluation.pairs}` (sha256 " in text and "1000 pairs of" in text
    weights = text.split("## Weights")[1].split("##")[0]  # how each codec was trained, read from its codec.pt
    assert "1000 steps from untrained:seed0 on faces-dlib-resnet-v1, batch 8, lr 5e-05 constant, 128x128 crops, lambda 0.0018; " \
           "then 150 steps from file:codec.pt:sha256-base on faces-dlib-resnet-v1, batch 8, lr 5e-05 constant, whole faces" in weights
    assert "- identity codec (the MSE codec's base recipe" in weights
    assert "rate held at 0.1234 bpp (rate weight ended at 1.7), identity term weight 18.6, cos" in weights
    commands = text.split("## Commands")[1]
    assert commands.index("cdfv-train --task codec") < commands.index("cdfv-prep run --dataset lfw")


def test_a_summary_whose_rows_are_all_not_judged_does_not_call_the_goal_missed(tmp_path: Path) -> None:
    """The smoke preset's page said "the goal is missed" though every row read "not judged"."""
    text, _ = summary_page(tmp_path, "smoke", replicates=0)  # no intervals: nothing can be judged
    goal = text.split("### The goal")[1].split("## Table 7")[0]
    rows = [line for line in goal.splitlines() if line.startswith("| q")]
    assert rows and all("| not judged: student has no intervals |" in row for row in rows)
    assert "The goal is not judged on this run" in goal and "goal is missed" not in text


def test_the_identity_and_joint_codecs_are_held_at_the_mse_codecs_rate_as_the_coder_codes_it(tmp_path: Path) -> None:
    """--rate-target steers each batch's rate as the coder codes it (its rounded latents'
    likelihoods), so the rate the reproduction hands it is that measure of the MSE codec, over the
    whole faces the codecs train on, spread evenly through the set: within a few per cent of the
    bytes CompressAI writes, far from the training loss's noisy estimate."""
    import numpy as np
    import torch

    from cdfv.pipeline.codecs import CodecSpec, load_codec, save_codec
    from cdfv.reproduction.plan import CODEC, training_rate
    from cdfv.shards import make_key, spec
    from cdfv.trainer.codec_train import face_rate, faces_rate, pad_faces
    from test_train_fixtures import write_set

    ramp = np.linspace(0, 255, 224, dtype=np.float32)
    faces = [np.stack([np.add.outer(ramp, ramp * k / 6) / 2, np.full((224, 224), 40.0 * k), ramp[None].repeat(224, 0)],
                      -1).clip(0, 255).astype(np.uint8) for k in range(6)]
    write_set(tmp_path, "faces-dlib-resnet-v1", "image", [{"__key__": make_key(f"p{k}", "0001"), "cls": k, "png": f}
                                                        for k, f in enumerate(faces)], [f"p{k}" for k in range(6)], 1)
    codec_spec = CodecSpec(CODEC, 1)
    model = load_codec(codec_spec, untrained=True, seed=3)[0]
    save_codec(tmp_path / "codec.pt", model, codec_spec)

    rate = training_rate(tmp_path, "faces-dlib-resnet-v1", tmp_path / "codec.pt", 1, limit=3)
    assert rate["faces"] == 3 and rate["weights"].startswith("file:codec.pt:sha256-")
    spread = [faces[0], faces[2], faces[4]]
    assert rate["bpp"] == pytest.approx(faces_rate(model, spread), rel=1e-9)
    x = pad_faces(torch.from_numpy(np.stack(spread)).permute(0, 3, 1, 2))
    with torch.no_grad():
        coded = model.compress(x)
    coded_bpp = sum(len(b) for strings in coded["strings"] for b in strings) * 8 / (3 * spec.FACE_PIXELS)
    assert rate["bpp"] == pytest.approx(coded_bpp, rel=0.05)
    model.train()  # the mode is the caller's; the noisy estimate of training is another number
    assert face_rate(model, x) == pytest.approx(rate["bpp"], rel=1e-9) and model.training
    torch.manual_seed(0)
    with torch.no_grad():
        noisy = sum(float(-torch.log2(lik).sum()) for lik in model(x)["likelihoods"].values()) / (3 * spec.FACE_PIXELS)
    assert noisy > 1.2 * coded_bpp
    with pytest.raises(ValueError, match="no face"):
        faces_rate(model, [])


def a_data_folder(root: Path) -> Path:
    """The data layout with placeholder files: enough for the steps that only link and read pairs."""
    data = lfw_layout(root)
    for folder, person in (("celeba-subset", "1001"), ("celeba-more", "2002")):
        (data / folder / person).mkdir(parents=True)
        (data / folder / person / "000001.jpg").write_bytes(b"jpeg")
    (data / "natural" / "kodak").mkdir(parents=True)
    (data / "natural" / "kodak" / "kodim01.png").write_bytes(b"png")
    for name, n in (("Ann", 2), ("Bob", 1), ("Cid", 1)):
        (data / "lfw" / "deepfunneled" / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            (data / "lfw" / "deepfunneled" / name / f"{name}_{i:04d}.jpg").write_bytes(b"jpeg")
    (data / "lfw" / "meta" / "other.txt").write_text("1\nAnn\t1\t2\nCid\t1\tAnn\t2\n")
    return data


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def assert_identity_and_joint_codecs_like_any_other(ran: list[list[str]], out: Path) -> None:
    """The commands of a smoke run (recorded): the MSE codec's base recipe continued on the whole
    taught faces; the identity codec from the same base, as many steps, at the continued codec's
    training rate; the joint codec from the continued codec with its student of the junction at
    that rate; LFW coded by each, anchors matched to the MSE and identity codecs, the joint student
    scored on its codec's latents, BD-rates against the MSE codec and HEVC-intra, Table 7 of all."""
    runs, preset = out / "runs", PRESETS["smoke"]
    trained = {value(a, "--out"): a for a in ran if a[0].startswith("--") and "--task" in a}
    assert set(trained) == {str(runs / f"codec-{v}q{q}") for v in ("base-", "", "id-", "joint-") for q in (1, 3)}
    teacher = next(a for a in ran if a[0] == "teacher" and value(a, "--input") == "faces")
    assert value(teacher, "--maps") == preset.joint_junction
    for q in (1, 3):
        mse, id_, joint = (trained[str(runs / f"codec-{v}q{q}")] for v in ("", "id-", "joint-"))
        assert value(mse, "--codec-weights") == value(id_, "--codec-weights") == str(runs / f"codec-base-q{q}" / "codec.pt")
        assert value(mse, "--shards") == value(id_, "--shards") == value(joint, "--shards") == "faces-dlib-resnet-v1"
        assert "--patch" not in mse and value(mse, "--max-steps") == value(id_, "--max-steps") == str(preset.continue_steps)
        assert "--id-weight" not in mse and "--rate-target" not in mse
        assert value(id_, "--id-weight") == str(preset.id_weight) and value(id_, "--variant") == "id"
        assert value(id_, "--rate-target") == value(joint, "--rate-target") == str(0.1 + q / 100)
        assert value(joint, "--codec-weights") == str(runs / f"codec-q{q}" / "codec.pt") and value(joint, "--variant") == "joint"
        assert value(joint, "--student") == str(runs / f"transplant-{preset.joint_junction}-q{q}" / "model.pt")
    coded = {value(a, "--weights"): value(a, "--outputs") for a in ran if a[0] == "run" and "--weights" in a and "lfw" in value(a, "--out")}
    assert coded == {str(runs / "codec-q{quality}" / "codec.pt"): "latents,decoded",
                     str(runs / "codec-id-q{quality}" / "codec.pt"): "decoded",
                     str(runs / "codec-joint-q{quality}" / "codec.pt"): "latents,decoded"}
    assert {value(a, "--match") for a in ran if a[0] == "anchor"} == {f"decoded-{v}q{q}" for v in ("", "id-") for q in (1, 3)}
    dlib = next(a for a in ran if a[0] == "run" and "--image-model" in a and value(a, "--image-model") == "dlib")
    assert {f"decoded-{v}q{q}" for v in ("", "id-", "joint-") for q in (1, 3)} <= set(dlib)
    assert f"{runs / 'codec-joint-q1' / 'student.pt'}=latents-joint-q1" in dlib
    reports = [a for a in ran if a[0] == "report"]
    assert [value(a, "--bd-anchor") for a in reports] == ["dlib-resnet-v1 decoded bmshj2018-hyperprior-mse"]  # no HEVC-intra
    table7 = next(a for a in ran if a[0] == "complexity")  # anchors were made (recorded), so no HEVC line to measure against
    assert [table7[i + 1] for i, a in enumerate(table7) if a == "--codec-weights"] == \
        [str(runs / f"codec-{v}q{{quality}}" / "codec.pt") for v in ("", "id-", "joint-")]
    assert str(runs / "codec-joint-q3" / "student.pt") in table7


def test_another_pairs_file_reuses_every_learned_model_and_codes_only_its_faces(tmp_path: Path, monkeypatch) -> None:
    """The commands each invocation would run (recorded, not run): the second pairs file trains
    nothing, prepares only the LFW images it names, and writes into its own evaluation folder."""
    import cdfv.reproduction.cli as cli
    import cdfv.reproduction.plan as plan

    ran: list[tuple[Path, str, list[str]]] = []

    def record(steps: Steps, group: object, prog: str, args: list) -> None:
        argv = [str(a) for a in args]
        ran.append((steps.log, prog, argv))
        Path(argv[argv.index("--out") + 1]).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(Steps, "command", record)
    monkeypatch.setattr(cli, "write_summary", lambda *args: {})
    monkeypatch.setattr(plan, "training_rate", lambda celeba, faces, weights, q: {"bpp": 0.1 + q / 100})  # read from latents not made here
    data, out = a_data_folder(tmp_path / "data"), tmp_path / "out"
    base = ["--data", str(data), "--preset", "smoke", "--device", "cpu", "--out", str(out)]
    first = CliRunner().invoke(main, base)
    assert first.exit_code == 0, first.output
    assert any(prog == "cdfv-train" for _, prog, _ in ran) and "learned this run: link, faces-celeba" in first.output
    assert_identity_and_joint_codecs_like_any_other([argv for _, _, argv in ran], out)
    learned = {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir()}
    ran.clear()
    second = CliRunner().invoke(main, [*base, "--pairs", str(data / "lfw" / "meta" / "other.txt")])
    assert second.exit_code == 0, second.output
    assert "learned this run: nothing" in second.output
    assert {p.name: p.stat().st_mtime_ns for p in (out / "steps").iterdir()} == learned
    assert {prog for _, prog, _ in ran} == {"cdfv-prep", "cdfv-eval"}
    (evaluation,) = [p for p in (out / "evals").iterdir() if p.name.startswith("other-")]
    assert {log for log, _, _ in ran} == {evaluation / "commands.sh"}
    assert all(str(evaluation) in argv[argv.index("--out") + 1] for _, _, argv in ran)
    linked = sorted(p.name for p in (evaluation / "work" / "lfw").rglob("*.jpg"))
    assert linked == ["Ann_0001.jpg", "Ann_0002.jpg", "Cid_0001.jpg"]  # the images other.txt names, not Bob's
    assert json.loads((evaluation / "evaluation.json").read_text())["pairs_file"].endswith("other.txt")
    assert len(list((out / "evals").iterdir())) == 2  # the first pairs file's evaluation is its own folder


def test_an_evaluation_continued_with_other_images_is_refused(tmp_path: Path) -> None:
    data, out = a_data_folder(tmp_path / "data"), tmp_path / "out"
    evaluation = Evaluation.of(out, data / "lfw" / "meta" / "pairsDevTest.txt", data / "lfw" / "deepfunneled")
    evaluation.root.mkdir(parents=True)
    (evaluation.root / "evaluation.json").write_text(json.dumps({**evaluation.record(), "images": "/elsewhere"}))
    result = CliRunner().invoke(main, ["--data", str(data), "--preset", "smoke", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2 and "holds an evaluation of this pairs file with other settings (images differ" in result.output


@pytest.mark.parametrize("spelling", ["symlink", "relative", "trailing slash"])
def test_the_same_data_folder_spelled_another_way_continues_the_run(tmp_path: Path, monkeypatch, spelling: str) -> None:
    """--data, --pairs and --images naming the same folders and file by another path (a symlink, a
    path relative to the working directory, a trailing slash) continue the run: the settings
    compare what the paths name, not how they are written (the commands are recorded, not run)."""
    import cdfv.reproduction.cli as cli
    import cdfv.reproduction.plan as plan

    monkeypatch.setattr(Steps, "command", lambda steps, group, prog, args: Path(str(args[list(map(str, args)).index("--out") + 1])).mkdir(
        parents=True, exist_ok=True))
    monkeypatch.setattr(cli, "write_summary", lambda *args: {})
    monkeypatch.setattr(plan, "training_rate", lambda celeba, faces, weights, q: {"bpp": 0.1})  # read from latents the recorded commands never make
    data, out = a_data_folder(tmp_path / "data"), tmp_path / "out"
    first = CliRunner().invoke(main, ["--data", str(data), "--preset", "smoke", "--device", "cpu", "--out", str(out)])
    assert first.exit_code == 0, first.output
    monkeypatch.chdir(tmp_path)
    other = {"symlink": str(tmp_path / "link"), "relative": "data", "trailing slash": f"{data}/"}[spelling]
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    again = CliRunner().invoke(main, ["--data", other, "--pairs", f"{other}/lfw/meta/pairsDevTest.txt", "--images",
                                      f"{other}/lfw/deepfunneled", "--preset", "smoke", "--device", "cpu", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "learned this run: nothing" in again.output
    moved = tmp_path / "copy"
    moved.mkdir()
    (moved / "lfw").symlink_to(data / "lfw", target_is_directory=True)  # the same pairs and images, another data folder
    refused = CliRunner().invoke(main, ["--data", str(moved), "--preset", "smoke", "--device", "cpu", "--out", str(out)])
    assert refused.exit_code == 2 and "holds a run with other settings (data differ" in refused.output
