"""Complexity: Table 7's operations column reproduced, the MACs actually done beside it, and the
timed steps doing the real work."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cdfv.eval.complexity import (
    Timing, decode_faces, synthesis_transform, kmac_per_pixel, pair_step, thesis_solutions_macs, time_step, untrained_embedder,
)
from cdfv.pipeline.codecs import CodecSpec

TABLE7_GMAC = {
    "resnet50_original": 3.89,
    "resnet50_bmshj2018-hyperprior_q1": 13.55,
    "resnet50_bmshj2018-hyperprior_q3": 13.55,
    "resnet50_bmshj2018-hyperprior_q6": 25.3,
    "resnet50_bmshj2018-hyperprior_q8": 25.3,
    "cresnet39_bmshj2018-hyperprior_q1": 2.36,
    "cresnet39_bmshj2018-hyperprior_q3": 2.36,
    "cresnet39_bmshj2018-hyperprior_q6": 2.38,
    "cresnet39_bmshj2018-hyperprior_q8": 2.38,
}
TABLE7_KMAC_PX = {"resnet50_original": 78, "resnet50_bmshj2018-hyperprior_q1": 270,
                  "resnet50_bmshj2018-hyperprior_q6": 504, "cresnet39_bmshj2018-hyperprior_q1": 47}


def test_table7_operations_within_2_percent() -> None:
    rows = {r["solution"]: r for r in thesis_solutions_macs()}
    assert set(rows) == set(TABLE7_GMAC)
    for name, gmac in TABLE7_GMAC.items():
        assert rows[name]["gmac_table7"] == pytest.approx(gmac, rel=0.02), name
    for name, kmac in TABLE7_KMAC_PX.items():
        assert rows[name]["kmac_per_px_table7"] == pytest.approx(kmac, rel=0.02), name
    assert kmac_per_pixel(224 * 224 * 1000) == 1.0


def resnet50_macs_by_hand() -> int:
    """VGGFace2's ResNet50 on 224x224: conv1 7x7/2 -> 112, max pool -> 56, Caffe bottlenecks
    (1x1 with the stride, 3x3, 1x1 to 4x; a 1x1 projection in each stage's first block), FC 2048."""
    macs, channels, side = 112 * 112 * 64 * 3 * 49, 64, 56
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for block in range(blocks):
            side = (side - 1) // (stride if block == 0 else 1) + 1
            macs += side * side * (channels * planes + planes * planes * 9 + planes * 4 * planes)
            if block == 0:
                macs += side * side * channels * 4 * planes
            channels = 4 * planes
    return macs + 2048 * 2048


def synthesis_macs_by_hand(m: int, n: int, at_output: bool) -> int:
    """bmshj2018's g_s: four 5x5 stride-2 transposed convs M->N, N->N, N->N, N->3 on 16 -> 32 -> 64
    -> 128 -> 256. Done: each input pixel times the C_in x C_out x 25 kernel; Table 7: the same
    charged per output pixel, four times as many."""
    layers = ((16, m, n), (32, n, n), (64, n, n), (128, n, 3))
    done = sum(side * side * c_in * c_out * 25 for side, c_in, c_out in layers)
    return 4 * done if at_output else done


@pytest.mark.parametrize("quality,m,n", [(1, 192, 128), (6, 320, 192)])
def test_decoded_anchor_counts_both_ways(quality: int, m: int, n: int) -> None:
    rows = {r["solution"]: r for r in thesis_solutions_macs((quality,))}
    resnet = resnet50_macs_by_hand()
    original = rows["resnet50_original"]
    assert original["macs_table7"] == original["macs_true"] == resnet
    decoded = rows[f"resnet50_bmshj2018-hyperprior_q{quality}"]
    assert decoded["macs_table7"] == synthesis_macs_by_hand(m, n, at_output=True) + resnet
    assert decoded["macs_true"] == synthesis_macs_by_hand(m, n, at_output=False) + resnet
    table7, true = {1: (13.55, 6.3), 6: (25.3, 9.2)}[quality]
    assert decoded["gmac_table7"] == pytest.approx(table7, rel=0.01)
    assert decoded["gmac_true"] == pytest.approx(true, rel=0.01)
    assert decoded["kmac_per_px_true"] == pytest.approx(decoded["macs_true"] / (224 * 224 * 1e3))


def test_decode_faces_is_an_8bit_face() -> None:
    synthesis = synthesis_transform(CodecSpec("bmshj2018-hyperprior", 1))
    y_hat = np.random.default_rng(0).integers(-3, 3, size=(2, 192, 16, 16), dtype=np.int16)
    faces = decode_faces(synthesis, y_hat, torch.device("cpu"))
    assert faces.shape == (2, 3, 224, 224)
    assert faces.min() >= 0 and faces.max() <= 255 and torch.equal(faces, faces.round())


@pytest.mark.parametrize("mode", ["original", "decoded", "compressed"])
def test_pair_steps_score_a_batch(mode: str) -> None:
    device = torch.device("cpu")
    if mode == "compressed":
        embedder, synthesis = untrained_embedder("cresnet39", device, in_channels=192, width=8), None
    else:
        embedder = untrained_embedder("resnet50", device, width=8)
        synthesis = synthesis_transform(CodecSpec("bmshj2018-hyperprior", 1)) if mode == "decoded" else None
    scores = pair_step(mode, embedder, 2, synthesis)()
    assert scores.shape == (2,) and bool(((scores >= -1.0001) & (scores <= 1.0001)).all())


def test_time_step_counts_repeats() -> None:
    calls = []
    timing = time_step(lambda: calls.append(1), torch.device("cpu"), batch_pairs=64, repeats=7, warmup=2)
    assert len(calls) == 9 and timing.repeats == 7
    assert timing.ms_per_pair == pytest.approx(timing.ms_per_batch / 64)
    assert Timing(128.0, 0.0, 64, 50).pairs_per_s == pytest.approx(500.0)



def _complexity(args: list[str]) -> tuple[str, dict[str, str]]:
    from click.testing import CliRunner

    from cdfv.eval.cli import main

    result = CliRunner().invoke(main, ["complexity", "--qualities", "1", *args])
    assert result.exit_code == 0, result.output
    rows = {line.split(" | ")[0].strip("| "): line for line in result.output.splitlines() if line.startswith("| ")}
    assert set(rows) == {"solution", "resnet50_original", "resnet50_bmshj2018-hyperprior_q1", "cresnet39_bmshj2018-hyperprior_q1"}
    assert "| 13.507 | 6.272 | 269.193 | 124.997 |" in rows["resnet50_bmshj2018-hyperprior_q1"]
    assert "| gmac_table7 | gmac_true | kmac_per_px_table7 | kmac_per_px_true |" in rows["solution"]
    assert "table7: transposed convolutions charged at their output resolution" in result.output
    return result.output, rows


def test_complexity_command() -> None:
    _, rows = _complexity([])
    assert "ms_per_pair" not in rows["solution"]


@pytest.mark.slow
def test_complexity_command_timed() -> None:
    output, rows = _complexity(["--time", "--width", "8", "--repeats", "2", "--warmup", "1", "--batch-pairs", "2"])
    assert "ms_per_pair" in rows["solution"] and "2 repeats after 1 warm-up" in output
