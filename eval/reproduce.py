"""cdfv-reproduce: the thesis comparison (chapter 6) on real faces, in one command.

From a data folder laid out like ../shared/data (LFW images and protocol files, folders of CelebA
photos per identity, natural images) it runs, printing each cdfv command and logging it to
<out>/commands.sh: face preparation; bmshj2018-hyperprior codecs trained here on faces and natural
images; augmented views of the CelebA training faces with dlib's embeddings as teacher targets;
latents of every quality; compressed-domain cResNet39 students distilled from dlib with the
identity losses; a ResNet50 trained by the thesis recipe; the decoded anchors (learned codec,
JPEG, JPEG 2000, HEVC-intra rate-matched); the evaluation on an LFW pairs file with dlib and the
ResNet50 as face models; Table 7 and a summary naming every data set, weight file and preset.

Training faces come from the CelebA folders only, so the models are valid on every LFW protocol.
Every step leaves <out>/steps/<step>.json when it finishes; a re-run skips finished steps.
"""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import click

from cdfv.options import common_options, passed_on, version_option
from cdfv.pipeline.codecs import CodecSpec
from cdfv.pipeline.naming import set_name
from cdfv.provenance import provenance
from cdfv.shards import atomic_write_bytes

CODEC = "bmshj2018-hyperprior"
ANCHORS = ("jpeg", "jpeg2000", "hevc-intra")
DLIB = "dlib"


@dataclass(frozen=True)
class Preset:
    """What a machine affords; every cut against the thesis is stated in the report."""

    name: str
    per_identity: int | None  # CelebA photos kept per identity (None: all)
    identities: int | None  # CelebA identities kept (None: all)
    views: int  # views per training face: the face and views-1 thesis augmentations
    codec_steps: dict[int, int]  # training steps per quality
    codec_init: dict[int, int | None]  # quality -> the quality whose trained codec it starts from
    codec_patch: int | None  # training crop side (None: the whole 256x256 padded face)
    codec_batch: int
    codec_lr: float
    student_width: int
    student_epochs: int
    student_batch: int
    resnet_width: int
    resnet_epochs: tuple[int, int]  # classify, arcface
    resnet_batch: int
    workers: int
    timing: tuple[int, int, int]  # Table 7's timing: pairs per batch, timed batches, warm-up batches (thesis: 64, 50, -)
    cuts: tuple[str, ...]  # what is cut against the thesis, in words


PRESETS = {
    "cpu": Preset(
        "cpu", per_identity=4, identities=None, views=2,
        codec_steps={1: 400, 3: 200, 6: 300, 8: 150}, codec_init={1: None, 3: 1, 6: None, 8: 6},
        codec_patch=128, codec_batch=8, codec_lr=3e-4,
        student_width=16, student_epochs=6, student_batch=32,
        resnet_width=8, resnet_epochs=(4, 2), resnet_batch=32, workers=1, timing=(16, 5, 1),
        cuts=(
            "training faces: at most 4 CelebA photos per identity (about 1,200 of 6,300), 2 views each (the face and one "
            "thesis augmentation), instead of VGGFace2's 3.1M",
            "codecs: bmshj2018-hyperprior trained here from random weights for 400 steps (q1) and 300 (q6), fine-tuned for "
            "200 (q3 from q1) and 150 (q8 from q6), batch 8 of 128x128 crops, Adam lr 3e-4, instead of CompressAI's "
            "pretrained weights (trained for days)",
            "cResNet39 students at width 16 (the thesis: 64), 6 epochs of distillation",
            "ResNet50 at width 8 (the thesis: 64), 4 + 2 epochs (the thesis: 10 + 5)",
            "Table 7 timed on 5 batches of 16 pairs after 1 warm-up batch (the thesis: 50 batches of 64 pairs)",
        )),
    "gpu": Preset(
        "gpu", per_identity=None, identities=None, views=4,
        codec_steps={1: 20000, 3: 10000, 6: 20000, 8: 10000}, codec_init={1: None, 3: 1, 6: None, 8: 6},
        codec_patch=256, codec_batch=16, codec_lr=1e-4,
        student_width=64, student_epochs=10, student_batch=64,
        resnet_width=64, resnet_epochs=(10, 5), resnet_batch=64, workers=8, timing=(64, 50, 5),
        cuts=(
            "training faces: all 6,300 CelebA photos, 4 views each, instead of VGGFace2's 3.1M",
            "codecs: bmshj2018-hyperprior trained here for 20,000 steps (q1, q6) and fine-tuned for 10,000 (q3, q8), "
            "batch 16, instead of CompressAI's pretrained weights",
        )),
    "smoke": Preset(
        "smoke", per_identity=4, identities=12, views=2,
        codec_steps={1: 20, 3: 10, 6: 20, 8: 10}, codec_init={1: None, 3: 1, 6: None, 8: 6},
        codec_patch=128, codec_batch=4, codec_lr=3e-4,
        student_width=4, student_epochs=1, student_batch=8,
        resnet_width=4, resnet_epochs=(1, 1), resnet_batch=8, workers=0, timing=(2, 2, 1),
        cuts=("a smoke test of the command on 48 faces: no result",)),
}


@dataclass(frozen=True)
class Layout:
    """Where the inputs are, and where each step writes."""

    data: Path
    pairs: Path
    images: Path
    out: Path

    @property
    def work(self) -> Path:
        return self.out / "work"

    @property
    def shards(self) -> Path:
        return self.out / "shards"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def report(self) -> Path:
        return self.out / "report"

    def codec(self, q: int) -> Path:
        return self.runs / f"codec-q{q}" / "codec.pt"

    def student(self, q: int) -> Path:
        return self.runs / f"cresnet39-q{q}" / "model.pt"


class Steps:
    """Runs named steps once: a step's record in <out>/steps marks it done, and every command it
    ran is printed and appended to <out>/commands.sh. `order` lists the steps in the order the run
    took them, done earlier or now, for the summary's times."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = out / "commands.sh"
        self.order: list[str] = []

    def done(self, name: str) -> bool:
        return (self.dir / f"{name}.json").exists()

    def record(self, name: str) -> dict[str, Any]:
        return json.loads((self.dir / f"{name}.json").read_text())

    def run(self, name: str, body: Callable[[], Any]) -> None:
        self.order.append(name)
        if self.done(name):
            click.secho(f"[{name}] done earlier ({self.record(name)['seconds']} s)", fg="green")
            return
        click.secho(f"[{name}]", bold=True)
        started = time.perf_counter()
        extra = body() or {}
        record = {"step": name, "seconds": round(time.perf_counter() - started, 1), **extra, "provenance": provenance()}
        atomic_write_bytes(self.dir / f"{name}.json", json.dumps(record, indent=1).encode())

    def command(self, group: click.Command, prog: str, args: list[Any]) -> None:
        """Runs one cdfv command in-process as a user would type it."""
        argv = [str(a) for a in args]
        line = f"{prog} {shlex.join(argv)}"
        click.secho(f"$ {line}", fg="cyan")
        with open(self.log, "a") as f:
            f.write(line + "\n")
        try:
            group.main(args=argv + passed_on(), prog_name=prog, standalone_mode=False)
        except click.ClickException as e:
            raise click.ClickException(f"{line}\n  failed: {e.format_message()}") from e
        except SystemExit as e:  # cdfv-train reports its error and exits 2
            if e.code:
                raise click.ClickException(f"{line}\n  failed (exit {e.code}; its error is printed above)") from e


def resuming(checkpoint: Path) -> list[str]:
    """A training step interrupted earlier continues from its checkpoint."""
    return ["--resume"] if checkpoint.exists() else []


def check_inputs(layout: Layout) -> None:
    """Stop before any work, in one line, when the pairs file cannot be read or the image root is missing."""
    from cdfv.eval.protocol import ProtocolError, read_pairs

    try:
        read_pairs(layout.pairs)
    except ProtocolError as e:
        raise click.ClickException(str(e)) from None
    if not layout.images.is_dir():
        raise click.ClickException(f"{layout.images}: no such folder of LFW images (--images, default DATA/lfw/deepfunneled)")


def link_folders(layout: Layout, preset: Preset) -> dict[str, Any]:
    """Folders of links the cdfv commands read: CelebA identities (capped per preset) for the
    face models, the same faces and the natural images for the codecs, and the LFW images the
    pairs file names, in the LFW layout."""
    from cdfv.eval.protocol import read_pairs

    celeba = layout.work / "celeba"
    codec = layout.work / "codec-train"
    lfw = layout.work / "lfw"
    counts = {"celeba_identities": 0, "celeba_photos": 0, "natural": 0, "lfw_images": 0}
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
            for dest in (celeba / ident.name / photo.name, codec / ident.name / photo.name):
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    dest.symlink_to(photo.resolve())
            counts["celeba_photos"] += 1
    natural = layout.data / "natural"
    for picture in sorted(p for p in natural.rglob("*") if p.is_file()):
        dest = codec / f"natural-{picture.parent.name}" / picture.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(picture.resolve())
        counts["natural"] += 1
    pairs = read_pairs(layout.pairs)
    for key in sorted({k for p in pairs for k in (p.probe, p.reference)}):
        name, stem = key.split("__")
        source = layout.images / name / f"{stem}.jpg"
        dest = lfw / name / source.name
        if not source.is_file():
            raise click.ClickException(f"{source}: named by {layout.pairs} but absent")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(source.resolve())
        counts["lfw_images"] += 1
    counts["pairs"] = len(pairs)
    return counts


def reproduce(layout: Layout, preset: Preset, qualities: tuple[int, ...], device: str) -> None:
    from cdfv.eval.cli import main as evaluate
    from cdfv.eval.facemodels import DLIB_ARCH
    from cdfv.pipeline.cli import main as prep
    from cdfv.trainer.cli import main as train

    steps = Steps(layout.out)
    shards, runs, results = layout.shards, layout.runs, layout.results
    celeba, codecs, lfw = shards / "celeba", shards / "codec", shards / "lfw"
    dev = ["--device", device]
    weights = str(layout.runs / "codec-q{quality}" / "codec.pt")
    quality_list = ",".join(map(str, qualities))
    views = f"faces-views{preset.views}"
    taught = f"{views}-dlib-resnet-v1"

    steps.run("link", lambda: link_folders(layout, preset))
    steps.run("faces-celeba", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--dataset", "folder", "--root", layout.work / "celeba", "--outputs", "faces", "--off-centre", "largest",
        "--out", celeba]))
    steps.run("faces-codec", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--dataset", "folder", "--root", layout.work / "codec-train", "--outputs", "faces", "--off-centre", "largest",
        "--no-face", "whole", "--out", codecs]))
    steps.run("faces-lfw", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--dataset", "lfw", "--root", layout.work / "lfw", "--outputs", "faces", "--out", lfw]))
    for q in qualities:
        init = preset.codec_init.get(q)
        start = ["--codec-weights", layout.codec(init)] if init in qualities else ["--untrained-codec"]
        steps.run(f"codec-q{q}", lambda q=q, start=start: steps.command(train, "cdfv-train", [
            "--task", "codec", "--shards", "faces", "--root", codecs, "--quality", q, *start,
            "--max-steps", preset.codec_steps[q], "--epochs", 1000, "--batch-size", preset.codec_batch, "--lr", preset.codec_lr,
            *(["--patch", preset.codec_patch] if preset.codec_patch else []), "--workers", preset.workers, *dev,
            *resuming(layout.codec(q).parent / "codec-checkpoint.pt"), "--out", layout.codec(q).parent]))
    steps.run("views", lambda: steps.command(prep, "cdfv-prep", ["views", "--input", "faces", "--views", preset.views,
                                                                 "--out", celeba]))
    steps.run("teacher", lambda: steps.command(prep, "cdfv-prep", ["teacher", "--model", DLIB, "--input", views,
                                                                   "--out", celeba, "--batch-size", 64]))
    steps.run("latents-celeba", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--input", taught, "--quality", quality_list, "--weights", weights, "--outputs", "latents", *dev,
        "--out", celeba]))
    steps.run("coded-lfw", lambda: steps.command(prep, "cdfv-prep", [
        "run", "--input", "faces", "--quality", quality_list, "--weights", weights, "--outputs", "latents,decoded", *dev,
        "--out", lfw]))
    steps.run("anchors", lambda: conventional_anchors(steps, prep, lfw, qualities))
    for q in qualities:
        steps.run(f"student-q{q}", lambda q=q: steps.command(train, "cdfv-train", [
            "--shards", set_name("latents", CodecSpec(CODEC, q)), "--root", celeba, "--arch", "cresnet39", "--phase", "distill",
            "--width", preset.student_width, "--epochs", preset.student_epochs, "--batch-size", preset.student_batch,
            "--workers", preset.workers, *dev, *resuming(layout.student(q).parent / "checkpoint.pt"),
            "--out", layout.student(q).parent]))
    steps.run("resnet50", lambda: steps.command(train, "cdfv-train", [
        "--shards", "faces", "--root", celeba, "--arch", "resnet50", "--width", preset.resnet_width,
        "--classify-epochs", preset.resnet_epochs[0], "--arcface-epochs", preset.resnet_epochs[1],
        "--batch-size", preset.resnet_batch, "--workers", preset.workers, *dev, *resuming(runs / "resnet50" / "checkpoint.pt"),
        "--out", runs / "resnet50"]))
    decoded = [set_name("decoded", CodecSpec(CODEC, q)) for q in qualities]
    anchors = steps.record("anchors")["sets"]
    compressed = [f"{layout.student(q)}={set_name('latents', CodecSpec(CODEC, q))}" for q in qualities]
    common = ["--pairs", layout.pairs, "--root", lfw, "--faces", "faces", *dev, "--bootstrap", 1000]
    steps.run("eval-dlib", lambda: steps.command(evaluate, "cdfv-eval", [
        "run", *common, "--image-model", DLIB, *sum((["--decoded", d] for d in decoded + anchors), []),
        *sum((["--compressed", c] for c in compressed), []), "--out", results / "dlib"]))
    steps.run("eval-resnet50", lambda: steps.command(evaluate, "cdfv-eval", [
        "run", *common, "--image-model", runs / "resnet50" / "model.pt", *sum((["--decoded", d] for d in decoded), []),
        "--out", results / "resnet50"]))
    steps.run("report", lambda: steps.command(evaluate, "cdfv-eval", [
        "report", *sorted((results / "dlib" / "scores").glob("*.parquet")), *sorted((results / "resnet50" / "scores").glob("*.parquet")),
        "--bd-anchor", f"{DLIB_ARCH} decoded {CODEC}-mse", "--out", layout.report]))  # dlib on the learned codec's decoded faces
    steps.run("table7", lambda: steps.command(evaluate, "cdfv-eval", [
        "complexity", "--qualities", quality_list, "--image-model", DLIB, "--codec-weights", weights,
        *sum((["--compressed", layout.student(q)] for q in qualities), []), "--time", *dev,
        "--batch-pairs", preset.timing[0], "--repeats", preset.timing[1], "--warmup", preset.timing[2],
        "--out", layout.report / "table7.csv"]))
    steps.run("summary", lambda: write_summary(layout, preset, qualities, steps))


def conventional_anchors(steps: Steps, prep: click.Command, lfw: Path, qualities: tuple[int, ...]) -> dict[str, Any]:
    """JPEG, JPEG 2000 and HEVC-intra rate-matched to each learned-codec quality; a rate a codec
    cannot reach (JPEG's headers alone cost about 0.1 bpp) is listed, not fatal."""
    from cdfv import shards

    unreachable = []
    for codec in ANCHORS:
        for q in qualities:
            target = set_name("decoded", CodecSpec(CODEC, q))
            try:
                steps.command(prep, "cdfv-prep", ["anchor", "--codec", codec, "--match", target, "--out", lfw])
            except click.ClickException as e:
                unreachable.append(f"{codec} at the rate of {target}: {e.format_message().splitlines()[-1].strip()}")
    made = sorted(s.name for s in (shards.open_shard_set(p) for p in lfw.iterdir() if (p / "index.json").exists())
                  if s.meta.get("stage") == "anchor")
    return {"sets": made, "unreachable": unreachable}


def write_summary(layout: Layout, preset: Preset, qualities: tuple[int, ...], steps: Steps) -> dict[str, Any]:
    from cdfv.eval.summary import write_reproduction_summary

    path = write_reproduction_summary(layout, preset, qualities, steps)
    click.echo(f"summary: {path}")
    return {"summary": str(path)}


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@version_option
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Data folder laid out like ../shared/data: lfw/deepfunneled, lfw/meta, celeba-subset, celeba-more, natural.")
@click.option("--pairs", type=click.Path(dir_okay=False, path_type=Path),
              help="Pairs file (default DATA/lfw/meta/pairsDevTest.txt; any LFW View 1/2 or CSV pairs file).")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="LFW image root for the pairs (default DATA/lfw/deepfunneled).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="cpu", show_default=True,
              help="cpu: finishes on 2 cores in about 90 minutes, with the cuts the report lists; gpu: thesis widths and epochs.")
@click.option("--qualities", default="1,3,6,8", show_default=True, help="bmshj2018-hyperprior qualities.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reproduction"), show_default=True,
              help="Working directory; a re-run resumes in it.")
@common_options
def main(data: Path, pairs: Path | None, images: Path | None, preset: str, qualities: str, device: str, out: Path) -> None:
    """Reproduce the thesis comparison on real faces: codecs, compressed-domain students distilled
    from dlib, anchors, evaluation, Table 7 and a summary."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    layout = Layout(data, pairs or data / "lfw" / "meta" / "pairsDevTest.txt", images or data / "lfw" / "deepfunneled", out)
    chosen = PRESETS[preset]
    try:
        qs = tuple(int(q) for q in qualities.split(","))
    except ValueError:
        raise click.UsageError(f"--qualities {qualities}: give comma-separated integers, e.g. 1,3,6,8") from None
    unknown = [q for q in qs if q not in chosen.codec_steps]
    if unknown:
        raise click.UsageError(f"--qualities {qualities}: the {preset} preset trains codecs for {sorted(chosen.codec_steps)}")
    check_inputs(layout)
    out.mkdir(parents=True, exist_ok=True)
    record = json.loads(json.dumps({**asdict(chosen), "qualities": qs, "device": device, "data": str(data),
                                    "pairs": str(layout.pairs), "images": str(layout.images)}, default=str))
    earlier = out / "preset.json"
    if earlier.exists():
        before = json.loads(earlier.read_text())
        differs = sorted(k for k in record.keys() | before.keys() if record.get(k) != before.get(k))
        if differs:
            raise click.UsageError(f"{out} holds a run with other settings ({', '.join(differs)} differ, see {earlier}): "
                                   "give another --out, or the same settings to resume it")
    else:
        atomic_write_bytes(earlier, json.dumps(record, indent=1).encode())
    reproduce(layout, chosen, qs, device)
