"""Learning curves of codec training on development pairs: PSNR, real bpp and dlib's verification
of the decoded faces against steps, beside JPEG rate-matched on the same faces. A codec is worth
its training time once it reconstructs faces at least as well as JPEG at equal rate; an identity
term (--id-weight) is worth its bits once dlib verifies its decoded faces better at equal rate.

    python -m cdfv.trainer.codec_curve --shards faces --root shards/codec --pairs lfw/pairsDevTrain.txt \
        --eval-root shards/lfw-devtrain --quality 1 --untrained-codec --max-steps 600 --every 100 --threads 1 --out curves/q1
    python -m cdfv.trainer.codec_curve --plot curves/q1/curve.csv curves/q1-cosine/curve.csv --out curves/both.png

The faces evaluated are the distinct probes of a development pairs file (LFW View 1's
pairsDevTrain.txt: choices are made there, never on the pairs a report scores, which --pairs
refuses unless --reported-pairs says the figure is a report's); curve.json records the file and
its sha256. Every --every steps the codec in training is copied, its entropy tables built, and the
probes coded as cdfv-prep codes them (pipeline.coding: zero-padded to 256x256, range-coded
strings, entropy-decoded from those strings, synthesised, cropped back to 224x224): bpp is 8 x
bytes over the 224x224 face, PSNR is pipeline.quality's over the face, both averaged per face as
cdfv-eval reports them; with --dlib (the default) dlib scores each pair with the probe decoded
and the reference original, as cdfv-eval's decoded anchor does. JPEG's quality is chosen by
pipeline.ratematch, as `cdfv-prep anchor --match` does, so the mean rate is within 5 % of the
codec's; where JPEG cannot reach the rate (its headers hold it above ~0.12 bpp on these faces) its
nearest end (quality 1 or 95) is recorded, jpeg_matched 0. Training time per step, wall-clock and
CPU (this process's, threads and loader included), excludes the evaluations: on a shared machine
the CPU time compares runs. Writes <out>/curve.csv, curve.json, curve.png and the training run
under <out>/run.
"""
from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import math
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cdfv.eval.development import DecodedPairs, development_pairs, pair_samples
from cdfv.eval.facemodels import load_face_model
from cdfv.eval.protocol import Pair
from cdfv.pipeline.codecs import CodecSpec
from cdfv.pipeline.coding import CodecEngine, pad_face, unpad_face
from cdfv.pipeline.conventional import get_codec
from cdfv.pipeline.quality import ms_ssim_batch, psnr
from cdfv.pipeline.ratematch import RateNotReachable, match_rate, mean_bpp
from cdfv.shards import ShardSetError, open_shard_set
from cdfv.shards import spec as S

from .codec_train import CodecTrainConfig, train_codec

FIELDS = ("step", "train_s", "s_per_step", "cpu_s_per_step", "eval_s", "bpp", "psnr", "ms_ssim", "y_bytes", "z_bytes",
          "jpeg_matched", "jpeg_quality", "jpeg_bpp", "jpeg_psnr", "psnr_minus_jpeg", "dlib_tar_at_far_1e-2",
          "dlib_tar_at_far_1e-3", "dlib_eer", "dlib_auc")
EVAL_BATCH = 10  # faces per transform batch: bounds the memory of g_a on 100 faces


def probe_faces(pairs: list[Pair], shards: str, root: str | None) -> list[np.ndarray]:
    """The distinct probes of the pairs, in key order, from an image set (PSNR-only curves)."""
    found = pair_samples({p.probe for p in pairs}, open_shard_set(shards, root))
    return [found[k][S.IMAGE] for k in sorted(found)]


@torch.inference_mode()
def code_faces(model: torch.nn.Module, spec: CodecSpec, faces: list[np.ndarray]) -> tuple[dict[str, float], list[np.ndarray]]:
    """A copy of the codec, tables built, codes the faces with cdfv's engine on the CPU; returns
    the per-face means of bpp, PSNR and MS-SSIM, and of the y and z strings' bytes, and the
    decoded faces."""
    m = copy.deepcopy(model).cpu().eval()
    m.update(force=True)
    engine = CodecEngine(spec, m, torch.device("cpu"))
    rates, y_bytes, z_bytes, decoded = [], [], [], []
    for i in range(0, len(faces), EVAL_BATCH):
        encoded = engine.encode([pad_face(f) for f in faces[i : i + EVAL_BATCH]])
        y_hat = engine.entropy_decode([(e.strings, e.shape) for e in encoded])
        decoded += [unpad_face(p) for p in engine.reconstruct(y_hat)]
        rates += [S.bits_per_pixel(S.payload_bytes(e.strings)) for e in encoded]
        y_bytes += [len(e.strings[0]) for e in encoded]
        z_bytes += [len(e.strings[1]) for e in encoded]
    return {"bpp": float(np.mean(rates)), "psnr": float(np.mean([psnr(f, d) for f, d in zip(faces, decoded)])),
            "ms_ssim": float(np.mean(ms_ssim_batch(faces, decoded))),
            "y_bytes": float(np.mean(y_bytes)), "z_bytes": float(np.mean(z_bytes))}, decoded


def jpeg_at(faces: list[np.ndarray], target_bpp: float) -> dict[str, Any]:
    """JPEG at the quality whose mean rate over the faces is within 5 % of target_bpp: its
    quality, mean bpp and mean PSNR. When no quality gets there, the same for the end of JPEG's
    range nearest the target, with jpeg_matched 0 and the reason: a codec below JPEG's lowest rate
    with a PSNR at least JPEG's there beats it outright."""
    codec = get_codec("jpeg")
    note = {}
    try:
        quality, _ = match_rate(codec, faces, target_bpp)
    except RateNotReachable as e:
        quality = codec.low if target_bpp < mean_bpp(codec, faces, codec.low) else codec.high
        note = {"jpeg_note": str(e)}
    coded = [codec.code(f, quality) for f in faces]
    return {"jpeg_matched": int(not note), "jpeg_quality": int(quality), "jpeg_bpp": float(np.mean([c.bpp for c in coded])),
            "jpeg_psnr": float(np.mean([psnr(f, c.decoded) for f, c in zip(faces, coded)])), **note}


class Curve:
    """Evaluates the codec every `every` steps and at the last one, rewriting the CSV, JSON and
    plot after each point so an interrupted run keeps what it measured."""

    def __init__(self, out: Path, cfg: CodecTrainConfig, faces: list[np.ndarray], every: int, total: int,
                 header: dict[str, Any], pairs: DecodedPairs | None = None) -> None:
        self.out, self.cfg, self.every, self.total, self.pairs = out, cfg, every, total, pairs
        self.faces = pairs.probe_faces() if pairs is not None else faces  # with pairs: their distinct probes
        self.spec = CodecSpec(cfg.codec, cfg.quality, cfg.metric)
        self.header = header
        self.rows: list[dict[str, Any]] = []
        self.started, self.started_cpu = time.perf_counter(), time.process_time()
        self.eval_s = self.eval_cpu_s = 0.0

    def __call__(self, step: int, model: torch.nn.Module) -> None:
        if step % self.every and step != self.total:
            return
        began, began_cpu = time.perf_counter(), time.process_time()
        train_s = began - self.started - self.eval_s
        train_cpu_s = began_cpu - self.started_cpu - self.eval_cpu_s
        row: dict[str, Any] = {"step": step, "train_s": round(train_s, 1), "s_per_step": round(train_s / step, 3),
                               "cpu_s_per_step": round(train_cpu_s / step, 3)}
        means, decoded = code_faces(model, self.spec, self.faces)
        row.update(means)
        if self.pairs is not None:
            row.update({f"dlib_{k}": v for k, v in self.pairs.score(decoded).items()})
        row.update(jpeg_at(self.faces, row["bpp"]))
        row["psnr_minus_jpeg"] = row["psnr"] - row["jpeg_psnr"]
        row["eval_s"] = round(time.perf_counter() - began, 1)
        self.eval_s += row["eval_s"]
        self.eval_cpu_s += time.process_time() - began_cpu
        self.rows.append(row)
        self.write()
        jpeg = f"JPEG q{row['jpeg_quality']} {row['jpeg_psnr']:.2f} dB at {row['jpeg_bpp']:.3f}{'' if row['jpeg_matched'] else ' (unmatched)'}"
        dlib = f"; dlib TAR@FAR=1e-2 {row['dlib_tar_at_far_1e-2']:.3f}, AUC {row['dlib_auc']:.4f}" if self.pairs else ""
        print(f"step {step}: {row['psnr']:.2f} dB at {row['bpp']:.4f} bpp (y {row['y_bytes']:.0f} B, z {row['z_bytes']:.0f} B){dlib}; "
              f"{jpeg}; {row['s_per_step']} s/step ({row['cpu_s_per_step']} CPU), eval {row['eval_s']} s", flush=True)

    def write(self) -> None:
        write_curve(self.out, self.header, self.rows)


def write_curve(out: Path, header: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """<out>/curve.csv (FIELDS), curve.json (header and every field of every point), curve.png."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _rounded(v) for k, v in r.items()} for r in rows)
    (out / "curve.json").write_text(json.dumps({**header, "points": rows}, indent=1))
    plot({out.name: rows}, out / "curve.png")


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def read_curve(path: Path) -> list[dict[str, Any]]:
    """A curve.csv back as rows of numbers (empty cells: None)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else None for k, v in row.items()} for row in csv.DictReader(f)]


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """PSNR (solid; JPEG at the matched rate dashed, JPEG's lowest rate where it cannot match
    as x, same colour) and bpp against steps; where the points have them, dlib's TAR@FAR=1e-2 on
    the decoded development probes against bpp."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    identity = any(r.get("dlib_tar_at_far_1e-2") is not None for rows in curves.values() for r in rows)
    fig, axes = plt.subplots(1, 3 if identity else 2, figsize=(16 if identity else 11, 4))
    ax_psnr, ax_bpp = axes[:2]
    for i, (label, rows) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        steps = [r["step"] for r in rows]
        ax_psnr.plot(steps, [r["psnr"] for r in rows], color=colour, marker="o", ms=3, label=label)
        ax_psnr.plot(steps, [r["jpeg_psnr"] if r["jpeg_matched"] else math.nan for r in rows], color=colour, ls="--", lw=1)
        ax_psnr.plot(steps, [math.nan if r["jpeg_matched"] else r["jpeg_psnr"] for r in rows], color=colour, ls="", marker="x")
        ax_bpp.plot(steps, [r["bpp"] for r in rows], color=colour, marker="o", ms=3, label=label)
        if identity:
            tar = [(r["bpp"], r["dlib_tar_at_far_1e-2"]) for r in rows if r.get("dlib_tar_at_far_1e-2") is not None]
            axes[2].plot(*zip(*tar), color=colour, marker="o", ms=3, label=label)
            axes[2].annotate(f"{int(rows[-1]['step'])}", tar[-1], fontsize=7, color=colour)
    ax_psnr.set(xlabel="training steps", ylabel="PSNR over the 224x224 face (dB)",
                title="codec (solid), JPEG at its bpp (dashed)\nx: JPEG's lowest rate, above the codec's")
    ax_bpp.set(xlabel="training steps", ylabel="bpp (8 x bytes / 224^2)", title="rate of the coded strings")
    if identity:
        axes[2].set(xlabel="bpp", ylabel="dlib TAR@FAR=1e-2, decoded probe", title="identity on development pairs\n"
                    "(one point per evaluation, the last labelled with its step)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
    ax_psnr.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", nargs="+", type=Path, metavar="CSV", help="only overlay these curve.csv files into --out (a .png)")
    parser.add_argument("--labels", help="--plot: comma-separated labels (default: each CSV's folder)")
    parser.add_argument("--shards", default="faces", help="training image set (cdfv-prep run --outputs faces)")
    parser.add_argument("--root", help="where the training set lives")
    parser.add_argument("--pairs", type=Path,
                        help="development pairs file (LFW View 1 pairsDevTrain.txt): its distinct probes are coded at each "
                             "point, and with --dlib scored against their original references")
    parser.add_argument("--reported-pairs", action="store_true",
                        help="allow a pairs file the reports score (pairsDevTest.txt, pairs.txt): for a report's figure, not a choice")
    parser.add_argument("--pairs-limit", type=int, help="the first N same-person and N other pairs of the file (default: all)")
    parser.add_argument("--eval-shards", default="faces", help="aligned faces of the pairs' images (never trained on)")
    parser.add_argument("--eval-root", help="where the held-out set lives")
    parser.add_argument("--dlib", action=argparse.BooleanOptionalAction, default=True,
                        help="dlib's TAR@FAR, EER and AUC on the decoded probes at each point")
    parser.add_argument("--every", type=int, default=100, help="steps between evaluations")
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--quality", type=int, default=1)
    parser.add_argument("--codec-weights", help="start from this codec file (e.g. a trained q1 for q3)")
    parser.add_argument("--untrained-codec", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch", type=int, default=128, help="training crop side (0: whole padded faces)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lr-schedule", default="constant")
    parser.add_argument("--lr-final", type=float, default=0.01)
    parser.add_argument("--aux-lr", type=float, default=1e-3)
    parser.add_argument("--eb-init-scale", type=float)
    parser.add_argument("--mask-padding", action="store_true")
    parser.add_argument("--id-weight", type=float, default=0.0, help="the identity term's weight (cdfv-train --id-weight)")
    parser.add_argument("--id-distance", default="cos", choices=("cos", "centred"))
    parser.add_argument("--id-map", help="junction of dlib's map in the identity term")
    parser.add_argument("--rate-target", type=float, help="hold the training rate at this bpp (cdfv-train --rate-target)")
    parser.add_argument("--rate-gain", type=float, default=0.2, help="cdfv-train --rate-gain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.plot:
        labels = args.labels.split(",") if args.labels else [p.parent.name for p in args.plot]
        plot({label: read_curve(p) for label, p in zip(labels, args.plot)}, args.out)
        return
    if args.pairs is None:
        parser.error("--pairs (a development pairs file) is required to measure a curve")
    cfg = CodecTrainConfig(shards=args.shards, root=args.root, out=str(args.out / "run"), quality=args.quality,
                           weights=args.codec_weights, untrained=args.untrained_codec, epochs=10**6,
                           batch_size=args.batch_size, patch=args.patch, lr=args.lr, lr_schedule=args.lr_schedule,
                           lr_final=args.lr_final, aux_lr=args.aux_lr, eb_init_scale=args.eb_init_scale,
                           mask_padding=args.mask_padding, seed=args.seed, workers=args.workers, max_steps=args.max_steps,
                           progress=False, tensorboard=False, log_every=50, identity_weight=args.id_weight,
                           identity_distance=args.id_distance, identity_map=args.id_map,
                           rate_target=args.rate_target, rate_gain=args.rate_gain)
    cfg.patch = args.patch or None
    try:
        measure(args, cfg)
    except (ValueError, ShardSetError, FileNotFoundError) as e:  # a user's input: one line, as cdfv-train says it
        parser.exit(2, f"{parser.prog}: error: {e}\n")


def measure(args: argparse.Namespace, cfg: CodecTrainConfig) -> None:
    """The curve of one training run on the development pairs of `args.pairs`."""
    pairs, record = development_pairs(args.pairs, args.reported_pairs, args.pairs_limit)
    scorer = DecodedPairs(pairs, open_shard_set(args.eval_shards, args.eval_root), load_face_model("dlib")) if args.dlib else None
    faces = scorer.probe_faces() if scorer else probe_faces(pairs, args.eval_shards, args.eval_root)
    header = {"config": asdict(cfg), "eval": {"shards": args.eval_shards, "root": args.eval_root, "faces": len(faces), **record,
                                              **({"dlib_original": scorer.original()} if scorer else {})},
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "torch": torch.__version__}}
    train_codec(cfg, Curve(args.out, cfg, faces, args.every, args.max_steps, header, scorer))


if __name__ == "__main__":
    main()
