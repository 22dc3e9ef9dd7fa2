"""Where a reproduction writes, and how it runs each named step once.

The learned half (<out>/work, shards, runs, steps, commands.sh) does not depend on the pairs file;
each pairs file gets its own evaluation folder (<out>/evals/<stem>-<sha256[:8]>/) with its LFW
faces, anchors, scores, report, step records and commands, so two pairs files never mix and a
second one reuses every trained model."""
from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from cdfv.eval.protocol import pairs_sha256
from cdfv.options import passed_on
from cdfv.provenance import provenance
from cdfv.shards import atomic_write_bytes


@dataclass(frozen=True)
class Layout:
    """The learned half of a run: training inputs, shard sets and run directories."""

    data: Path
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

    def codec(self, q: int | str, variant: str = "") -> Path:
        """The codec the report scores at quality q (or a pattern's "{quality}"): the MSE codec, or a
        variant trained here (id, joint)."""
        return self.runs / (f"codec-{variant}-q{q}" if variant else f"codec-q{q}") / "codec.pt"

    def base_codec(self, q: int) -> Path:
        """The MSE codec's base recipe, which a whole-face continuation (and the identity codec) starts from."""
        return self.runs / f"codec-base-q{q}" / "codec.pt"

    def joint_student(self, q: int) -> Path:
        """The student trained with the joint codec's encoder, beside its codec.pt."""
        return self.codec(q, "joint").parent / "student.pt"

    def student(self, q: int) -> Path:
        return self.runs / f"cresnet39-q{q}" / "model.pt"

    def transplant(self, q: int, junction: str) -> Path:
        return self.runs / f"transplant-{junction}-q{q}" / "model.pt"


@dataclass(frozen=True)
class Evaluation:
    """One pairs file's half of a run: the LFW faces it names, coded, scored and reported."""

    pairs: Path
    images: Path
    sha256: str  # the pairs file's, read once
    root: Path  # <out>/evals/<stem>-<sha256[:8]>

    @classmethod
    def of(cls, out: Path, pairs: Path, images: Path) -> "Evaluation":
        digest = pairs_sha256(pairs)
        return cls(pairs, images, digest, out / "evals" / f"{pairs.stem}-{digest[:8]}")

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def lfw(self) -> Path:
        return self.root / "shards" / "lfw"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def record(self) -> dict[str, str]:
        return {"pairs_file": str(self.pairs), "pairs_sha256": self.sha256, "images": str(self.images)}


class Steps:
    """Runs named steps once: a step's record in <dir>/steps marks it done, and every command it
    ran is printed and appended to <dir>/commands.sh. `order` lists the steps in the order the run
    took them, done earlier or now, for the summary's times."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = root / "commands.sh"
        self.order: list[str] = []
        self.ran: list[str] = []  # the steps this invocation ran (not done earlier)

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
        self.ran.append(name)

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
