"""The cdfv-reproduce command: checks its inputs and settings before any work, then learns once
and measures per pairs file (plan.learn, plan.measure)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from cdfv.options import common_options, version_option
from cdfv.shards import atomic_write_bytes

from .presets import PRESETS
from .steps import Evaluation, Layout, Steps


def check_inputs(evaluation: Evaluation) -> None:
    """Stop before any work, in one line, when the pairs file cannot be read, the image root is
    missing, or a key of the pairs names no image in it (the evaluation half would fail on it only
    after the whole learning half)."""
    from cdfv.eval.protocol import ProtocolError, read_pairs

    from .plan import lfw_sources

    try:
        pairs = read_pairs(evaluation.pairs)
    except ProtocolError as e:
        raise click.ClickException(str(e)) from None
    if not evaluation.images.is_dir():
        raise click.ClickException(f"{evaluation.images}: no such folder of LFW images (--images, default DATA/lfw/deepfunneled)")
    lfw_sources(evaluation, pairs)


PATH_SETTINGS = ("data", "pairs_file", "images")  # settings that name a file or folder


def same_setting(key: str, a: Any, b: Any) -> bool:
    """Equal settings; a path setting is the same when both spellings name one file or folder (a
    symlink, a relative path, a trailing slash), so it is compared by what it names."""
    if a == b:
        return True
    try:
        return key in PATH_SETTINGS and isinstance(a, str) and isinstance(b, str) and os.path.samefile(a, b)
    except OSError:  # one of them no longer exists: not the same
        return False


def keep_settings(path: Path, record: dict[str, Any], what: str, remedy: str) -> None:
    """Writes the settings a folder was made with, or refuses to continue it with others."""
    record = json.loads(json.dumps(record, default=str))
    if path.exists():
        before = json.loads(path.read_text())
        differs = sorted(k for k in record.keys() | before.keys() if not same_setting(k, record.get(k), before.get(k)))
        if differs:
            raise click.UsageError(f"{path.parent} holds {what} with other settings ({', '.join(differs)} differ, see {path}): {remedy}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(record, indent=1).encode())


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@version_option
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="Data folder laid out like ../shared/data: lfw/deepfunneled, lfw/meta, celeba-subset, celeba-more, natural.")
@click.option("--pairs", type=click.Path(dir_okay=False, path_type=Path),
              help="Pairs file (default DATA/lfw/meta/pairsDevTest.txt; any LFW View 1/2 or CSV pairs file). Another pairs "
                   "file on a finished run reuses its models: only the LFW faces it names are coded, into OUT/evals/<pairs>.")
@click.option("--images", type=click.Path(file_okay=False, path_type=Path),
              help="LFW image root for the pairs (default DATA/lfw/deepfunneled).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="cpu", show_default=True,
              help="cpu: 2 cores in two hours, q1 only, with the cuts the report lists; gpu: thesis widths and epochs, q1 "
                   "and q3; smoke: tiny models, a check of the command.")
@click.option("--qualities",
              help="bmshj2018-hyperprior qualities, comma-separated (default: the preset's, cpu 1, gpu and smoke 1,3; the "
                   "presets train 1, 3, 6 and 8; each added quality roughly doubles the cpu preset's time).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reproduction"), show_default=True,
              help="Working directory; a re-run resumes in it.")
@common_options
def main(data: Path, pairs: Path | None, images: Path | None, preset: str, qualities: str | None, device: str,
         out: Path) -> None:
    """Reproduce the thesis comparison on real faces: codecs, compressed-domain students distilled
    from dlib, anchors, evaluation, Table 7 and a summary. What is learned is kept in OUT; each
    pairs file is measured in OUT/evals/<pairs stem>-<sha256[:8]>/, whose report/README.md is the summary."""
    import torch

    from .plan import learn, measure

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    layout = Layout(data, out)
    chosen = PRESETS[preset]
    try:
        qs = chosen.qualities if qualities is None else tuple(int(q) for q in qualities.split(","))
    except ValueError:
        raise click.UsageError(f"--qualities {qualities}: give comma-separated integers, e.g. 1,3") from None
    unknown = [q for q in qs if q not in chosen.codec_steps]
    if unknown:
        raise click.UsageError(f"--qualities {qualities}: the {preset} preset trains codecs for {sorted(chosen.codec_steps)}")
    pairs_path = pairs or data / "lfw" / "meta" / "pairsDevTest.txt"
    try:
        evaluation = Evaluation.of(out, pairs_path, images or data / "lfw" / "deepfunneled")
    except OSError as e:
        raise click.ClickException(f"{pairs_path}:0: cannot read ({e.strerror})") from None
    check_inputs(evaluation)
    keep_settings(out / "preset.json", {**asdict(chosen), "qualities": qs, "data": str(data)}, "a run",
                  "give another --out, or the same settings to resume it")
    keep_settings(evaluation.root / "evaluation.json", evaluation.record(), "an evaluation of this pairs file",
                  "give the same --images, or another --out")
    learned = Steps(out)
    learn(learned, layout, chosen, qs, device)
    measured = Steps(evaluation.root)
    measure(measured, layout, evaluation, chosen, qs, device)
    measured.run("summary", lambda: write_summary(layout, evaluation, chosen, qs, learned, measured))
    click.echo(f"learned this run: {', '.join(learned.ran) or 'nothing (every model was learned earlier)'}")
    click.echo(f"report: {evaluation.report / 'README.md'}")


def write_summary(layout: Layout, evaluation: Evaluation, preset: Any, qualities: tuple[int, ...], learned: Steps,
                  measured: Steps) -> dict[str, Any]:
    from .summary import write_reproduction_summary

    path = write_reproduction_summary(layout, evaluation, preset, qualities, learned, measured)
    click.echo(f"summary: {path}")
    return {"summary": str(path)}
