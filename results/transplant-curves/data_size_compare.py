"""Paired comparison of two transplanted students on the same LFW pairs (data-size.csv, README
*Training data: 4 or 8 photos per identity*): each checkpoint's student scores the pairs from
their latents, then genuine and impostor pairs are resampled together for both students (the same
pairs in each replicate), giving a percentile interval of the difference B - A in TAR@FAR and AUC.

    python results/transplant-curves/data_size_compare.py --lfw-root shards/lfw --pairs pairsDevTest.txt \\
        A=runs/level0/checkpoint.pt@shards/celeba B=runs/level0-8perid/checkpoint.pt@shards8/celeba
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from cdfv.eval.metrics import paired_differences, point_metrics
from cdfv.eval.protocol import read_pairs
from cdfv.shards import open_shard_set, spec
from cdfv.trainer.checkpoint import load_checkpoint
from cdfv.trainer.data import probe_input
from cdfv.trainer.train import TrainConfig, transplant_model

METRICS = ("tar_at_far_1e-2", "tar_at_far_1e-3", "auc", "eer")


def scores(checkpoint: str, train_root: str, latents: torch.Tensor, index: dict, pairs: list) -> np.ndarray:
    shard_set = open_shard_set("latents-q1", train_root)
    ckpt = load_checkpoint(checkpoint, ("model", "config", "step", "epoch"))
    cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k != "augment"})
    model = transplant_model(shard_set, probe_input(shard_set), cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.no_grad():
        emb = torch.cat([model(latents[i : i + 128]) for i in range(0, len(latents), 128)])
    emb = torch.nn.functional.normalize(emb, dim=1).numpy()
    return np.array([float(emb[index[p.probe]] @ emb[index[p.reference]]) for p in pairs])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw-root", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--replicates", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("students", nargs=2, help="NAME=CHECKPOINT@TRAIN_ROOT (A, then B)")
    a = p.parse_args()
    torch.set_num_threads(1)
    pairs = read_pairs(a.pairs)
    lfw = {s["__key__"]: s[spec.LATENT] for s in open_shard_set("latents-q1", a.lfw_root).samples((spec.LATENT,))}
    keys = sorted(lfw)
    latents = torch.from_numpy(np.stack([lfw[k] for k in keys]).astype(np.float32))
    index = {k: i for i, k in enumerate(keys)}
    labels = np.array([p.label for p in pairs], dtype=int)
    names, runs = [], []
    for arg in a.students:
        name, rest = arg.split("=", 1)
        checkpoint, root = rest.split("@", 1)
        names.append(name)
        runs.append(scores(checkpoint, root, latents, index, pairs))
    point = [point_metrics(labels, s) for s in runs]
    diffs = paired_differences(labels, runs[0], runs[1], a.replicates, a.seed)
    out = {"A": names[0], "B": names[1], "replicates": a.replicates, "seed": a.seed,
           names[0]: {m: round(point[0][m], 4) for m in METRICS}, names[1]: {m: round(point[1][m], 4) for m in METRICS},
           "difference_B_minus_A": {m: {"point": round(point[1][m] - point[0][m], 4),
                                        "ci95": [round(float(np.percentile(diffs[m], 2.5)), 4),
                                                 round(float(np.percentile(diffs[m], 97.5)), 4)],
                                        "share_above_0": round(float(np.mean(diffs[m] > 0)), 3)}
                                    for m in METRICS}}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
