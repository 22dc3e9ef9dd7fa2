"""Complexity: Table 7's operations column reproduced, and the timed steps doing the real work."""
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
        assert rows[name]["gmac"] == pytest.approx(gmac, rel=0.02), name
    for name, kmac in TABLE7_KMAC_PX.items():
        assert rows[name]["kmac_per_px"] == pytest.approx(kmac, rel=0.02), name
    assert kmac_per_pixel(224 * 224 * 1000) == 1.0


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
    assert "| 13.507 | 269.193 |" in rows["resnet50_bmshj2018-hyperprior_q1"]
    return result.output, rows


def test_complexity_command() -> None:
    _, rows = _complexity([])
    assert "ms_per_pair" not in rows["solution"]


@pytest.mark.slow
def test_complexity_command_timed() -> None:
    output, rows = _complexity(["--time", "--width", "8", "--repeats", "2", "--warmup", "1", "--batch-pairs", "2"])
    assert "ms_per_pair" in rows["solution"] and "2 repeats after 1 warm-up" in output
