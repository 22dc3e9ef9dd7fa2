"""The steps of a reproduction, in order, each one or more cdfv commands.

Learned once (`learn`): face preparation of the CelebA photos and natural images;
bmshj2018-hyperprior codecs trained here; augmented views of the CelebA training faces with dlib's
embeddings (and feature maps) as teacher targets; their latents at every quality; compressed-domain
cResNet39 students distilled from dlib with the identity losses, and transplanted students (an
adapter into dlib's own later layers, one per junction); a ResNet50 trained by the thesis recipe.

Measured per pairs file (`measure`): the LFW faces the pairs name, prepared and coded by the
learned codecs; the decoded anchors (learned codec, JPEG, JPEG 2000, HEVC-intra rate-matched);
the evaluation with dlib and the ResNet50 as face models; the report, Table 7 and a summary naming
every data set, weight file and preset.

Training faces come from the CelebA folders only, so the models are valid on every LFW protocol.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cdfv.pipeline.codecs import CodecSpec
from cdfv.pipeline.naming import set_name

from .presets import Preset
from .steps import Evaluation, Layout, Steps, resuming

if TYPE_CHECKING:
    from cdfv.eval.protocol import Pair

CODEC = "bmshj2018-hyperprior"
ANCHORS = ("jpeg", "jpeg2000", "hevc-intra")
DLIB = "dlib"


def coded_set(kind: str, q: int) -> str:
    """The name cdfv-prep gives a set of the learned codec's latents or decoded faces at quality q."""
    return set_name(kind, CodecSpec(CODEC, q))


def _link(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        dest.symlink_to(source.resolve())


def link_training(layout: Layout, preset: Preset) -> dict[str, Any]:
    """Folders of links the training commands read: CelebA identities (capped per preset) for the
    face models, and the same faces with the natural images for the codecs."""
    celeba, codec = layout.work / "celeba", layout.work / "codec-train"
    counts = {"celeba_identities": 0, "celeba_photos": 0, "natural": 0}
    identities = []
    for folder in ("celeba-subset", "celeba-more"):
        root = layout.data / folder
        if not root.is_dir():
            raise click.ClickException(f"{root}: no such folder of CelebA identities (the data folder's layout: see --help)")
        identities += sorted(p for p in root.iterdir() if p.is_dir())
    for ident in identities[: preset.identities]:
        photos = sorted(p for p in ident.iterdir() if p.is_file())[: preset.per_identity]
        counts["celeba_identities"] += 1
        for photo in photos:
            _link(photo, celeba / ident.name / photo.name)
            _link(photo, codec / ident.name / photo.name)
            counts["celeba_photos"] += 1
    for picture in sorted(p for p in (layout.data / "natural").rglob("*") if p.is_file()):
        _link(picture, codec / f"natural-{picture.parent.name}" / picture.name)
        counts["natural"] += 1
    return counts


def lfw_sources(evaluation: Evaluation, pairs: list[Pair]) -> dict[str, Path]:
    """Every LFW image the pairs (read from evaluation.pairs) name, by shard key (<person>__<image
    stem>), each found under the image root: cdfv-reproduce checks them all before any training, so
    a wrong key or an absent image stops it at once, in one line naming the pairs file's line."""
    sources: dict[str, Path] = {}
    for pair in pairs:
        for key in (pair.probe, pair.reference):
            if key in sources:
                continue
            parts = key.split("__")
            if len(parts) != 2 or not all(parts) or any("/" in p or p == ".." for p in parts):
                raise click.ClickException(f"{evaluation.pairs}:{pair.line}: key {key!r} is not <person>__<image stem> "
                                           f"(e.g. Aaron_Eckhart__Aaron_Eckhart_0001, the image <person>/<stem>.jpg)")
            source = evaluation.images / parts[0] / f"{parts[1]}.jpg"
            if not source.is_file():
                raise click.ClickException(f"{evaluation.pairs}:{pair.line}: names {key}, but {source} is absent")
            sources[key] = source
    return sources


def link_lfw(evaluation: Evaluation) -> dict[str, Any]:
    """The LFW images the pairs file names, and only those, in the LFW layout."""
    from cdfv.eval.protocol import read_pairs

    pairs = read_pairs(evaluation.pairs)
    sources = lfw_sources(evaluation, pairs)
    for source in sources.values():
        _link(source, evaluation.work / "lfw" / source.parent.name / source.name)
    return {"pairs": len(pairs), "lfw_images": len(sources), **evaluation.record()}


def learn(steps: Steps, layout: Layout, preset: Preset, qualities: tuple[int, ...], device: str) -> None:
    """Everything trained, once per run whatever the pairs file."""
    from cdfv.eval.facemodels import DLIB_ARCH
    from cdfv.pipeline.cli import main as prep
    from cdfv.trainer.cli import main as train

    celeba, codecs = layout.shards / "celeba", layout.shards / "codec"
    dev = ["--device", device]
    views = f"faces-views{preset.views}"
    taught = f"{views}-{DLIB_ARCH}"  # the name cdfv-prep teacher gives the taught views

    steps.run("link", lambda: link_training(layout, preset))
    steps.run("faces-celeba", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--dataset", "folder", "--root", layout.work / "celeba", "--outputs", "faces", "--off-centre", "largest",
        "--out", celeba]))
    steps.run("faces-codec", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--dataset", "folder", "--root", layout.work / "codec-train", "--outputs", "faces", "--off-centre", "largest",
        "--no-face", "whole", "--out", codecs]))
    for q in qualities:
        init = preset.codec_init.get(q)
        start = (["--codec-weights", layout.codec(init)] if init in qualities else
                 ["--untrained-codec", *(["--eb-init-scale", preset.codec_eb_init_scale] if preset.codec_eb_init_scale else [])])
        steps.run(f"codec-q{q}", lambda q=q, start=start: steps.command(train, "cdfv-train", [
            "--task", "codec", "--shards", "faces", "--root", codecs, "--quality", q, *start,
            "--max-steps", preset.codec_steps[q], "--epochs", 1000, "--batch-size", preset.codec_batch, "--lr", preset.codec_lr,
            "--lr-schedule", preset.codec_schedule,
            *(["--patch", preset.codec_patch] if preset.codec_patch else []), "--workers", preset.workers, *dev,
            *resuming(layout.codec(q).parent / "codec-checkpoint.pt"), "--out", layout.codec(q).parent]))
    steps.run("views", lambda: steps.command(prep, "cdfv-prep", ["views", "--input", "faces", "--views", preset.views,
                                                                 "--out", celeba]))
    maps = ["--maps", ",".join(preset.transplant_junctions)] if preset.transplant_junctions else []
    steps.run("teacher", lambda: steps.command(prep, "cdfv-prep", ["teacher", "--model", DLIB, "--input", views, *maps,
                                                                   "--out", celeba, "--batch-size", 64]))
    steps.run("latents-celeba", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--input", taught, "--quality", ",".join(map(str, qualities)), "--weights", codec_pattern(layout),
        "--outputs", "latents", *dev, "--out", celeba]))
    for q in qualities:
        steps.run(f"student-q{q}", lambda q=q: steps.command(train, "cdfv-train", [
            "--shards", coded_set("latents", q), "--root", celeba, "--arch", "cresnet39", "--phase", "distill",
            "--width", preset.student_width, "--epochs", preset.student_epochs, "--batch-size", preset.student_batch,
            "--workers", preset.workers, *dev, *resuming(layout.student(q).parent / "checkpoint.pt"),
            "--out", layout.student(q).parent]))
        for junction in preset.transplant_junctions:
            run = layout.transplant(q, junction).parent
            steps.run(f"transplant-{junction}-q{q}", lambda q=q, junction=junction, run=run: steps.command(train, "cdfv-train", [
                "--shards", coded_set("latents", q), "--root", celeba, "--phase", "transplant",
                "--junction", junction, "--epochs", preset.transplant_epochs, "--batch-size", preset.transplant_batch,
                "--workers", preset.workers, *dev, *resuming(run / "checkpoint.pt"), "--out", run]))
    steps.run("resnet50", lambda: steps.command(train, "cdfv-train", [
        "--shards", "faces", "--root", celeba, "--arch", "resnet50", "--width", preset.resnet_width,
        "--classify-epochs", preset.resnet_epochs[0], "--arcface-epochs", preset.resnet_epochs[1],
        "--batch-size", preset.resnet_batch, "--workers", preset.workers, *dev,
        *resuming(layout.runs / "resnet50" / "checkpoint.pt"), "--out", layout.runs / "resnet50"]))


def compressed_models(layout: Layout, preset: Preset, q: int) -> list[Path]:
    """The compressed-domain models of one quality: the from-scratch cResNet39 (the thesis's), then
    a transplanted student per junction."""
    return [layout.student(q), *(layout.transplant(q, j) for j in preset.transplant_junctions)]


def codec_pattern(layout: Layout) -> str:
    return str(layout.runs / "codec-q{quality}" / "codec.pt")


def measure(steps: Steps, layout: Layout, evaluation: Evaluation, preset: Preset, qualities: tuple[int, ...],
            device: str) -> None:
    """Everything one pairs file needs, from the models `learn` left; trains nothing."""
    from cdfv.eval.cli import main as evaluate
    from cdfv.eval.facemodels import DLIB_ARCH
    from cdfv.pipeline.cli import main as prep

    lfw, results, report = evaluation.lfw, evaluation.results, evaluation.report
    dev = ["--device", device]
    quality_list = ",".join(map(str, qualities))

    steps.run("link-lfw", lambda: link_lfw(evaluation))
    steps.run("faces-lfw", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--dataset", "lfw", "--root", evaluation.work / "lfw", "--outputs", "faces", "--out", lfw]))
    steps.run("coded-lfw", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--input", "faces", "--quality", quality_list, "--weights", codec_pattern(layout),
        "--outputs", "latents,decoded", *dev, "--out", lfw]))
    steps.run("anchors", lambda: conventional_anchors(steps, prep, lfw, qualities))
    decoded = [coded_set("decoded", q) for q in qualities]
    anchors = steps.record("anchors")["sets"]
    students = [(q, model) for q in qualities for model in compressed_models(layout, preset, q)]
    compressed = [f"{model}={coded_set('latents', q)}" for q, model in students]
    common = ["--pairs", evaluation.pairs, "--root", lfw, "--faces", "faces", *dev, "--bootstrap", 1000]
    steps.run("eval-dlib", lambda: steps.command(evaluate, "cdfv-eval", [
        "run", *common, "--image-model", DLIB, *sum((["--decoded", d] for d in decoded + anchors), []),
        *sum((["--compressed", c] for c in compressed), []), "--out", results / "dlib"]))
    steps.run("eval-resnet50", lambda: steps.command(evaluate, "cdfv-eval", [
        "run", *common, "--image-model", layout.runs / "resnet50" / "model.pt", *sum((["--decoded", d] for d in decoded), []),
        "--out", results / "resnet50"]))
    steps.run("report", lambda: steps.command(evaluate, "cdfv-eval", [
        "report", *sorted((results / "dlib" / "scores").glob("*.parquet")), *sorted((results / "resnet50" / "scores").glob("*.parquet")),
        "--bd-anchor", f"{DLIB_ARCH} decoded {CODEC}-mse", "--out", report]))  # dlib on the learned codec's decoded faces
    steps.run("table7", lambda: steps.command(evaluate, "cdfv-eval", [
        "complexity", "--qualities", quality_list, "--image-model", DLIB, "--codec-weights", codec_pattern(layout),
        *sum((["--compressed", model] for _, model in students), []), "--time", *dev,
        "--batch-pairs", preset.timing[0], "--repeats", preset.timing[1], "--warmup", preset.timing[2],
        "--out", report / "table7.csv"]))


def conventional_anchors(steps: Steps, prep: click.Command, lfw: Path, qualities: tuple[int, ...]) -> dict[str, Any]:
    """JPEG, JPEG 2000 and HEVC-intra rate-matched to each learned-codec quality; a rate a codec
    cannot reach is listed, not fatal. JPEG's lowest rate, quality 1, is 0.12-0.13 bpp on these
    faces, of which its headers (quantisation and optimised Huffman tables, frame and scan headers)
    take about 0.044: 270-283 bytes, the rate-bearing file less its entropy-coded segment, measured
    with Pillow as the anchor codes (4:2:0, optimised) on 100 LFW faces cut to 224x224."""
    from cdfv import shards

    unreachable = []
    for codec in ANCHORS:
        for q in qualities:
            target = coded_set("decoded", q)
            try:
                steps.command(prep, "cdfv-prep", ["anchor", "--codec", codec, "--match", target, "--out", lfw])
            except click.ClickException as e:
                unreachable.append(f"{codec} at the rate of {target}: {e.format_message().splitlines()[-1].strip()}")
    made = sorted(s.name for s in (shards.open_shard_set(p) for p in lfw.iterdir() if (p / "index.json").exists())
                  if s.meta.get("stage") == "anchor")
    return {"sets": made, "unreachable": unreachable}
