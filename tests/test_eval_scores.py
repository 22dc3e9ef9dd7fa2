"""Scores tables: cosine per pair, each missing-pair policy, Parquet round trip with provenance."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdfv.eval.embed import EmbeddedSet
from cdfv.eval.protocol import Pair
from cdfv.provenance import provenance
from cdfv.eval.scores import MissingPairs, RunInfo, read_scores, rejected_reasons, score_pairs, write_scores

RUN = RunInfo("decoded", "bmshj2018-hyperprior-mse", 6.0, "resnet50-abc", "resnet50", "resnet50_x_q6")


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def sets() -> tuple[EmbeddedSet, EmbeddedSet]:
    probes = EmbeddedSet("decoded", {"a1": unit([1, 0]), "b1": unit([1, 1])},
                         {"a1": {"rate": {"bpp": 0.4}, "quality": {"psnr": 30.0, "ms_ssim": 0.95}}, "b1": {"rate": {"bpp": 0.2}}})
    references = EmbeddedSet("faces", {"a2": unit([1, 0]), "c1": unit([0, 1])})
    return probes, references


PAIRS = [Pair(0, 0, "a1", "a2", True), Pair(1, 0, "b1", "c1", False), Pair(2, 1, "a1", "zz", True), Pair(3, 1, "b1", "yy", False)]


def test_cosine_scores_and_columns() -> None:
    probes, references = sets()
    table = score_pairs(PAIRS[:2], probes, references, RUN)
    rows = table.to_pylist()
    assert rows[0]["score"] == pytest.approx(1.0) and rows[1]["score"] == pytest.approx(math.sqrt(0.5))
    assert rows[0]["probe_bpp"] == 0.4 and rows[0]["probe_psnr"] == 30.0 and math.isnan(rows[1]["probe_psnr"])
    assert rows[1]["probe_key"] == "b1" and rows[1]["reference_key"] == "c1" and rows[1]["label"] is False
    assert {r["mode"] for r in rows} == {"decoded"} and rows[0]["quality"] == 6.0 and rows[0]["model_id"] == "resnet50-abc"
    assert not any(r["missing"] for r in rows)


def test_missing_error_names_count_and_keys() -> None:
    probes, references = sets()
    with pytest.raises(MissingPairs, match=r"2 of 4 pairs lack a face, first: zz: not in shard set 'faces'"):
        score_pairs(PAIRS, probes, references, RUN)


@pytest.mark.parametrize("policy, genuine, impostor", [("skip", math.nan, math.nan), ("min-score", -1.0, -1.0),
                                                       ("worst-score", -1.0, 1.0)])
def test_missing_policies_keep_rows(policy: str, genuine: float, impostor: float) -> None:
    probes, references = sets()
    rows = score_pairs(PAIRS, probes, references, RUN, policy, {"yy": "rejected at detect: no face"}).to_pylist()
    assert len(rows) == 4 and [r["missing"] for r in rows] == [False, False, True, True]
    np.testing.assert_equal([rows[2]["score"], rows[3]["score"]], [genuine, impostor])
    assert rows[3]["missing_reason"] == "yy: rejected at detect: no face"


def test_parquet_round_trip(tmp_path: Path) -> None:
    probes, references = sets()
    table = score_pairs(PAIRS, probes, references, RUN, "skip")
    write_scores(tmp_path / "s.parquet", table, {"missing_pairs": 2, "missing_policy": "skip"})
    back, meta = read_scores(tmp_path / "s.parquet")
    np.testing.assert_equal(back.to_pylist(), table.to_pylist())  # NaN-aware
    assert meta == {"missing_pairs": 2, "missing_policy": "skip", "provenance": provenance()}  # the software that scored
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a cdfv-eval scores file"):
        read_scores(tmp_path / "other.parquet")


def test_rejected_reasons(tmp_path: Path) -> None:
    pq.write_table(pa.table({"key": ["k1"], "source": ["x.jpg"], "stage": ["detect"], "reason": ["no face found"]}),
                   tmp_path / "rejects-p000of001-000000.parquet")
    assert rejected_reasons(tmp_path) == {"k1": "rejected at detect: no face found"}
