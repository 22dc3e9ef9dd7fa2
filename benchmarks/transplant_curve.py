"""Learning curve of a transplanted student (issue 16): one cdfv-train --phase transplant schedule
run in --max-steps slices (each slice resumes the checkpoint, so the cosine schedule is the full
run's), the student after each slice scored on LFW pairs from their latents. Appends one CSV row
per slice, naming the pairs file (and its sha256) it read; results/transplant-curves/README.md says
how it was run. The pairs are development pairs (pairsDevTrain.txt): a file the reports score is
refused unless --reported-pairs says the figure is a report's, not a choice's (eval.development).

    python benchmarks/transplant_curve.py --train-root shards/celeba --lfw-root shards/lfw-devtrain \\
        --pairs pairsDevTrain.txt --name level1 --epochs 6 --steps 36,72,144,216 --csv curve.csv -- --junction level1
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cdfv.eval.metrics import point_metrics
from cdfv.eval.development import development_pairs
from cdfv.shards import open_shard_set, spec
from cdfv.trainer.checkpoint import load_checkpoint
from cdfv.trainer.data import probe_input
from cdfv.trainer.train import TrainConfig, transplant_model

COLUMNS = ["run", "junction", "step", "epoch", "train_cos", "train_map", "tar_at_far_1e-2", "tar_at_far_1e-3", "auc", "eer",
           "slice_seconds", "options", "pairs_file", "pairs_sha256"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-root", required=True, help="where the training latent set lives")
    p.add_argument("--shards", default="latents-q1", help="training latent set (and the LFW latent set's name)")
    p.add_argument("--lfw-root", required=True, help="where the LFW latent set lives")
    p.add_argument("--pairs", type=Path, required=True, help="development pairs (LFW View 1 pairsDevTrain.txt)")
    p.add_argument("--reported-pairs", action="store_true", help="allow a pairs file the reports score (a report's figure)")
    p.add_argument("--name", required=True, help="run name: <runs>/<name> is its cdfv-train --out")
    p.add_argument("--runs", default="runs/transplant-curves")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--steps", required=True, help="comma-separated global steps to stop and score at")
    p.add_argument("--csv", required=True)
    p.add_argument("--trainer", default=f"{sys.executable} -m cdfv.trainer",
                   help="the command that trains (a variant's, e.g. results/transplant-curves/variants/variants.py trainer ...)")
    p.add_argument("train_args", nargs="*", help="more cdfv-train options, after --")
    a = p.parse_args()
    out = Path(a.runs) / a.name
    try:
        pairs, record = development_pairs(a.pairs, a.reported_pairs)
    except ValueError as e:  # a reported pairs file, or a malformed one: one line
        p.error(str(e))
    lfw = {s["__key__"]: s[spec.LATENT] for s in open_shard_set(a.shards, a.lfw_root).samples((spec.LATENT,))}
    keys = sorted(lfw)
    latents = torch.from_numpy(np.stack([lfw[k] for k in keys]).astype(np.float32))
    index = {k: i for i, k in enumerate(keys)}
    labels = np.array([p.label for p in pairs], dtype=int)
    shard_set = open_shard_set(a.shards, a.train_root)
    probe = probe_input(shard_set)
    path = Path(a.csv)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(COLUMNS)
        for stop in (int(s) for s in a.steps.split(",")):
            cmd = [*shlex.split(a.trainer), "--shards", a.shards, "--root", a.train_root, "--phase", "transplant",
                   "--epochs", str(a.epochs), "--workers", "0", "--threads", "1", "--max-steps", str(stop), "--out", str(out),
                   "--quiet", *a.train_args]
            if (out / "checkpoint.pt").exists():
                cmd += ["--resume", "--allow-change", "max_steps"]
            started = time.time()
            subprocess.run(cmd, check=True)
            seconds = time.time() - started
            ckpt = load_checkpoint(out / "checkpoint.pt", ("model", "config", "step", "epoch"))
            cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k != "augment"})
            model = transplant_model(shard_set, probe, cfg)
            model.load_state_dict(ckpt["model"])
            model.eval()
            with torch.no_grad():
                emb = torch.cat([model(latents[i : i + 128]) for i in range(0, len(latents), 128)])
            emb = torch.nn.functional.normalize(emb, dim=1).numpy()
            scores = np.array([float(emb[index[p.probe]] @ emb[index[p.reference]]) for p in pairs])
            m = point_metrics(labels, scores)
            train = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r.get("split") == "train"][-1]
            row = [a.name, cfg.junction, ckpt["step"], ckpt["epoch"], round(train.get("cos", 0.0), 4), round(train.get("map", 0.0), 4),
                   round(m["tar_at_far_1e-2"], 4), round(m["tar_at_far_1e-3"], 4), round(m["auc"], 4), round(m["eer"], 4),
                   round(seconds, 1), " ".join(a.train_args), a.pairs.name, record["pairs_sha256"]]
            writer.writerow(row)
            f.flush()
            print(dict(zip(COLUMNS, row)), flush=True)


if __name__ == "__main__":
    main()
