"""cdfv-eval: LFW-protocol verification of the original anchor, decoded anchors and compressed-
domain models side by side; scores to Parquet, metrics with confidence intervals, plots, complexity.

`cdfv-eval --pairs ...` is `cdfv-eval run --pairs ...`."""
from __future__ import annotations

import csv
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from cdfv.logs import log_to_stderr
from cdfv.options import common_options, version_option
from cdfv.outlock import LOCK_NAME, output_lock
from cdfv.shards import atomic_write_bytes

from .scores import POLICIES

log = logging.getLogger(__name__)

BOOTSTRAP_HELP = "bootstrap replicates for the confidence intervals (0: none)"
BD_ANCHOR_HELP = ("plot line every other line's Bjontegaard deltas are measured against, e.g. "
                  "'resnet50 decoded jpeg2000-ratio' (default: the decoded line of each line's learned codec)")


class DefaultRun(click.Group):
    """A group whose bare options go to `run`, so `cdfv-eval --pairs pairs.txt ...` works, and
    whose commands report a user's mistake (a malformed pairs file, a wrong shard set or model, a
    missing face under --missing error) as one line instead of a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from .scores import MissingPairs

        try:
            return super().invoke(ctx)
        except (ValueError, FileNotFoundError, MissingPairs) as e:
            raise click.ClickException(str(e)) from e
        except OSError as e:  # a full disk, a read-only output directory
            raise click.ClickException(f"{e.filename + ': ' if e.filename else ''}{e.strerror or e}") from e


def check_writable(directory: Path) -> None:
    """Fails before any scoring when the results cannot be written (read-only, a file in the way)."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".cdfv-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    finally:
        probe.unlink(missing_ok=True)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@click.group(cls=DefaultRun, context_settings={"help_option_names": ["-h", "--help"]})
@version_option
def main() -> None:
    """Face verification on the LFW protocol: original anchor (both faces original), decoded
    anchors (probe = first image of each pair decoded, reference original) and compressed-domain
    models (both faces as latents), with metrics, confidence intervals, plots and complexity.

    \b
    cdfv-eval --pairs pairs.txt --faces faces --image-model resnet50.pt \\
              --decoded decoded-q1 --decoded decoded-q6 \\
              --compressed cresnet39-q1.pt=latents-q1 --out results/
    cdfv-eval report results/scores/*.parquet --out report/
    cdfv-eval complexity --time --device cuda
    """
    log_to_stderr()


@main.command()
@click.option("--pairs", "pairs_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="LFW pairs.txt (View 2), pairsDevTrain/DevTest.txt (View 1) or a CSV probe,reference,label[,fold]")
@click.option("--faces", help="shard set of original aligned faces: both faces of the original anchor, the references of decoded anchors")
@click.option("--image-model", metavar="dlib|dlib-native|FILE.onnx|MODEL.pt",
              help="face model for the original and decoded anchors: dlib (dlib's ResNet descriptor as a torch module on "
                   "--device; dlib-native: dlib's own C++, the reference), an ArcFace-style "
                   "ONNX file, or a model.pt from cdfv-train (ResNet50)")
@click.option("--onnx-channels", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True,
              help="channel order an ONNX --image-model takes (insightface's ArcFace models: rgb)")
@click.option("--decoded", "decoded_sets", multiple=True, help="shard set of decoded faces (repeatable): one decoded anchor each")
@click.option("--compressed", "compressed_runs", multiple=True, metavar="MODEL=SET",
              help="exported latent model and its latent shard set (repeatable): one compressed-domain run each")
@click.option("--no-original", is_flag=True, help="skip the original anchor even when --faces and --image-model are given")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help="directory holding shard sets named by name (default $CDFV_SHARDS); a path is used as is")
@click.option("--missing", type=click.Choice(POLICIES), default="error", show_default=True,
              help="pairs lacking a face: error stops; skip keeps the row unscored; min-score scores -1; "
                   "worst-score scores genuine -1, impostor +1. Rows are never dropped and the count is reported")
@click.option("--flip", is_flag=True, help="flip test-time augmentation (image models only; refused for latents)")
@click.option("--device", default=default_device, show_default="cuda if present, else cpu")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="for model.pt models and dlib; dlib-native and ONNX run in fp32 (recorded per run)")
@click.option("--batch-size", default=128, show_default=True, help="images or latents per forward pass")
@click.option("--bootstrap", default=1000, show_default=True, help=BOOTSTRAP_HELP)
@click.option("--bd-anchor", metavar="LINE", help=BD_ANCHOR_HELP)
@click.option("--damaged", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="a damaged or missing shard stops the run, or (skip) is read past: its intact samples are kept and the "
                   "pairs it loses are missing, with the reason, under the --missing policy")
@click.option("--allow-latent-mismatch", is_flag=True,
              help="score a --compressed model on latents other than those it was trained on (another codec, metric, "
                   "quality or codec weights; refused by default): recorded in its scores file, marked in the report")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results"), show_default=True,
              help="writes scores/<run>.parquet and report/ (metrics.csv/.md/.json, bd.csv/.json, rd-<codec>.json, plots), "
                   "all replaced together or, on an error, none")
@common_options
def run(pairs_path: Path, faces: str | None, image_model: str | None, onnx_channels: str, decoded_sets: tuple[str, ...],
        compressed_runs: tuple[str, ...], no_original: bool, root: Path | None, missing: str, flip: bool,
        device: str, precision: str, batch_size: int, bootstrap: int, bd_anchor: str | None, damaged: str,
        allow_latent_mismatch: bool, out: Path) -> None:
    """Scores every pair for each solution given, then writes the side-by-side report; the scores
    files and the report replace an earlier run's in --out together, or on an error not at all."""
    from cdfv.atomic import atomic_files
    from cdfv.shards import open_shard_set, remove_stale_temporaries

    from .embed import check_compatible
    from .evaluate import EmbeddingCache, codec_fields, evaluate, latent_mismatch, run_name
    from .facemodels import FaceModel, load_face_model
    from .protocol import pairs_sha256, read_pairs
    from .report import write_report
    from .runs import other_pairs_scores
    from .scores import scores_bytes

    if (decoded_sets or faces or image_model) and (faces is None or image_model is None):
        raise click.UsageError("the original and decoded anchors need both --faces (references) and --image-model")
    pairs = read_pairs(pairs_path)  # a wrong pairs file stops the command before it makes --out
    pairs_digest = pairs_sha256(pairs_path)  # every figure names the pairs file it comes from
    click.get_current_context().with_resource(output_lock(out))  # held until the command ends
    check_writable(out / "scores")
    check_writable(out / "report")
    remove_stale_temporaries(out / "scores")
    log.info("%s: %d pairs, %d same-person", pairs_path, len(pairs), sum(p.label for p in pairs))
    jobs = []  # (mode, model spec, probe set, reference set)
    if faces and image_model and not no_original:
        jobs.append(("original", image_model, faces, faces))
    jobs += [("decoded", image_model, name, faces) for name in decoded_sets]
    for spec in compressed_runs:
        model_path, sep, set_name = spec.partition("=")
        if not sep or not model_path or not set_name:
            raise click.UsageError(f"--compressed {spec!r}: expected MODEL=SET")
        jobs.append(("compressed", model_path, set_name, set_name))
    if not jobs:
        raise click.UsageError("nothing to evaluate: give --faces with --image-model, --decoded or --compressed")
    models: dict[str, FaceModel] = {}
    runs = {}  # run name -> (mode, model spec, probe set, reference set, latent mismatch): all checked before any scoring
    for mode, model_spec, probe_name, reference_name in jobs:
        if model_spec not in models:
            models[model_spec] = load_face_model(model_spec, device, flip=flip, precision=precision, onnx_channels=onnx_channels)
        probe_set, reference_set = (open_shard_set(name, root, damage=damaged) for name in (probe_name, reference_name))
        info = models[model_spec].info
        for shard_set in (probe_set, reference_set):  # images to an image model, latents to a latent model
            check_compatible(models[model_spec], shard_set)
        mismatch = None
        if mode == "compressed":
            mismatch = latent_mismatch(f"--compressed {model_spec}", info, probe_set, allow_latent_mismatch)
        name = run_name(info["arch"], mode, *codec_fields(probe_set))
        if name in runs:  # one scores file per run name: the second would replace the first
            raise click.UsageError(f"{mode} {model_spec} on {probe_name} and {runs[name][0]} {runs[name][1]} on "
                                   f"{runs[name][2].name} are both run {name}; give each its own cdfv-eval run --out")
        runs[name] = (mode, model_spec, probe_set, reference_set, mismatch)
    other = other_pairs_scores(out / "scores", pairs_digest, {f"{name}.parquet" for name in runs})
    if other:
        raise click.UsageError(f"{out / 'scores'} holds an earlier run's scores of another pairs file, which this run "
                               f"({pairs_path.name}) would leave beside its own: {'; '.join(other)}; give another --out "
                               f"or remove them")
    cache = EmbeddingCache(damage_policy=damaged)
    contents = {}
    for mode, model_spec, probe_set, reference_set, mismatch in runs.values():
        table, meta = evaluate(pairs, mode, models[model_spec], probe_set, reference_set, missing, batch_size, cache)
        meta["pairs_file"], meta["pairs_sha256"] = str(pairs_path), pairs_digest
        if mismatch:
            meta["latent_mismatch"] = mismatch
            log.warning("%s: scored with --allow-latent-mismatch: %s", meta["run"], mismatch)
        contents[f"{meta['run']}.parquet"] = scores_bytes(table, meta)
        log.info("%s: %d pairs, %d missing (%s), %d images embedded", meta["run"], meta["pairs"], meta["missing_pairs"],
                 missing, meta["embedded_images"])
    report_dir = out / "report"
    try:
        with atomic_files(out / "scores", contents) as written:
            files = write_report(written, report_dir, bootstrap, bd_anchor=bd_anchor)
    except OSError as e:  # say the report is untouched where the report's own swap has not said so
        said = f"{report_dir} is left as it was"
        raise OSError(e.errno, e.strerror if said in str(e.strerror) else f"{e.strerror}; {said}", e.filename) from e
    log.info("scores: %s", ", ".join(str(p) for p in written))
    click.echo((out / "report" / "metrics.md").read_text())
    click.echo(f"report: {', '.join(str(f) for f in files)}")


@main.command()
@click.argument("score_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True)
@click.option("--bootstrap", default=1000, show_default=True, help=BOOTSTRAP_HELP)
@click.option("--seed", default=0, show_default=True, help="bootstrap seed")
@click.option("--bd-anchor", metavar="LINE", help=BD_ANCHOR_HELP)
@common_options
def report(score_files: tuple[Path, ...], out: Path, bootstrap: int, seed: int, bd_anchor: str | None) -> None:
    """Metrics table (Markdown, CSV, JSON), Bjontegaard deltas, rate-distortion JSON per codec and
    plots across scores files."""
    from .report import write_report

    out.parent.mkdir(parents=True, exist_ok=True)
    click.get_current_context().with_resource(output_lock(out.parent, f"{LOCK_NAME}-{out.name}"))
    files = write_report(list(score_files), out, bootstrap, seed, bd_anchor)
    click.echo((out / "metrics.md").read_text())
    click.echo(f"report: {', '.join(str(f) for f in files)}")


@main.command()
@click.option("--qualities", default="1,3,6,8", show_default=True, help="codec qualities")
@click.option("--codec", default="bmshj2018-hyperprior", show_default=True, help="learned codec (CompressAI zoo name)")
@click.option("--image-model", metavar="dlib|dlib-native|FILE.onnx|MODEL.pt",
              help="face model of the original and decoded anchors (default: untrained ResNet50, thesis size for the "
                   "MACs, --width for the time)")
@click.option("--compressed", "compressed_models", multiple=True, metavar="MODEL.pt",
              help="latent model (repeatable), reported at each quality whose M it takes, narrowed to the codec quality "
                   "of its training latents when its info records them (default: untrained cResNet39 per quality)")
@click.option("--codec-weights", metavar="PATTERN", multiple=True,
              help="codec weights per quality for the decoded anchor's g_s, {quality} in the name, e.g. codec-q{quality}.pt "
                   "(default: the untrained architecture: the same MACs and time); repeatable: one codec each (a variant "
                   "trained here, e.g. an identity codec, named by it), a --compressed model reported with the codec of its "
                   "training latents")
@click.option("--time/--no-time", "timed", default=False, show_default=True, help="also measure ms per batch and per pair")
@click.option("--device", default=default_device, show_default="cuda if present, else cpu")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="for model.pt models and dlib; dlib-native and ONNX run in fp32")
@click.option("--batch-pairs", default=64, show_default=True, help="pairs per timed batch (thesis: 64)")
@click.option("--repeats", default=50, show_default=True, help="timed batches (thesis: 50)")
@click.option("--warmup", default=5, show_default=True, help="untimed batches first")
@click.option("--width", default=64, show_default=True, help="width of the default untrained models for timing (64 = thesis models)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="also write the table as CSV")
@common_options
def complexity(qualities: str, codec: str, image_model: str | None, compressed_models: tuple[str, ...],
               codec_weights: tuple[str, ...], timed: bool, device: str, precision: str, batch_pairs: int, repeats: int,
               warmup: int, width: int, out: Path | None) -> None:
    """Table 7: GMAC and kMAC/px per face of each solution (the hyper-decoder of entropy decoding
    included), counted as Table 7 does (transposed convolutions at output resolution) and as
    performed, optionally timed with entropy decoding beside; for the thesis-size untrained models
    or the models of a run."""
    import torch

    from .complexity import TimingPlan, complexity_report, markdown_table

    try:
        qs = tuple(int(q) for q in qualities.split(","))
    except ValueError:
        raise click.BadParameter(f"{qualities!r}: expected comma-separated integers", param_hint="--qualities") from None
    plan = TimingPlan(torch.device(device), batch_pairs, repeats, warmup) if timed else None
    rows, notes = complexity_report(qs, codec, image_model, compressed_models, codec_weights, plan, width, precision)
    click.echo(markdown_table(rows))
    for note in notes:
        click.echo(note)
    if out is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(out, buffer.getvalue().encode())


if __name__ == "__main__":
    sys.exit(main())
