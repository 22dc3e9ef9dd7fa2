"""The identity curves' table and figure from the runs' curve.json files and the start codec's point.

    python results/identity-curves/summarize.py RUNS_DIR BASE_POINT.json results/identity-curves

Copies each run's curve.csv and curve.json into OUT/<run>/, writes OUT/table.md (one row per
evaluated point: rate, PSNR, dlib's TAR@FAR=1e-2, EER and AUC on the decoded pairsDevTrain
probes) and OUT/identity.png (TAR@FAR=1e-2 and PSNR against bpp, the originals' TAR as a line).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(runs: Path, base_point: Path, out: Path) -> None:
    base = json.loads(base_point.read_text())
    curves = {}
    for curve in sorted(runs.glob("*/curve.json")):
        (out / curve.parent.name).mkdir(parents=True, exist_ok=True)
        for name in ("curve.csv", "curve.json"):
            shutil.copy(curve.parent / name, out / curve.parent.name / name)
        curves[curve.parent.name] = json.loads(curve.read_text())
    rows = ["| run | step | bpp | PSNR (dB) | dlib TAR@FAR=1e-2 | EER | AUC | options |", "|---|---|---|---|---|---|---|---|"]
    p = base["point"]
    rows.append(f"| start codec | 0 | {p['bpp']:.4f} | {p['psnr']:.2f} | {p['dlib_tar_at_far_1e-2']:.3f} | {p['dlib_eer']:.4f} | "
                f"{p['dlib_auc']:.4f} | |")
    for name, curve in curves.items():
        cfg = curve["config"]
        options = ", ".join(f"{k} {cfg[k]}" for k in ("identity_weight", "identity_distance", "identity_map", "rate_target", "rate_gain")
                            if cfg.get(k) not in (None, 0, 0.0, "cos") and (k != "rate_gain" or cfg.get("rate_target")))
        for r in curve["points"]:
            rows.append(f"| {name} | {r['step']} | {r['bpp']:.4f} | {r['psnr']:.2f} | {r['dlib_tar_at_far_1e-2']:.3f} | "
                        f"{r['dlib_eer']:.4f} | {r['dlib_auc']:.4f} | {options} |")
    o = base["original"]
    rows.append(f"| originals (no coding) | | | | {o['tar_at_far_1e-2']:.3f} | {o['eer']:.4f} | {o['auc']:.4f} | |")
    (out / "table.md").write_text("\n".join(rows) + "\n")
    fig, (ax_tar, ax_psnr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, curve) in enumerate(curves.items()):
        points = [base["point"], *curve["points"]]
        bpp = [r["bpp"] for r in points]
        ax_tar.plot(bpp, [r["dlib_tar_at_far_1e-2"] for r in points], marker="o", ms=3, color=f"C{i}", label=name)
        ax_psnr.plot(bpp, [r["psnr"] for r in points], marker="o", ms=3, color=f"C{i}", label=name)
    ax_tar.axhline(o["tar_at_far_1e-2"], color="k", ls="--", lw=1, label="originals")
    ax_tar.set(xlabel="bpp (coded, per face pixel)", ylabel="dlib TAR@FAR=1e-2, decoded probe",
               title="each line starts at the start codec (step 0), then its points by step")
    ax_psnr.set(xlabel="bpp (coded, per face pixel)", ylabel="PSNR over the 224x224 face (dB)", title="the same points")
    for ax in (ax_tar, ax_psnr):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
    fig.legend(*ax_tar.get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=7, frameon=False)
    pairs = base["eval"]
    fig.suptitle(f"LFW View 1 {Path(pairs['pairs_file']).name} (sha256 {pairs['pairs_sha256'][:12]}): {pairs['pairs']} pairs, "
                 f"{pairs['same']} same-person", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out / "identity.png", dpi=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
