"""dlib on the decoded probes of every pairsDevTrain pair (1,100 same, 1,100 different), for
several q1 codec files, with each pair's score kept so that two codecs are compared on the same
pairs (a paired bootstrap) rather than by two intervals that each count the pairs' sampling noise.

    python results/identity-curves/all-pairs/score.py --faces /tmp/id/lfw --out DIR NAME=CODEC.pt [NAME=CODEC.pt ...] \
        [--bd ANCHOR1,ANCHOR2 TEST1,TEST2]

The first NAME is the baseline every other is compared with. A codec already scored in DIR (its
NAME.json names the same weights) is read back, not scored again. Writes NAME.parquet (one row
per pair), NAME.json (rate, PSNR, metrics, intervals) and table.md; with --bd, the Bjontegaard
deltas (cdfv.eval.bd) of the TEST codecs' curve against the ANCHOR codecs' in bd.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cdfv.eval.bd import bd_metric, bd_rate
from cdfv.eval.development import DecodedPairs, development_pairs
from cdfv.eval.facemodels import load_face_model
from cdfv.eval.metrics import bootstrap_intervals, paired_differences, point_metrics
from cdfv.pipeline.codecs import CodecSpec, load_codec, weights_file_id
from cdfv.shards import open_shard_set
from cdfv.trainer.codec_curve import code_faces

PAIRS = Path("/work/shared/data/lfw/meta/pairsDevTrain.txt")


def scored(name: str, weights: Path | None, scorer: DecodedPairs, out: Path) -> tuple[dict, np.ndarray]:
    """The codec's (or, without weights, the originals') figures and per-pair scores, from out/ if there."""
    wid = weights_file_id(weights) if weights else "original"
    record_path = out / f"{name}.json"
    kept = json.loads(record_path.read_text()) if record_path.exists() else None
    if kept is not None and kept["weights"] == wid:
        return kept, pq.read_table(out / f"{name}.parquet")["score"].to_numpy()
    if weights is None:
        means, scores = {"bpp": None, "psnr": None}, scorer.pair_scores(scorer.probe_faces())
    else:
        spec = CodecSpec("bmshj2018-hyperprior", 1)
        model, _ = load_codec(spec, weights=weights, any_quality=True)
        means, decoded = code_faces(model, spec, scorer.probe_faces())
        scores = scorer.pair_scores(decoded)
    labels = scorer.labels.astype(bool)
    record = {"name": name, "weights": wid, "file": str(weights) if weights else None, **means,
              **point_metrics(scorer.labels, scores),
              "intervals": bootstrap_intervals(labels, scores, 1000)}
    pq.write_table(pa.table({"probe": [p.probe for p in scorer.pairs], "reference": [p.reference for p in scorer.pairs],
                             "label": labels.tolist(), "score": scores}), out / f"{name}.parquet")
    record_path.write_text(json.dumps(record, indent=1))
    return record, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=Path, required=True, help="the folder holding the aligned pairsDevTrain faces set 'faces'")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("codecs", nargs="+", help="NAME=CODEC.pt; the first is the baseline")
    parser.add_argument("--bd", nargs=2, metavar=("ANCHORS", "TESTS"), help="comma-separated NAMEs: two rate curves")
    a = parser.parse_args()
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    pairs, record = development_pairs(PAIRS)
    scorer = DecodedPairs(pairs, open_shard_set("faces", a.faces), load_face_model("dlib"))
    runs = [("original", None)] + [(c.split("=", 1)[0], Path(c.split("=", 1)[1])) for c in a.codecs]
    results = {name: scored(name, weights, scorer, a.out) for name, weights in runs}
    base = runs[1][0]
    lines = [f"Pairs: `{record['pairs_file']}` (sha256 {record['pairs_sha256'][:12]}), {record['pairs']} pairs, "
             f"{record['same']} same-person; dlib on the decoded probe against the original reference. "
             f"Intervals: 95 % percentile bootstrap; differences: paired bootstrap against `{base}` (1,000 replicates).", "",
             "| codec | bpp | PSNR (dB) | TAR@FAR=1e-2 [95 %] | TAR@FAR=1e-3 | EER | AUC | dTAR@FAR=1e-2 [95 %] | dEER [95 %] | dAUC [95 %] |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    labels = scorer.labels
    for name, _ in runs:
        r, scores = results[name]
        low, high = r["intervals"]["tar_at_far_1e-2"]
        cells = [name, "" if r["bpp"] is None else f"{r['bpp']:.4f}", "" if r["psnr"] is None else f"{r['psnr']:.2f}",
                 f"{r['tar_at_far_1e-2']:.3f} [{low:.3f}, {high:.3f}]", f"{r['tar_at_far_1e-3']:.3f}", f"{r['eer']:.4f}",
                 f"{r['auc']:.4f}"]
        if name in ("original", base):
            cells += ["", "", ""]
        else:
            d = paired_differences(labels, results[base][1], scores, 1000)
            for metric, digits in (("tar_at_far_1e-2", 3), ("eer", 4), ("auc", 4)):
                lo, hi = np.percentile(d[metric], [2.5, 97.5])
                value = r[metric] - results[base][0][metric]
                cells.append(f"{value:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]")
        lines.append("| " + " | ".join(cells) + " |")
    (a.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.bd:
        curves = [[results[n][0] for n in names.split(",")] for names in a.bd]
        bd = [f"Bjontegaard deltas of `{a.bd[1]}` against `{a.bd[0]}` (cdfv.eval.bd: a curve of 2 points is a straight line "
              f"in log rate).", "", "| metric | points (anchor / test) | BD-rate (%) | BD-metric |", "|---|---|---|---|"]
        for metric in ("tar_at_far_1e-2", "tar_at_far_1e-3", "auc"):
            (anchor_rate, test_rate), (anchor, test) = ([[r[k] for r in c] for c in curves] for k in ("bpp", metric))
            points = " / ".join(", ".join(f"{r['bpp']:.4f}: {r[metric]:.4f}" for r in c) for c in curves)
            rate, value = bd_rate(anchor_rate, anchor, test_rate, test), bd_metric(anchor_rate, anchor, test_rate, test)
            bd.append(f"| {metric} | {points} | {f'{rate.value:+.1f}' if rate.available else rate.reason} | "
                      f"{f'{value.value:+.4f}' if value.available else value.reason} |")
        (a.out / "bd.md").write_text("\n".join(bd) + "\n")
        print("\n".join(bd))


if __name__ == "__main__":
    main()
