"""The README's examples run as printed: the library example, every cdfv command line of its bash
blocks parses against the commands, they read shard sets where its cdfv-prep examples write them,
and (slow) its stage and evaluation blocks run in order on a few LFW pairs."""
from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from cdfv.trainer.export import export_untrained

README = Path(__file__).resolve().parents[1] / "README.md"


def library_example() -> str:
    section = README.read_text().split("## Using cdfv as a library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the library section holds one Python example"
    return blocks[0]


def test_the_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(library_example(), str(README), "exec"), scope)
    assert scope["y_hat"].shape == (2, 192, 16, 16)
    assert scope["latents"].shape == (2, 192, 14, 14)
    assert scope["embeddings"].shape[0] == 2
    np.testing.assert_allclose(np.linalg.norm(scope["embeddings"], axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "cresnet39.pt").is_file()
    assert scope["codec_id"] == "untrained:seed0"


# ---- the README's command blocks ------------------------------------------------------------------

COMMANDS = {"cdfv-prep": "cdfv.pipeline.cli", "cdfv-train": "cdfv.trainer.cli", "cdfv-eval": "cdfv.eval.cli",
            "cdfv-reproduce": "cdfv.reproduction.cli", "cdfv-demo": "cdfv.pipeline.demo"}
SHARDS_ROOT = "shards/"  # where the README's cdfv-prep examples write, and its cdfv-train and cdfv-eval examples read


def bash_commands(text: str = README.read_text()) -> list[tuple[str, list[str]]]:
    """Every cdfv command of the README's bash blocks as (command, arguments): continuations
    joined, comments dropped, `a && b` split, a `.venv/bin/` prefix removed."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for command in line.split("&&"):
                words = shlex.split(command, comments=True)
                if words and words[0].removeprefix(".venv/bin/") in COMMANDS:
                    found.append((words[0].removeprefix(".venv/bin/"), words[1:]))
    return found


def subcommand(name: str, args: list[str]) -> tuple[click.Command, str, list[str]]:
    """The Click command a README line runs, its name, and its own arguments."""
    main = importlib.import_module(COMMANDS[name]).main
    if not isinstance(main, click.Group):
        return main, name, args
    if args[0].startswith("-"):  # cdfv-eval's bare options go to `run`
        return main.commands["run"], f"{name} run", args
    return main.commands[args[0]], f"{name} {args[0]}", args[1:]


def test_every_readme_command_parses() -> None:
    """Each cdfv command line in the README names options its command has, with valid values
    (the files and data folders it names are the reader's, so their absence is not checked)."""
    commands = bash_commands()
    assert {name for name, _ in commands} == set(COMMANDS)
    for name, args in commands:
        command, prog, rest = subcommand(name, args)
        try:
            command.make_context(prog, rest)
        except click.BadParameter as e:
            assert "does not exist" in e.format_message(), f"{name} {shlex.join(args)}: {e.format_message()}"
        except click.ClickException as e:
            raise AssertionError(f"README: {name} {shlex.join(args)}: {e.format_message()}") from None


def test_readme_commands_read_the_sets_where_its_prep_commands_write_them() -> None:
    for name, args in bash_commands():
        command, prog, rest = subcommand(name, args)
        if name == "cdfv-prep" or (name == "cdfv-train" and "--shards" in rest) or prog == "cdfv-eval run":
            flag = "--out" if name == "cdfv-prep" else "--root"
            assert rest[rest.index(flag) + 1] == SHARDS_ROOT if flag in rest else False, f"README: {name} {shlex.join(args)}"


@pytest.fixture
def readme_sandbox(tmp_path: Path, lfw_root: Path, lfw_meta: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding what the README's commands expect from their reader: LFW in its
    layout (six same-person and different-person pairs of View 1, linked) and its pairs.txt."""
    lines = (lfw_meta / "pairsDevTest.txt").read_text().splitlines()
    same, different = lines[1:4], lines[501:504]
    (tmp_path / "pairs.txt").write_text("\n".join(["3", *same, *different]) + "\n")
    for line in same + different:
        f = line.split("\t")
        for name, number in ([(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]):
            picture = lfw_root / name / f"{name}_{int(number):04d}.jpg"
            link = tmp_path / "lfw" / name / picture.name
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(picture)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_readme_stage_and_evaluation_blocks_run_in_order(readme_sandbox: Path) -> None:
    """The stage-by-stage cdfv-prep block, then the cdfv-eval block, as printed, on six LFW pairs.
    Two things differ, both the reader's: /data/lfw is the linked pictures, and codecs and face
    models are untrained (CompressAI's zoo cannot be downloaded here; `--untrained` is added to the
    commands that load a codec, and the models are `cdfv-train --untrained` ones). The HEVC anchor is
    left out: rate matching needs a trained codec's rate to aim at."""
    text = README.read_text()
    stages = bash_commands(text.split("### Stages", 1)[1].split("or all at once", 1)[0])
    evaluation = bash_commands(text.split("## cdfv-eval", 1)[1].split("\n## ", 1)[0])
    assert [args[0] for _, args in stages] == ["detect", "align", "encode", "entropy-decode", "crop-latent", "decode", "anchor", "shard"]
    assert len(evaluation) == 2
    for name, args in stages:
        if args[0] == "anchor":
            continue
        args = [str(readme_sandbox / "lfw") if a == "/data/lfw" else a for a in args]
        args += ["--untrained"] if args[0] in ("encode", "entropy-decode", "decode") else []
        command, prog, rest = subcommand(name, args)
        result = CliRunner().invoke(command, rest, prog_name=prog)
        assert result.exit_code == 0, f"{name} {shlex.join(args)}:\n{result.output}"
    for arch, shards, channels in (("resnet50", "faces", None), ("cresnet39", "latents-q6", 320)):
        export_untrained(Path("runs") / shards / "model.pt", arch, in_channels=channels, width=8)
    for name, args in evaluation:
        command, prog, rest = subcommand(name, args)
        result = CliRunner().invoke(command, rest + ["--bootstrap", "0"], prog_name=prog)
        assert result.exit_code == 0, f"{name} {shlex.join(args)}:\n{result.output}"
    assert sorted(p.name for p in Path("results/scores").glob("*.parquet")) == [
        "cresnet39_bmshj2018-hyperprior-mse_q6.parquet", "resnet50_bmshj2018-hyperprior-mse_q6.parquet", "resnet50_original.parquet"]
    assert len(list(Path("results-dlib/scores").glob("*.parquet"))) == 2


# ---- what a newcomer reads first ----------------------------------------------------------------------

def test_the_readme_counts_what_it_lists_and_cites_nothing_a_user_cannot_follow() -> None:
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert len(first_block) == 2  # the set-up: install and demo, then the tests
    table = text.split("| command | does | thesis |", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\| `(cdfv-[a-z]+)` \|", table, re.M)
    assert set(listed) == set(COMMANDS)
    words = {"three": 3, "four": 4, "five": 5}
    said = re.search(r"It has (\w+) commands, a demo and one file format", text)
    assert said and words[said.group(1)] == len(listed) - 1  # the demo is not a command of its own
    assert not re.findall(r"\b\d[\d,]* (?:tests|passed)\b", text), "test counts go stale: state a dated measurement"
    assert not re.findall(r"\bissues? \d+", text), "a bare issue number: say what the reader needs, or link it"


def test_a_run_without_the_real_data_says_why_its_tests_skip(tmp_path: Path) -> None:
    """pytest's closing lines count the tests skipped for each reason, as the README says: a
    newcomer without the data folder reads why, and what to set, without knowing `-rs`."""
    env = {**os.environ, "CDFV_TEST_DATA": str(tmp_path / "absent")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/test_conventional.py",
                           "-k", "bare_codestream or application_segments"], cwd=README.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert f"2 tests skipped: real test images absent: {tmp_path / 'absent'}/lfw not found (set $CDFV_TEST_DATA)" in done.stdout
    assert "tests skipped: real test images absent" in " ".join(README.read_text().split())  # as it reads
