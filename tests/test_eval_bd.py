"""Bjontegaard deltas of the report's rate curves against a decoded anchor, and the per-codec
rate-distortion JSON in CompressAI's format, from real scores files."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cdfv.eval.bd import NO_FOLDS, bd_metric, bd_rate, compare, learned_codec
from cdfv.eval.cli import main
from cdfv.eval.report import write_report
from cdfv.eval.runs import load_run, rate_distortion
from cdfv.eval.scores import SCHEMA, write_scores

RATES = [0.1, 0.2, 0.4, 0.8]
TAR = [0.3, 0.5, 0.6, 0.65]
LEARNED = "bmshj2018-hyperprior-mse"
PAIRS_FILE = "/data/lfw/meta/pairsDevTest.txt"
PER_PROBE = np.array([0.9, 1.0, 1.1, 0.95, 1.05, 1.0, 0.8, 1.2, 1.0, 1.0])  # each probe's share of the run's rate


# --- the deltas on plain curves ---------------------------------------------------------------

def test_curve_against_itself_is_zero() -> None:
    assert bd_rate(RATES, TAR, RATES, TAR).value == pytest.approx(0.0, abs=1e-9)
    assert bd_metric(RATES, TAR, RATES, TAR).value == pytest.approx(0.0, abs=1e-12)


def test_rate_factor_gives_its_bd_rate() -> None:
    delta = bd_rate(RATES, TAR, [0.8 * r for r in RATES], TAR)
    assert delta.available and delta.value == pytest.approx(-20.0, abs=1e-9)
    assert (delta.lo, delta.hi) == (min(TAR), max(TAR))  # integrated over the metric range both cover
    assert bd_rate(RATES, TAR, [1.25 * r for r in RATES], TAR).value == pytest.approx(25.0, abs=1e-9)


def test_metric_shift_gives_its_bd_metric() -> None:
    delta = bd_metric(RATES, TAR, RATES, [t + 0.05 for t in TAR])
    assert delta.value == pytest.approx(0.05, abs=1e-12) and (delta.lo, delta.hi) == (0.1, 0.8)
    assert bd_rate(RATES, TAR, RATES, [t + 0.05 for t in TAR]).value < 0  # better at equal rate: fewer bits


def test_points_given_in_any_order() -> None:
    order = [2, 0, 3, 1]
    shifted = bd_rate([RATES[i] for i in order], [TAR[i] for i in order], [0.8 * RATES[i] for i in order], [TAR[i] for i in order])
    assert shifted.value == pytest.approx(-20.0, abs=1e-9)


def test_two_points_are_a_straight_line_in_log_rate() -> None:
    """Two points per curve: a line in log10(bpp); its mean over the overlap is the mean of its ends."""
    anchor_r, anchor_m = [0.1, 1.0], [0.5, 0.7]  # m = 0.7 + 0.2 log10(r)
    test_r, test_m = [0.1, 1.0], [0.62, 0.62]
    assert bd_metric(anchor_r, anchor_m, test_r, test_m).value == pytest.approx(0.62 - 0.6, abs=1e-12)
    # partial overlap: rates 0.1..0.316 of the anchor, where its mean is 0.5 + 0.2 * 0.25
    assert bd_metric(anchor_r, anchor_m, [0.01, 10 ** -0.5], [0.62, 0.62]).value == pytest.approx(0.62 - 0.55, abs=1e-12)
    assert bd_rate(anchor_r, anchor_m, [0.08, 0.8], anchor_m).value == pytest.approx(-20.0, abs=1e-9)


def test_three_points_are_computed() -> None:
    delta = bd_rate(RATES[:3], TAR[:3], [0.8 * r for r in RATES[:3]], TAR[:3])
    assert delta.available and delta.value == pytest.approx(-20.0, abs=1e-9)
    assert bd_metric(RATES[:3], TAR[:3], RATES, TAR).value == pytest.approx(0.0, abs=1e-3)


def test_one_point_is_not_available() -> None:
    delta = bd_rate(RATES, TAR, RATES[:1], TAR[:1])
    assert not delta.available and math.isnan(delta.value) and delta.reason == "method has 1 rate point(s), needs 2"


def test_no_overlap_is_not_available() -> None:
    far = [r * 100 for r in RATES]
    delta = bd_metric(RATES, TAR, far, TAR)
    assert math.isnan(delta.value) and delta.reason.startswith("no overlap: anchor covers bpp 0.1..0.8, method 10..80")
    higher = bd_rate(RATES, TAR, RATES, [t + 0.5 for t in TAR])
    assert math.isnan(higher.value) and higher.reason.startswith("no overlap: anchor covers metric")


def test_metric_that_does_not_rise_gives_no_bd_rate() -> None:
    dip = [0.3, 0.5, 0.45, 0.65]
    assert "metric does not rise strictly with rate (0.3, 0.5, 0.45, 0.65)" in bd_rate(RATES, TAR, RATES, dip).reason
    assert bd_metric(RATES, TAR, RATES, dip).available  # at equal rate the metric is still a function of rate
    assert "has two points at the same rate" in bd_metric(RATES, TAR, [0.1, 0.1, 0.4, 0.8], TAR).reason


def test_learned_codec_names() -> None:
    assert learned_codec(LEARNED) and learned_codec("cheng2020-attn-ms-ssim")
    assert not learned_codec("jpeg-quality") and not learned_codec("hevc-intra-qp") and not learned_codec(None)


def _row(mode: str, codec: str, bpp: float, tar: float, accuracy: float = math.nan) -> dict:
    return {"mode": mode, "codec": codec, "bpp": bpp, "tar_at_far_1e-3": tar, "tar_at_far_1e-2": tar, "accuracy": accuracy}


def test_compare_anchor_choice_and_accuracy() -> None:
    lines = {
        f"resnet50 decoded {LEARNED}": [_row("decoded", LEARNED, r, t, t) for r, t in zip(RATES, TAR)],
        f"cresnet39 compressed {LEARNED}": [_row("compressed", LEARNED, 0.8 * r, t, t) for r, t in zip(RATES, TAR)],
        "resnet50 decoded jpeg-quality": [_row("decoded", "jpeg-quality", r, t) for r, t in zip(RATES, TAR)],
    }
    rows = {(r["method"], r["metric"]): r for r in compare(lines)}
    assert {m for m, _ in rows} == {f"cresnet39 compressed {LEARNED}", "resnet50 decoded jpeg-quality"}  # not against itself
    latent = rows[(f"cresnet39 compressed {LEARNED}", "10-fold accuracy")]
    assert latent["anchor"] == f"resnet50 decoded {LEARNED}" and latent["anchor_choice"] == "decoded, same codec"
    assert latent["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-9) and latent["points"] == latent["anchor_points"] == 4
    jpeg = rows[("resnet50 decoded jpeg-quality", "10-fold accuracy")]
    assert jpeg["anchor_choice"] == "the only learned-codec decoded line"
    assert math.isnan(jpeg["bd_rate_percent"]) and jpeg["bd_rate_reason"] == jpeg["bd_metric_reason"] == NO_FOLDS
    chosen = compare(lines, "resnet50 decoded jpeg-quality")
    assert {r["anchor"] for r in chosen} == {"resnet50 decoded jpeg-quality"} and {r["anchor_choice"] for r in chosen} == {"--bd-anchor"}
    with pytest.raises(ValueError, match="--bd-anchor 'resnet50 decoded jpeg' is not a line of this report; lines: resnet50"):
        compare(lines, "resnet50 decoded jpeg")
    alone = compare({"resnet50 decoded jpeg-quality": lines["resnet50 decoded jpeg-quality"]})
    assert alone[0]["anchor"] == "" and alone[0]["bd_rate_reason"].startswith("no learned-codec decoded line in the report")


# --- the report from scores files -------------------------------------------------------------

def _scores(path: Path, mode: str, arch: str, codec: str | None, quality: float | None, bpp: float,
            genuine_above: int, meta: dict | None = None, recorded_quality: bool = True) -> Path:
    """A scores file of 10 genuine and 10 impostor pairs over 10 probes; impostors score -0.5 and
    genuine_above genuine pairs 0.9, so TAR@FAR=1e-3 (and 1e-2) = genuine_above / 10."""
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    decoded = mode == "decoded" and recorded_quality
    for label in (True, False):
        for i in range(10):
            j = i if label else i % 5  # probes p0..p4 are in three pairs, p5..p9 in one
            values = {"pair": i + (0 if label else 10), "fold": -1, "probe_key": f"p{j}", "reference_key": f"{'r' if label else 's'}{i}",
                      "label": label, "score": (0.9 if i < genuine_above else -0.9) if label else -0.5, "missing": False,
                      "missing_reason": None, "probe_bpp": bpp * PER_PROBE[j] if codec else math.nan,
                      "probe_psnr": 30.0 + bpp * 10 + 0.1 * j if decoded else math.nan,
                      "probe_ms_ssim": 0.9 + bpp / 10 - 0.001 * j if decoded else math.nan,
                      "mode": mode, "codec": codec, "quality": quality, "model_id": f"{arch}-id", "arch": arch,
                      "run": f"{arch}_{codec}_q{quality:g}" if codec else f"{arch}_original"}
            for name in SCHEMA.names:
                rows[name].append(values[name])
    write_scores(path, pa.Table.from_pydict(rows, schema=SCHEMA), {"pairs_file": PAIRS_FILE, "mode": mode, **(meta or {})})
    return path


@pytest.fixture(scope="module")
def score_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("bd-scores")
    files = [_scores(d / "original.parquet", "original", "resnet50", None, None, math.nan, 9)]
    for q, (r, k) in enumerate(zip(RATES, (3, 5, 6, 8)), start=1):
        weights = {"codec": {"name": "bmshj2018-hyperprior", "quality": q, "weights": f"compressai-zoo:bmshj2018-hyperprior-{q}"}}
        files.append(_scores(d / f"decoded-q{q}.parquet", "decoded", "resnet50", LEARNED, q, r, k, weights))
        files.append(_scores(d / f"latent-q{q}.parquet", "compressed", "cresnet39", LEARNED, q, 0.8 * r, k))
    for quality, r, k in ((10, 0.15, 4), (30, 0.3, 6), (60, 0.6, 5)):  # dips: no BD-rate, a BD-metric
        files.append(_scores(d / f"jpeg-{quality}.parquet", "decoded", "resnet50", "jpeg-quality", quality, r, k))
    return files


@pytest.fixture(scope="module")
def report(score_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("bd-report")
    return out, write_report(score_files, out, replicates=0)


def test_report_writes_bd_from_scores_files(report: tuple[Path, list[Path]]) -> None:
    tmp_path, written = report
    assert {tmp_path / "bd.csv", tmp_path / "bd.json", tmp_path / f"rd-{LEARNED}.json", tmp_path / "rd-jpeg-quality.json"} <= set(written)
    with open(tmp_path / "bd.csv") as f:
        rows = {(r["method"], r["metric"]): r for r in csv.DictReader(f)}
    latent = f"cresnet39 compressed {LEARNED}"
    assert {m for m, _ in rows} == {latent, "resnet50 decoded jpeg-quality"}
    for metric in ("TAR@FAR=1e-3", "TAR@FAR=1e-2"):
        r = rows[(latent, metric)]
        assert r["anchor"] == f"resnet50 decoded {LEARNED}" and r["anchor_choice"] == "decoded, same codec"
        assert float(r["bd_rate_percent"]) == pytest.approx(-20.0, abs=1e-3) and r["bd_rate_reason"] == ""
        assert (float(r["bd_rate_metric_lo"]), float(r["bd_rate_metric_hi"])) == (0.3, 0.8)
        assert float(r["bd_metric"]) > 0  # same TAR at 80 % of the rate: higher TAR at equal rate
    assert rows[(latent, "10-fold accuracy")]["bd_rate_reason"] == NO_FOLDS and rows[(latent, "10-fold accuracy")]["bd_rate_percent"] == ""
    jpeg = rows[("resnet50 decoded jpeg-quality", "TAR@FAR=1e-3")]
    assert jpeg["anchor_choice"] == "the only learned-codec decoded line" and jpeg["points"] == "3" and jpeg["anchor_points"] == "4"
    assert "method's metric does not rise strictly with rate" in jpeg["bd_rate_reason"]
    assert (float(jpeg["bd_metric_bpp_lo"]), float(jpeg["bd_metric_bpp_hi"])) == pytest.approx((0.15, 0.6))
    document = json.loads((tmp_path / "bd.json").read_text())
    assert document["interpolation"] == "akima" and len(document["rows"]) == 6
    assert [r["bd_rate_percent"] for r in document["rows"] if r["metric"] == "10-fold accuracy"] == [None, None]
    md = (tmp_path / "metrics.md").read_text()
    assert "## Bjontegaard deltas against the decoded anchor" in md
    assert f"| {latent} | resnet50 decoded {LEARNED} (decoded, same codec) | TAR@FAR=1e-3 | 4/4 | -20.00 % |" in md
    assert f"n/a: {NO_FOLDS}" in md and "with 2 they are joined by a straight line" in md


def test_report_command_bd_anchor(score_files: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", *map(str, score_files), "--bootstrap", "0", "--out", str(tmp_path),
                                       "--bd-anchor", "resnet50 decoded jpeg-quality"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "bd.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {f"resnet50 decoded {LEARNED}", f"cresnet39 compressed {LEARNED}"}
    assert {(r["anchor"], r["anchor_choice"]) for r in rows} == {("resnet50 decoded jpeg-quality", "--bd-anchor")}
    result = CliRunner().invoke(main, ["report", *map(str, score_files), "--bootstrap", "0", "--out", str(tmp_path),
                                       "--bd-anchor", "resnet50 original"])
    assert result.exit_code != 0 and "Error: --bd-anchor 'resnet50 original' is not a line of this report" in result.output
    assert "Traceback" not in result.output


def test_rate_distortion_json_matches_the_runs(report: tuple[Path, list[Path]]) -> None:
    tmp_path, _ = report
    data = json.loads((tmp_path / f"rd-{LEARNED}.json").read_text())
    assert set(data) == {"name", "description", "results"} and data["name"] == LEARNED
    results = data["results"]
    # each probe counts once although p0..p4 are in three pairs
    np.testing.assert_allclose(results["bpp"], [r * PER_PROBE.mean() for r in RATES], rtol=1e-12)
    np.testing.assert_allclose(results["psnr-rgb"], [30.0 + r * 10 + 0.45 for r in RATES], rtol=1e-12)
    np.testing.assert_allclose(results["ms-ssim-rgb"], [0.9 + r / 10 - 0.0045 for r in RATES], rtol=1e-12)
    assert results["quality"] == [1.0, 2.0, 3.0, 4.0]
    for name in ("10 distinct probe faces", PAIRS_FILE, "q1 compressai-zoo:bmshj2018-hyperprior-1", "q4 compressai-zoo:bmshj2018-hyperprior-4"):
        assert name in data["description"]
    jpeg = json.loads((tmp_path / "rd-jpeg-quality.json").read_text())
    assert jpeg["results"]["bpp"] == sorted(jpeg["results"]["bpp"]) and jpeg["results"]["quality"] == [10.0, 30.0, 60.0]
    assert "Codec weights: not recorded in the scores files" in jpeg["description"]
    assert not list(tmp_path.glob("rd-None*")) and len(list(tmp_path.glob("rd-*.json"))) == 2  # decoded runs only


def test_rate_distortion_json_plots_with_compressai(report: tuple[Path, list[Path]], tmp_path: Path) -> None:
    """CompressAI's own plot utility reads the files (matplotlib's Agg backend, set by the report)."""
    from compressai.utils.plot.__main__ import main as compressai_plot

    files = [p for p in report[1] if p.name.startswith("rd-")]
    assert len(files) == 2
    for metric in ("psnr", "ms-ssim"):
        image = tmp_path / f"plot-{metric}.png"
        compressai_plot(["-f", *map(str, files), "-m", metric, "-o", str(image)])
        assert image.stat().st_size > 10_000 and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_distortion_counts_a_codec_quality_once(score_files: list[Path], tmp_path: Path) -> None:
    runs = [load_run(p, replicates=0) for p in score_files]
    other = load_run(_scores(tmp_path / "vgg-q1.parquet", "decoded", "vgg", LEARNED, 1, RATES[0], 2), replicates=0)
    assert rate_distortion([*runs, other]) == rate_distortion(runs)
    elsewhere = _scores(tmp_path / "vgg-q1-other.parquet", "decoded", "vgg", LEARNED, 1, RATES[0], 2, {"pairs_file": "pairs.txt"})
    with pytest.raises(ValueError, match=f"vgg-q1-other.parquet: {LEARNED} q1 has other probe faces than .*decoded-q1.parquet"):
        rate_distortion([*runs, load_run(elsewhere, replicates=0)])


def test_rate_distortion_leaves_out_points_without_quality(score_files: list[Path], tmp_path: Path) -> None:
    runs = [load_run(p, replicates=0) for p in score_files]
    bare = load_run(_scores(tmp_path / "jpeg-90.parquet", "decoded", "resnet50", "jpeg-quality", 90, 1.0, 9, recorded_quality=False), replicates=0)
    jpeg = rate_distortion([*runs, bare])["jpeg-quality"]
    assert jpeg["results"]["quality"] == [10.0, 30.0, 60.0] and jpeg["description"].endswith("Left out (no PSNR/MS-SSIM recorded): 90.")
