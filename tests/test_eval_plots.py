"""The report's figures read back as matplotlib objects, on 26 runs shaped like the CPU preset's:
one colour per codec and one marker and dash per face model in every figure, log-bpp axes,
legends off the data, ROC panels, histograms over the data's range, labelled baselines inside the
axes, one reconstruction line per codec; and the rounded Markdown beside full-precision CSV."""
from __future__ import annotations

import colorsys
import csv
import dataclasses
import math
import re
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from cdfv.eval.markdown import cell, note_column
from cdfv.eval.plot_style import ORIGINAL_COLOR, Styles
from cdfv.eval.plots import (GENUINE_COLOR, IMPOSTOR_COLOR, MAX_CURVES, figures, histogram_rows, metrics_vs_rate, roc_figure,
                             roc_panels)
from cdfv.eval.report import write_report
from cdfv.eval.runs import Run, load_runs, natural_key, one_pairs_file, rate_distortion

from report_helpers import CODECS, LEARNED, cpu_preset_like

ARCHS = ("cresnet39", "dlib-resnet-v1", "resnet50")


@pytest.fixture(scope="module")
def score_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return cpu_preset_like(tmp_path_factory.mktemp("cpu-like"))


@pytest.fixture(scope="module")
def runs(score_files: list[Path]) -> list[Run]:
    return load_runs(score_files, replicates=0)


@pytest.fixture(scope="module")
def drawn(runs: list[Run]) -> dict[str, Figure]:
    made = figures(runs, rate_distortion(runs), one_pairs_file(runs))
    for fig in made.values():
        FigureCanvasAgg(fig).draw()  # legends and text placed as in the PNG
    return made


def _hue(color: object) -> float:
    return colorsys.rgb_to_hsv(*mcolors.to_rgb(color))[0]


def _lines(fig: Figure) -> list:
    """Every drawn data line with a legend label (not guides or error-bar caps), an error bar's
    data line under its container's label."""
    found = []
    for ax in fig.axes:
        for container in ax.containers:
            if isinstance(container, ErrorbarContainer):
                container.lines[0].set_label(container.get_label())
        found += [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    return found


def test_runs_are_in_natural_order(score_files: list[Path], runs: list[Run]) -> None:
    names = [r.name for r in runs]
    assert [p.stem for p in score_files] != names  # the glob lists q81 before q9, qp12 before qp27 by text
    assert names == sorted(names, key=natural_key)
    jpeg = [n for n in names if "jpeg-quality" in n and n.startswith("dlib")]
    assert jpeg == [f"dlib-resnet-v1_jpeg-quality_q{q}" for q in (18, 29, 81, 87)]
    assert natural_key("cresnet39_q9") < natural_key("cresnet39_q78") and natural_key("ratio_q21.9811") < natural_key("ratio_q75.1")


def test_one_colour_per_codec_and_one_look_per_face_model_in_every_figure(runs: list[Run], drawn: dict[str, Figure]) -> None:
    styles = Styles.of(runs)
    colours = {codec: mcolors.to_hex(c) for codec, c in styles.codecs.items()}
    assert set(colours) == set(CODECS) and len(set(colours.values())) == len(CODECS)
    assert mcolors.to_hex(ORIGINAL_COLOR) not in colours.values()
    looks = {}  # face model -> (marker, dash) as each figure draws it
    for line in _lines(drawn["metrics_vs_bpp.png"]):
        arch, mode, *codec = line.get_label().split(" ")
        colour = colours[codec[0]] if codec else mcolors.to_hex(ORIGINAL_COLOR)  # "<arch> original": a baseline
        assert mcolors.to_hex(line.get_color()) == colour, line.get_label()
        looks.setdefault(arch, set()).add((line.get_marker() if codec else None, str(line.get_linestyle())))
    for line in _lines(drawn["quality_vs_bpp.png"]):
        assert mcolors.to_hex(line.get_color()) == colours[line.get_label()]
    for line in _lines(drawn["roc.png"]):  # a run: its codec's hue, shaded by rate; its face model's dash
        label = line.get_label()
        arch = label.split(" ")[0]
        codec = next((c for c in CODECS if c in line.axes.get_title()), None)
        if label.endswith("original"):
            assert mcolors.to_hex(line.get_color()) == mcolors.to_hex(ORIGINAL_COLOR)
        else:
            assert _hue(line.get_color()) == pytest.approx(_hue(colours[codec]), abs=0.02), label
        looks.setdefault(arch, set()).add((None, str(line.get_linestyle())))
    dashes = {arch: {d for _, d in found} for arch, found in looks.items()}
    assert set(dashes) == set(ARCHS) and all(len(d) == 1 for d in dashes.values())  # each model one dash everywhere
    assert len({d.pop() for d in dashes.values()}) == len(ARCHS)  # and the models' dashes differ
    markers = {arch: {m for m, _ in found if m} for arch, found in looks.items()}
    assert all(len(m) == 1 for m in markers.values()) and len({m.pop() for m in markers.values()}) == len(ARCHS)


def test_no_two_curves_of_a_panel_look_alike(drawn: dict[str, Figure]) -> None:
    for ax in drawn["roc.png"].axes:
        looks = [(mcolors.to_hex(line.get_color()), str(line.get_linestyle())) for line in ax.get_lines()
                 if not line.get_label().startswith("_")]
        assert len(looks) == len(set(looks)), ax.get_title()


def test_legends_lie_outside_every_axes(drawn: dict[str, Figure]) -> None:
    for name, fig in drawn.items():
        renderer = fig.canvas.get_renderer()
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        assert legends, name
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                if ax.get_visible() and ax.axison:
                    assert not box.overlaps(ax.get_window_extent(renderer)), (name, ax.get_title())


def test_rate_is_on_a_log_axis_wherever_it_is_plotted(drawn: dict[str, Figure]) -> None:
    for name in ("metrics_vs_bpp.png", "quality_vs_bpp.png"):
        labels = set()
        for ax in drawn[name].axes:
            assert ax.get_xscale() == "log", name
            lo, hi = ax.get_xlim()
            assert 0.25 < lo < 0.32 and 1.15 < hi < 1.35  # around the data's rates (0.32-1.13 bpp), not a 0-1 frame
            labels |= {t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()}
        assert {"0.4", "0.5", "0.7", "1"} <= labels, (name, labels)  # plain numbers, enough to read a rate off


def test_a_single_rate_gets_an_axis_around_it(runs: list[Run]) -> None:
    """One quality (a small run): the axis is widened around it, not a zero-width frame."""
    one = [r for r in runs if r.mode == "original" or r.name == "dlib-resnet-v1_jpeg-quality_q18"]
    fig = metrics_vs_rate(one, Styles.of(one))
    FigureCanvasAgg(fig).draw()
    rate = next(r.row["bpp"] for r in one if r.mode != "original")
    for ax in fig.axes[2:]:
        lo, hi = ax.get_xlim()
        assert lo < rate < hi and hi / lo > 1.3
        assert len([t for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi and t.get_text()]) >= 2


def test_baselines_are_labelled_distinct_lines_inside_the_axes(runs: list[Run], drawn: dict[str, Figure]) -> None:
    originals = {r.row["arch"]: r for r in runs if r.mode == "original"}
    for ax in drawn["metrics_vs_bpp.png"].axes:
        flat = [line for line in ax.get_lines() if line.get_label().endswith(" original")]
        assert len(flat) == 2 and len({str(line.get_linestyle()) for line in flat}) == 2  # not two identical black dashes
        lo, hi = ax.get_ylim()
        for line in flat:
            y = line.get_ydata()[0]
            assert list(line.get_ydata()) == [y, y] and lo < y < hi
            metric = next(m for m, t in (("tar_at_far_1e-3", "TAR@FAR=1e-3"), ("tar_at_far_1e-2", "TAR@FAR=1e-2"),
                                         ("eer", "EER"), ("auc", "AUC")) if ax.get_title().startswith(t))
            assert y == originals[line.get_label().split(" ")[0]].row[metric]
        texts = [t for t in ax.texts if t.get_text().endswith(" original")]
        assert sorted(t.get_text() for t in texts) == sorted(line.get_label() for line in flat)
        renderer = drawn["metrics_vs_bpp.png"].canvas.get_renderer()
        for text in texts:
            assert ax.get_window_extent(renderer).contains(*text.get_window_extent(renderer).p0)


def test_roc_goes_into_panels_per_codec_past_one_palette(runs: list[Run], drawn: dict[str, Figure]) -> None:
    panels = roc_panels(runs)
    assert len(runs) > MAX_CURVES and [title for title, _ in panels] == sorted(CODECS, key=natural_key)
    for title, members in panels:
        assert {r.name for r in members if r.mode == "original"} == {"dlib-resnet-v1_original", "resnet50_original"}
        assert {r.row["codec"] for r in members if r.mode != "original"} == {title}
    shown = [ax for ax in drawn["roc.png"].axes if ax.axison]
    assert [ax.get_title() for ax in shown] == [t for t, _ in panels]
    assert sum(len([line for line in ax.get_lines() if not line.get_label().startswith("_")]) for ax in shown) == \
        len(runs) + 2 * (len(panels) - 1)  # every run once, the originals in every panel
    few = [r for r in runs if r.row["codec"] in (None, "jpeg-quality")]
    assert roc_panels(few) == [("", few)]
    one_codec = [r for r in runs if r.row["codec"] in (None, LEARNED)]
    assert [t for t, _ in roc_panels(one_codec)] == list(ARCHS)  # one codec: a panel per face model
    assert len([ax for ax in roc_figure(few, Styles.of(few)).axes if ax.axison]) == 1


def test_histograms_span_the_data_and_the_figure_stays_a_page(runs: list[Run], drawn: dict[str, Figure]) -> None:
    fig = drawn["score_histograms.png"]
    width, height = fig.get_size_inches()
    assert width <= 12 and height <= 14  # 26 runs: a row per plot line, not 9 rows of 3
    shown = [ax for ax in fig.axes if ax.axison]
    in_order = [run for _, members in histogram_rows(runs) for run in members]
    assert len(shown) == len(in_order) == len(runs) and len(histogram_rows(runs)) == 7
    for ax, run in zip(shown, in_order):
        scores = [s for r in runs if r.row["arch"] == run.row["arch"] for s in r.scores]
        pad = 0.02 * (max(scores) - min(scores))
        assert ax.get_xlim() == pytest.approx((min(scores) - pad, max(scores) + pad)), run.name  # its model's range
    dlib = [ax for ax, run in zip(shown, in_order) if run.row["arch"] == "dlib-resnet-v1"]
    assert all(ax.get_xlim()[0] > 0.6 for ax in dlib)  # dlib's cosines, not -1..1


def test_original_faces_only_draw_no_rate_axes(runs: list[Run], tmp_path: Path, score_files: list[Path]) -> None:
    originals = [r for r in runs if r.mode == "original"]
    assert metrics_vs_rate(originals, Styles.of(originals)) is None
    written = write_report([p for p in score_files if p.stem.endswith("_original")], tmp_path / "report", replicates=0)
    assert {p.name for p in written} >= {"roc.png", "score_histograms.png", "metrics.md"}
    assert not {"metrics_vs_bpp.png", "quality_vs_bpp.png"} & {p.name for p in written}
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in written)


def test_reconstruction_quality_is_one_line_per_codec(drawn: dict[str, Figure]) -> None:
    for ax in drawn["quality_vs_bpp.png"].axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert sorted(labels) == sorted(CODECS)  # dlib's and ResNet50's decoded q1..q8 are the same faces: one line


def test_markdown_is_rounded_and_the_csv_keeps_every_digit(score_files: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    write_report(score_files, out, replicates=20)
    md = (out / "metrics.md").read_text()
    table = [line for line in md.split("## Bjontegaard")[0].splitlines() if line.startswith("| ")]
    numbers = "\n".join(" | ".join(line.split(" | ")[1:]) for line in table)  # past the run names (q21.9811)
    assert len(table) == 1 + 26 and not re.search(r"\d\.\d{4,}", numbers)
    assert "TAR@FAR=1e-3 [95% CI] (FAR 1e-3 not resolved: 500 impostors, needs 1000)" in table[0]
    assert "TAR@FAR=1e-2 [95% CI] |" in table[0]  # 500 impostors resolve FAR 1e-2
    with open(out / "metrics.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    jpeg = rows["dlib-resnet-v1_jpeg-quality_q18"]
    assert len(jpeg["bpp"].split(".")[1]) > 6 and f"| {cell(float(jpeg['bpp']), 3)} |" in md
    assert jpeg["tar_at_far_1e-3_note"] == "FAR 1e-3 not resolved: 500 impostors, needs 1000" and jpeg["tar_at_far_1e-2_note"] == ""


def test_cells_round_for_people_and_notes_stay_with_their_numbers() -> None:
    assert [cell(v) for v in (0.270854144, 5.398081632653061, 197.65930612244898, 1229.8457, 0.0041134)] == \
        ["0.271", "5.40", "198", "1230", "0.00411"]
    assert (cell(0.9680000001, 3), cell(math.nan), cell(None, missing="n/c"), cell(7), cell("dlib")) == \
        ("0.968", "-", "n/c", "7", "dlib")
    assert note_column("TAR", ["1.000", "0.900"], ["FAR 1e-3 not resolved: 20 impostors, needs 1000", ""]) == \
        ("TAR", ["1.000 (FAR 1e-3 not resolved: 20 impostors, needs 1000)", "0.900"])
    assert note_column("TAR", ["1.000", "0.900"], ["n", "n"]) == ("TAR (n)", ["1.000", "0.900"])


def test_every_figure_and_table_names_the_pairs_file_it_comes_from(runs: list[Run], drawn: dict[str, Figure],
                                                                    score_files: list[Path], tmp_path: Path) -> None:
    assert len(drawn) == 4
    assert {fig.get_suptitle() for fig in drawn.values()} == {"LFW pairs: pairsDevTest.txt"}
    files = write_report(score_files[:2], tmp_path / "report", replicates=0)
    assert (tmp_path / "report" / "metrics.md").read_text().startswith("Pairs: pairsDevTest.txt. Made by cdfv")
    with open(tmp_path / "report" / "metrics.csv") as f:
        assert {row["pairs_file"] for row in csv.DictReader(f)} == {"pairsDevTest.txt"}
    assert files


def test_a_report_over_two_pairs_files_is_refused_naming_both(score_files: list[Path], tmp_path: Path) -> None:
    """Scores of the same run names on another pairs file (View 2 against View 1) compare nothing."""
    import pyarrow.parquet as pq

    from cdfv.eval.scores import read_scores, write_scores

    table, meta = read_scores(score_files[1])
    other = tmp_path / "other.parquet"
    write_scores(other, table, {**meta, "pairs_file": "/data/pairs.txt", "pairs_sha256": "ab" * 32})
    assert pq.read_metadata(other).num_rows == table.num_rows
    with pytest.raises(ValueError, match=r"other.parquet: scored on pairs.txt \(sha256 abababababab\), but .* on "
                                         r"pairsDevTest.txt; a report covers one pairs file"):
        write_report([score_files[0], other], tmp_path / "report", replicates=0)
    assert not (tmp_path / "report").exists()


@pytest.fixture(scope="module")
def few(runs: list[Run]) -> list[Run]:
    """The two original-face runs on 10 pairs each: one narrow row of panels, counts of a few pairs."""
    return [dataclasses.replace(r, scores=r.scores[::100], labels=r.labels[::100]) for r in runs if r.mode == "original"]


def _drawn_histograms(few: list[Run]) -> Figure:
    fig = figures(few, {}, "pairsDevTest.txt (sha256 0123456789ab)")["score_histograms.png"]
    FigureCanvasAgg(fig).draw()
    return fig


def test_histogram_counts_have_integer_ticks(drawn: dict[str, Figure], few: list[Run]) -> None:
    for fig in (drawn["score_histograms.png"], _drawn_histograms(few)):
        for ax in (ax for ax in fig.axes if ax.axison):
            lo, hi = ax.get_ylim()
            ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
            assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks  # pairs, not 2.5 of them


def test_the_histogram_legend_leaves_the_pairs_caption_readable(drawn: dict[str, Figure], few: list[Run]) -> None:
    for fig in (drawn["score_histograms.png"], _drawn_histograms(few)):
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        assert not legend.get_window_extent(renderer).overlaps(fig._suptitle.get_window_extent(renderer))


def test_overlapping_histograms_are_outlines_that_do_not_blend(drawn: dict[str, Figure]) -> None:
    """Two filled translucent histograms mix into a third colour the legend does not explain."""
    bars = [patch for ax in drawn["score_histograms.png"].axes for patch in ax.patches]
    assert bars and not any(patch.get_fill() for patch in bars)
    colours = {mcolors.to_hex(patch.get_edgecolor()) for patch in bars}
    assert colours == {mcolors.to_hex(IMPOSTOR_COLOR), mcolors.to_hex(GENUINE_COLOR)}


def test_a_codecs_decoded_and_compressed_points_stand_apart(runs: list[Run], drawn: dict[str, Figure]) -> None:
    fig = drawn["metrics_vs_bpp.png"]
    rates = {r.name: r.row["bpp"] for r in runs}
    shifts, looks = {}, {}
    for container in fig.axes[0].containers:
        line = container.lines[0]
        arch, mode, codec = container.get_label().split(" ")
        names = sorted((r.name for r in runs if r.row["arch"] == arch and r.mode == mode and r.row["codec"] == codec),
                       key=lambda n: rates[n])
        ratio = np.asarray(line.get_xdata()) / np.array([rates[n] for n in names])
        assert ratio == pytest.approx(np.full(len(names), ratio[0]))  # one shift per line: its shape is kept
        shifts[container.get_label()] = ratio[0]
        looks[mode] = mcolors.to_hex(line.get_markerfacecolor()) == mcolors.to_hex(line.get_color())
    assert len(set(np.round(list(shifts.values()), 6))) == len(shifts)  # no two lines at one x
    assert looks == {"decoded": True, "compressed": False}  # filled against open markers
    stated = float(re.search(r"up to \u00b1([\d.]+) %", fig.get_supxlabel()).group(1))
    assert max(abs(s - 1) for s in shifts.values()) * 100 == pytest.approx(stated, abs=0.05)
    assert 0 < stated < 10
