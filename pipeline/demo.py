"""cdfv-demo: the whole job end to end on the embedded default, offline, in a few minutes on a CPU.

It runs the same commands a user runs, printing each one: every cdfv-prep stage on the synthetic
demo faces with an untrained codec, a conventional anchor, a short training of the face models,
and the evaluation table.
"""
from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

import click

from cdfv.options import common_options, passed_on, version_option

DATA_NOTE = (
    "data: 12 synthetic identities x 8 pictures made from matplotlib's sample photo grace_hopper.jpg "
    "(fixed per-identity stretch/tint/gamma/background, per-picture pose/scale/light/blur). "
    "Weights: CompressAI's pretrained weights cannot be downloaded here, so the bmshj2018-hyperprior q1 codec "
    "is trained from random weights (seed 0) for one epoch on these faces (weights id recorded in every output); "
    "ResNet50 and cResNet39 are narrow (width 8 / 16) and trained on these faces for the thesis's epochs. "
    "A smoke test of every stage, not a result."
)


def invoke(command: click.BaseCommand, prog: str, args: list[str]) -> None:
    """Runs one cdfv command in-process, echoing it as a user would type it; stops the demo with
    that command's message if it fails."""
    click.secho(f"\n$ {prog} {shlex.join(args)}", bold=True)
    try:
        command.main(args=args + passed_on(), prog_name=prog, standalone_mode=False)
    except click.ClickException as e:
        raise click.ClickException(f"{prog} {args[0] if args else ''} failed: {e.format_message()}") from e


def demo_data(data: Path) -> tuple[Path, Path]:
    """The demo's LFW-layout image folder and its pairs file beside it (as LFW ships them, so no
    file in the image folder is listed as skipped), made on the first run."""
    images, pairs = data / "lfw", data / "pairs.txt"
    if not (images.is_dir() and pairs.exists()):
        from .demodata import make_demo_dataset

        make_demo_dataset(images, pairs)
    return images, pairs


def prep_steps(out: Path, data: Path, codec_file: Path) -> list[tuple[str, list[str]]]:
    """The cdfv-prep commands after the faces exist and the codec is trained: every stage one by
    one, a conventional anchor, a repack, then the streaming run."""
    common = ["--out", str(out)]  # sets made from sets keep their input's shards (of 32 faces, from align)
    codec = ["--quality", "1", "--weights", str(codec_file)]
    dataset = ["--dataset", "lfw", "--root", str(data)]
    return [
        ("encode", codec + common),
        ("entropy-decode", codec + common),
        ("crop-latent", ["--quality", "1"] + common),
        ("decode", codec + common),
        ("anchor", ["--codec", "jpeg2000", "--match", "decoded-q1", "--name", "decoded-jpeg2000"] + common),
        ("shard", ["latents-q1", "--name", "latents-q1-repacked", "--members", "latent.npy,cls,json", "--chunk-size", "32"] + common),
        ("run", dataset + codec + ["--outputs", "latents", "--verify", "1.0"] + ["--out", str(out / "streamed"), "--chunk-size", "32"]),
    ]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@version_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="demo-out", show_default=True,
              help="Working directory (data, shards, runs, results); a re-run resumes in it.")
@click.option("--fresh", is_flag=True, help="Delete --out first.")
@common_options
def main(out: Path, fresh: bool) -> None:
    """Run cdfv end to end on the embedded demo data: prepare, train, evaluate."""
    from cdfv.eval.cli import main as evaluate
    from cdfv.trainer.cli import main as train

    from .cli import main as prep

    if fresh and out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    click.echo(DATA_NOTE)
    root, runs = out / "shards", out / "runs"
    images, pairs = demo_data(out / "data")
    dataset = ["--dataset", "lfw", "--root", str(images), "--out", str(root), "--chunk-size", "32"]
    invoke(prep, "cdfv-prep", ["detect"] + dataset)
    invoke(prep, "cdfv-prep", ["align"] + dataset)
    codec_file = runs / "codec-q1" / "codec.pt"
    if not codec_file.exists():
        invoke(train, "cdfv-train", ["--task", "codec", "--shards", "faces", "--root", str(root), "--untrained-codec",
                                     "--quality", "1", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                                     "--out", str(codec_file.parent)])
    for stage, args in prep_steps(root, images, codec_file):
        invoke(prep, "cdfv-prep", [stage] + args)
    models = {"cresnet39": ("latents-q1", "16"), "resnet50": ("faces", "8")}
    for arch, (shard_set, width) in models.items():
        if not (runs / arch / "model.pt").exists():
            invoke(train, "cdfv-train", ["--shards", shard_set, "--root", str(root), "--arch", arch, "--width", width,
                                         "--batch-size", "16", "--workers", "1", "--out", str(runs / arch)])
    results = out / "results"
    invoke(evaluate, "cdfv-eval", ["--pairs", str(pairs), "--root", str(root), "--faces", "faces",
                                   "--image-model", str(runs / "resnet50" / "model.pt"),
                                   "--decoded", "decoded-q1", "--decoded", "decoded-jpeg2000",
                                   "--compressed", f"{runs / 'cresnet39' / 'model.pt'}=latents-q1",
                                   "--bootstrap", "200", "--out", str(results)])
    click.secho(f"cdfv-demo finished in {time.perf_counter() - start:.0f} s; outputs under {out}/ "
                f"(plots in {results / 'report'})", bold=True)
    click.echo(DATA_NOTE)
