"""Variants of the transplanted student measured on the committed cpu run's own data (issue 16):
what the teacher's view, the adapter's upsampling and the amount of training faces each buy a
level0 student at q1. Everything here is outside the package on purpose: none of these variants
was adopted (README.md beside this file says why), so they live as the exact code that was run.

    python variants.py decoded-teacher --quality 1 --weights RUN/runs/codec-q1/codec.pt RUN/shards/celeba OUT/dec
    python variants.py half latents-q1 RUN/shards/celeba OUT/half
    python variants.py curve --adapter upsample -- --train-root ... (benchmarks/transplant_curve.py's arguments)
    python variants.py score --pairs pairsDevTest.txt --lfw-root LFW --train-root RUN/shards/celeba --out S.npy CKPT
    python variants.py compare --pairs pairsDevTest.txt A.npy B.npy
    python variants.py agreement RUN/shards/celeba OUT/dec
    python variants.py plot --out data-curve.png results.csv
"""
from __future__ import annotations

import argparse
import copy
import runpy
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cdfv.eval.metrics import paired_differences, point_metrics
from cdfv.eval.protocol import read_pairs
from cdfv.shards import open_shard_set, spec
from cdfv.shards.writer import ShardSetWriter, write_index
from cdfv.trainer import transplant

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "transplant_curve.py"


class UpsampleAdapter(transplant.Adapter):
    """The trainer's adapter with one learned 2x upsampling (transposed 4x4 convolution, BN, ReLU,
    then a 3x3 convolution) between the 14 x 14 stack and the resampling, so level0's 35 x 35 map is
    resampled from a 28 x 28 grid (8 face pixels a cell, near level0's 6.5) instead of 14 x 14."""

    def __init__(self, in_channels: int, junction: str, face_to_chip, width: int) -> None:
        nn.Module.__init__(self)  # the parent's layers, built in the order of the run (the seed's draws)
        channels, side = transplant.JUNCTIONS[junction]
        conv_bn = transplant._conv_bn
        self.latent = nn.Sequential(nn.BatchNorm2d(in_channels), *conv_bn(in_channels, width, 1), *conv_bn(width, width, 3),
                                    *conv_bn(width, width, 3))
        self.upsample = nn.Sequential(nn.ConvTranspose2d(width, width, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                                      nn.ReLU(inplace=True), *conv_bn(width, width, 3))
        self.register_buffer("grid", transplant.sampling_grid(face_to_chip, side))
        self.junction = nn.Sequential(nn.Conv2d(width, channels, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.upsample(self.latent(x))
        y = F.grid_sample(y, self.grid.expand(len(y), -1, -1, -1).to(y.dtype), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        return self.junction(y)


class CodecAdapter(transplant.Adapter):
    """The adapter's 14 x 14 stack replaced by the codec's own first synthesis layers (g_s[0:2]:
    transposed 5x5 convolution M -> N to 28 x 28 and inverse GDN, weights of --codec-weights, trained
    on with the rest) and one 3x3 convolution: a partial decoder as the adapter's start."""

    codec_weights: Path | None = None
    quality = 1

    def __init__(self, in_channels: int, junction: str, face_to_chip, width: int) -> None:
        super().__init__(in_channels, junction, face_to_chip, width)
        from cdfv.pipeline.codecs import CodecSpec, load_codec

        if self.codec_weights is None:
            raise SystemExit("--adapter codec needs --codec-weights")
        codec, _ = load_codec(CodecSpec("bmshj2018-hyperprior", self.quality), self.codec_weights)
        first = list(codec.g_s)[:2]
        self.latent = nn.Sequential(*first, nn.Conv2d(first[0].out_channels, width, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(width), nn.ReLU(inplace=True))


ADAPTERS = {"fixed": transplant.Adapter, "upsample": UpsampleAdapter, "codec": CodecAdapter}


def use_adapter(name: str, codec_weights: str | None, quality: int) -> None:
    CodecAdapter.codec_weights = Path(codec_weights) if codec_weights else None
    CodecAdapter.quality = quality
    transplant.Adapter = ADAPTERS[name]  # TransplantStudent looks the class up at build time


def decoded_teacher(a: argparse.Namespace) -> None:
    """A copy of latents-q<quality> whose teacher members (embedding, level0 map, chip transform)
    are dlib's on the DECODED view: g_s of the stored 14 x 14 latent (the 224 face; the crop's
    missing outer ring of cells changes its border), with dlib's 5 points fitted on that face."""
    from cdfv.eval.facemodels import DlibFaceModel
    from cdfv.pipeline.codecs import CodecSpec, load_codec

    name = f"latents-q{a.quality}"
    source = open_shard_set(name, a.source)
    codec, _ = load_codec(CodecSpec("bmshj2018-hyperprior", a.quality), Path(a.weights))
    dlib = DlibFaceModel()
    level0 = spec.teacher_map("level0")
    members = [spec.LATENT, spec.META, spec.LABEL, spec.TEACHER, level0]
    writer = ShardSetWriter(Path(a.out) / name, name)

    def teach(batch: list[dict]) -> list[dict]:
        latents = torch.from_numpy(np.stack([s[spec.LATENT] for s in batch]).astype(np.float32))
        with torch.no_grad():
            faces = codec.g_s(latents).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
        embeddings, maps, chips = dlib.embed_with_maps(faces, [s[spec.META] for s in batch], ["level0"])
        out = []
        for i, s in enumerate(batch):
            meta = copy.deepcopy(s[spec.META])
            meta["teacher"] = {**meta.get("teacher", {}), "chip": chips[i].round(6).tolist(), "decoded": True}
            out.append({"__key__": s["__key__"], spec.LATENT: s[spec.LATENT], spec.META: meta, spec.LABEL: s[spec.LABEL],
                        spec.TEACHER: embeddings[i].astype(np.float32), level0: maps["level0"][i]})
        return out

    batch, done, chunk = [], [], 0
    for sample in source.samples(tuple(members)):
        batch.append(sample)
        if len(batch) == 64:
            done += teach(batch)
            batch = []
        if len(done) >= 2000:
            writer.write(chunk, done[:2000])
            done, chunk = done[2000:], chunk + 1
    done += teach(batch) if batch else []
    if done:
        writer.write(chunk, done)
    write_index(Path(a.out) / name, name, "latent", members, source.identities, source.meta)


def half(a: argparse.Namespace) -> None:
    """Every other photo of each identity (sorted by name), both views of a kept photo."""
    source = open_shard_set(a.name, a.source)
    photos: dict[str, set[str]] = defaultdict(set)
    for s in source.samples((spec.LABEL,)):
        identity, photo, _view = s["__key__"].split("__")
        photos[identity].add(photo)
    keep = {(i, p) for i, ps in photos.items() for j, p in enumerate(sorted(ps)) if j % 2 == 0}
    kept = [s for s in source.samples(tuple(source.members)) if tuple(s["__key__"].split("__")[:2]) in keep]
    ShardSetWriter(Path(a.out) / a.name, a.name).write(0, kept)
    write_index(Path(a.out) / a.name, a.name, "latent", list(source.members), source.identities, source.meta)
    print(f"{source.num_samples} -> {len(kept)} samples")


def trainer(a: argparse.Namespace, rest: list[str]) -> None:
    """cdfv-train with the chosen adapter (what `curve` runs for each slice)."""
    use_adapter(a.adapter, a.codec_weights, a.quality)
    from cdfv.trainer.cli import main

    main(args=rest, prog_name="cdfv-train")


def curve(a: argparse.Namespace, rest: list[str]) -> None:
    """benchmarks/transplant_curve.py with the chosen adapter, in its slices and in its scoring."""
    use_adapter(a.adapter, a.codec_weights, a.quality)
    trainer_cmd = [sys.executable, str(Path(__file__).resolve()), "trainer", "--adapter", a.adapter, "--quality", str(a.quality),
                   *(["--codec-weights", a.codec_weights] if a.codec_weights else []), "--"]
    sys.argv = [str(BENCHMARK), "--trainer", shlex.join(trainer_cmd), *rest]
    runpy.run_path(str(BENCHMARK), run_name="__main__")


def score(a: argparse.Namespace) -> None:
    """One checkpoint's cosine scores on the pairs from the LFW latents, saved for `compare`."""
    from cdfv.trainer.checkpoint import load_checkpoint
    from cdfv.trainer.data import probe_input
    from cdfv.trainer.train import TrainConfig, transplant_model

    use_adapter(a.adapter, a.codec_weights, a.quality)
    name = f"latents-q{a.quality}"
    train = open_shard_set(name, a.train_root)
    lfw = {s["__key__"]: s[spec.LATENT] for s in open_shard_set(name, a.lfw_root).samples((spec.LATENT,))}
    keys = sorted(lfw)
    index = {k: i for i, k in enumerate(keys)}
    latents = torch.from_numpy(np.stack([lfw[k] for k in keys]).astype(np.float32))
    pairs = read_pairs(a.pairs)
    ckpt = load_checkpoint(Path(a.checkpoint), ("model", "config", "step", "epoch"))
    cfg = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k != "augment"})
    model = transplant_model(train, probe_input(train), cfg)
    model.load_state_dict(ckpt["model"])  # its resampling grid included
    model.eval()
    with torch.no_grad():
        emb = F.normalize(torch.cat([model(latents[i : i + 128]) for i in range(0, len(latents), 128)]), dim=1).numpy()
    scores = np.array([float(emb[index[p.probe]] @ emb[index[p.reference]]) for p in pairs])
    np.save(a.out, scores)
    m = point_metrics(np.array([p.label for p in pairs]), scores)
    print(a.checkpoint, {k: round(float(m[k]), 4) for k in ("tar_at_far_1e-2", "tar_at_far_1e-3", "auc", "eer")})


def compare(a: argparse.Namespace) -> None:
    """Paired bootstrap of B - A (TAR@FAR=1e-2, AUC): genuine and impostor pairs resampled, the same for both."""
    labels = np.array([p.label for p in read_pairs(a.pairs)])
    differences = paired_differences(labels, np.load(a.a), np.load(a.b), a.replicates)
    for metric in ("tar_at_far_1e-2", "auc"):
        d = differences[metric]
        lo, hi = np.percentile(d, [2.5, 97.5])
        print(f"{metric}: B - A {d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}], above 0 in {(d > 0).mean():.0%} of replicates")


def agreement(a: argparse.Namespace) -> None:
    """How close two sets' teacher embeddings of the same views are (plain cosine, and about set A's
    mean as the transplant loss takes it): with A the original views' and B the decoded views', the
    most a student of the original view's teacher could reach by mimicking dlib on decoded faces."""
    first = {s["__key__"]: s[spec.TEACHER] for s in open_shard_set(a.name, a.a).samples((spec.TEACHER,))}
    second = {s["__key__"]: s[spec.TEACHER] for s in open_shard_set(a.name, a.b).samples((spec.TEACHER,))}
    keys = sorted(first)
    if sorted(second) != keys:
        raise SystemExit(f"{a.a} and {a.b} hold different samples")
    x, y = np.stack([first[k] for k in keys]), np.stack([second[k] for k in keys])
    mean = x.mean(axis=0)
    xc, yc = x - mean, y - mean
    centred = (xc * yc).sum(1) / np.linalg.norm(xc, axis=1) / np.linalg.norm(yc, axis=1)
    print(f"{len(keys)} views: plain cosine {(x * y).sum(1).mean():.4f}, centred {centred.mean():.4f} (median {np.median(centred):.4f})")


def plot(a: argparse.Namespace) -> None:
    """TAR@FAR=1e-2 and AUC against training views (the fixed adapter, the original view's teacher,
    2 views a photo) per quality, every other variant as a point, and each quality's goal line."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(a.csv)))
    goal = dict(pair.split("=") for pair in a.goal.split(","))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("tar_at_far_1e-2", "auc")):
        for q, colour in (("1", "tab:blue"), ("3", "tab:orange")):
            curve = sorted((int(r["training_views"]), float(r[metric])) for r in rows
                           if r["quality"] == q and r["adapter"] == "fixed" and r["teacher_view"] == "original" and r["views_per_photo"] == "2")
            ax.plot(*zip(*curve), "o-", color=colour, label=f"q{q}: the report's recipe")
            others = [r for r in rows if r["quality"] == q and (r["adapter"] != "fixed" or r["teacher_view"] != "original"
                                                                 or r["views_per_photo"] != "2")]
            for i, r in enumerate(sorted(others, key=lambda r: -float(r[metric]))):
                ax.plot(int(r["training_views"]), float(r[metric]), "x", color=colour)
                ax.annotate(r["variant"] + (" (half its schedule)" if r["note"].startswith("stopped") else ""),
                            (int(r["training_views"]), float(r[metric])), fontsize=7, xytext=(-8, 30 - 11 * i),
                            textcoords="offset points", ha="right", arrowprops={"arrowstyle": "-", "lw": 0.4})
            if metric == "tar_at_far_1e-2" and q in goal:
                ax.axhline(float(goal[q]), color=colour, ls="--", lw=0.8, label=f"q{q} goal (dlib decoded - 0.05)")
        ax.set_xscale("log", base=2)
        views = sorted({int(r["training_views"]) for r in rows})
        ax.set_xticks(views, [str(v) for v in views])
        ax.minorticks_off()
        ax.set_xlabel("training views (CelebA; 2 per photo on the lines)")
        ax.set_ylabel(metric.replace("tar_at_far_", "TAR@FAR=").upper() if metric == "auc" else metric.replace("tar_at_far_", "TAR@FAR="))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("level0 transplanted students on LFW View 1 pairsDevTest (1,000 pairs), 8-epoch schedule", fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)


def main() -> None:
    argv = sys.argv[1:]
    rest: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("decoded-teacher")
    d.add_argument("--quality", type=int, default=1)
    d.add_argument("--weights", required=True)
    d.add_argument("source")
    d.add_argument("out")
    h = sub.add_parser("half")
    h.add_argument("name")
    h.add_argument("source")
    h.add_argument("out")
    for name in ("trainer", "curve", "score"):
        s = sub.add_parser(name)
        s.add_argument("--adapter", choices=sorted(ADAPTERS), default="fixed")
        s.add_argument("--codec-weights")
        s.add_argument("--quality", type=int, default=1)
    sc = sub.choices["score"]
    sc.add_argument("--pairs", required=True)
    sc.add_argument("--lfw-root", required=True)
    sc.add_argument("--train-root", required=True)
    sc.add_argument("--out", required=True)
    sc.add_argument("checkpoint")
    c = sub.add_parser("compare")
    c.add_argument("--pairs", required=True)
    c.add_argument("--replicates", type=int, default=1000)
    c.add_argument("a")
    c.add_argument("b")
    ag = sub.add_parser("agreement")
    ag.add_argument("--name", default="latents-q1")
    ag.add_argument("a")
    ag.add_argument("b")
    pl = sub.add_parser("plot")
    pl.add_argument("--goal", default="1=0.860,3=0.906", help="quality=TAR@FAR=1e-2 the goal needs, comma-separated")
    pl.add_argument("--out", required=True)
    pl.add_argument("csv")
    a = p.parse_args(argv)
    {"decoded-teacher": lambda: decoded_teacher(a), "half": lambda: half(a), "trainer": lambda: trainer(a, rest),
     "curve": lambda: curve(a, rest), "score": lambda: score(a), "compare": lambda: compare(a),
     "agreement": lambda: agreement(a), "plot": lambda: plot(a)}[a.command]()


if __name__ == "__main__":
    main()
