"""Draws curve.png from curve.csv (benchmarks/transplant_curve.py rows) and reference.json (dlib on
the same codec's decoded faces): TAR@FAR=1e-2 and AUC on LFW View 1 DevTest against training steps.

    python results/transplant-curves/plot.py results/transplant-curves
"""
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

folder = Path(sys.argv[1])
rows = list(csv.DictReader(open(folder / "curve.csv")))
reference = json.loads((folder / "reference.json").read_text())
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, metric, label in ((axes[0], "tar_at_far_1e-2", "TAR@FAR=1e-2"), (axes[1], "auc", "AUC")):
    for run in dict.fromkeys(r["run"] for r in rows):
        points = [(int(r["step"]), float(r[metric])) for r in rows if r["run"] == run]
        ax.plot(*zip(*points), marker="o", label=run)
    for name, values in reference.items():
        ax.axhline(values[metric], linestyle="--", color="grey" if "decoded" in name else "black", label=name)
    ax.set_xlabel("training steps (batch 64)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
axes[1].legend(fontsize=7)
pairs = rows[0].get("pairs_file") or "pairsDevTest.txt"  # rows from before the column read DevTest
fig.suptitle(f"Transplanted students on q1 latents, LFW View 1 {pairs}")
fig.tight_layout()
fig.savefig(folder / "curve.png", dpi=120)
