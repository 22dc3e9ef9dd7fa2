"""What every command shares: --help and --version without loading torch, --version's provenance,
options listed only where they apply, the --threads cap, --quiet, progress bars that move per
batch on stderr with honest totals, and the provenance every output records."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cdfv import __version__, shards, threads
from cdfv import progress as progress_module
from cdfv.eval.cli import main as eval_main
from cdfv.reproduction.cli import main as reproduce_main
from cdfv.pipeline.cli import main as prep_main
from cdfv.pipeline.demo import main as demo_main
from cdfv.provenance import provenance
from cdfv.shards import spec as S
from cdfv.trainer.cli import main as train_main
from cdfv.trainer.train import phase_total

from conftest import REPO

HEAVY = ("torch", "compressai", "cv2", "matplotlib", "dlib", "onnxruntime")
COMMANDS = {"cdfv-prep": "cdfv.pipeline.cli", "cdfv-train": "cdfv.trainer.cli", "cdfv-eval": "cdfv.eval.cli",
            "cdfv-reproduce": "cdfv.reproduction.cli", "cdfv-demo": "cdfv.pipeline.demo"}
PREP_STAGES = ("detect", "align", "encode", "entropy-decode", "crop-latent", "decode", "shard", "anchor", "run", "views", "teacher")


def every_help() -> list[tuple[str, list[str]]]:
    """(command, arguments) for the help of every command and subcommand, and each --version."""
    calls = [(name, ["--help"]) for name in COMMANDS] + [(name, ["--version"]) for name in COMMANDS]
    calls += [("cdfv-prep", [stage, "--help"]) for stage in (*PREP_STAGES, "index")]
    calls += [("cdfv-eval", [sub, "--help"]) for sub in ("run", "report", "complexity")]
    return calls


def test_help_and_version_of_every_command_load_no_heavy_library() -> None:
    script = "\n".join([
        "import importlib, io, json, sys, contextlib",
        f"calls = {every_help()!r}",
        f"modules = {COMMANDS!r}",
        "for name, args in calls:",
        "    main = importlib.import_module(modules[name]).main",
        "    with contextlib.redirect_stdout(io.StringIO()) as out:",
        "        code = main.main(args=args, prog_name=name, standalone_mode=False)",
        "    assert code in (0, None) and out.getvalue().strip(), (name, args, out.getvalue())",
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))",
    ])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == []  # every help page and version line built, nothing heavy imported


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_installed_command_answers_help_and_version(command: str) -> None:
    executable = Path(sys.executable).parent / command
    if not executable.exists():
        pytest.skip(f"{executable}: cdfv is not installed in this environment")
    helped = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and f"Usage: {command}" in helped.stdout, helped.stderr
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith(f"{command}: cdfv {__version__}")


def test_version_names_the_commit_libraries_and_machine() -> None:
    p = provenance()
    assert p["cdfv"] == __version__ and p["torch"] == torch.__version__.split("+")[0]
    assert {"compressai", "dlib", "python", "cpu", "gpus"} <= set(p) and p["cpu"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert p["git"]["commit"] == head.stdout.strip() and isinstance(p["git"]["dirty"], bool)
    line = CliRunner().invoke(train_main, ["--version"], prog_name="cdfv-train").output
    assert line.startswith(f"cdfv-train: cdfv {__version__}") and f"torch {p['torch']}" in line and p["cpu"] in line
    if p["git"]:
        assert f"commit {p['git']['commit'][:7]}" in line


def test_options_are_listed_only_where_they_apply() -> None:
    params = {name: {p.name for p in command.params} for name, command in prep_main.commands.items()}
    cut_into_chunks, batched = {"detect", "align", "shard", "run"}, {"encode", "entropy-decode", "decode", "anchor", "run", "teacher"}
    for stage in PREP_STAGES:
        assert ("chunk_size" in params[stage]) == (stage in cut_into_chunks), stage
        assert ("batch_size" in params[stage]) == (stage in batched), stage
        assert ("damaged" in params[stage]) == (stage not in ("detect", "align")), stage  # they read datasets, not shard sets
        assert {"threads", "quiet", "version"} <= params[stage], stage
    assert {"threads", "quiet", "version"} <= params["index"]
    version = CliRunner().invoke(prep_main, ["index", "--version"], prog_name="cdfv-prep")
    assert version.exit_code == 0 and version.output.startswith(f"cdfv-prep: cdfv {__version__}")
    result = CliRunner().invoke(prep_main, ["detect", "--dataset", "lfw", "--root", ".", "--batch-size", "4"])
    assert result.exit_code == 2 and "No such option '--batch-size'" in result.output
    refused = CliRunner().invoke(train_main, ["--task", "codec", "--shards", "faces", "--arch", "resnet50", "--width", "8"])
    assert refused.exit_code == 2 and "--arch, --width: not used by --task codec" in refused.output
    refused = CliRunner().invoke(train_main, ["--shards", "latents-q1", "--patch", "128"])
    assert refused.exit_code == 2 and "--patch: not used by --task faces" in refused.output
    for command in (train_main, reproduce_main, demo_main, *eval_main.commands.values()):
        assert {"threads", "quiet"} <= {p.name for p in command.params}, command.name


def test_threads_caps_torch_loaded_after_it_and_the_environment(tmp_path: Path) -> None:
    script = "\n".join([
        "import os, sys",
        "from cdfv.trainer.cli import main",
        "assert 'torch' not in sys.modules",
        f"main.main(args=['--untrained', '--arch', 'cresnet39', '--in-channels', '8', '--width', '4', '--out', {str(tmp_path)!r},"
        " '--threads', '1'], standalone_mode=False)",
        "import torch",
        "from cdfv.threads import onnx_session_options",
        "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], onnx_session_options().intra_op_num_threads)",
    ])
    uncapped = {k: v for k, v in os.environ.items() if k not in (threads.ENV, *threads.LIBRARY_ENV)}  # conftest's cap
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=uncapped)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].split() == ["1", "1", "1"]  # torch, OpenMP, onnxruntime
    bad = CliRunner().invoke(train_main, ["--untrained", "--arch", "cresnet39", "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output


# ---------------------------------------------------------------- progress and --quiet

class Recorder(progress_module.tqdm):
    """A tqdm that remembers each bar's total and every update."""

    bars: list["Recorder"] = []

    def __init__(self, *args, **kwargs) -> None:
        self.updates: list[float] = []
        super().__init__(*args, **kwargs)
        Recorder.bars.append(self)

    def update(self, n: float = 1) -> bool | None:
        self.updates.append(n)
        return super().update(n)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    Recorder.bars = []
    monkeypatch.setattr(progress_module, "tqdm", Recorder)
    return Recorder


def face_set(root: Path, count: int = 6) -> Path:
    """An image set of `count` noise faces in one shard, as align writes them."""
    rng = np.random.default_rng(0)
    writer = shards.ShardSetWriter(root / "faces", "faces")
    writer.write(0, [{"__key__": f"a__{i}", S.IMAGE: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), S.LABEL: 0,
                      S.META: {"source": f"a/{i}.png"}} for i in range(count)])
    shards.write_index(root / "faces", "faces", "image", [S.IMAGE, S.LABEL, S.META], ["a"], {"variant": "original"})
    return root


def test_prep_bars_move_per_batch_on_stderr_and_quiet_hides_them(tmp_path: Path, recorder: type[Recorder]) -> None:
    root = face_set(tmp_path)
    args = ["anchor", "--out", root, "--codec", "jpeg", "--value", "30", "--batch-size", "2"]
    loud = CliRunner().invoke(prep_main, [str(a) for a in args])
    assert loud.exit_code == 0, loud.output
    assert json.loads(loud.stdout)["inputs"] == 6  # the summary alone on stdout
    assert "anchor: 100%" in loud.stderr and "6/6" in loud.stderr and "img/s" in loud.stderr
    bar, = recorder.bars
    assert (bar.total, bar.updates) == (6, [2, 2, 2, 0])  # one input shard: a chunk of 6, moved per batch of 2
    index = json.loads((root / "decoded-jpeg-quality30" / "index.json").read_text())
    assert index["meta"]["provenance"] == provenance()
    record = json.loads((root / "decoded-jpeg-quality30" / "run-p000of001.json").read_text())
    assert record["provenance"] == provenance()
    record["provenance"]["git"] = {"commit": "0" * 40, "dirty": True}  # begun by other software: still resumes
    (root / "decoded-jpeg-quality30" / "run-p000of001.json").write_text(json.dumps(record))
    quiet = CliRunner().invoke(prep_main, [str(a) for a in args] + ["--quiet"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["resumed_chunks"] == 1


def test_step_limited_training_counts_to_its_real_last_step(tmp_path: Path, recorder: type[Recorder],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from cdfv.trainer.codec_train import CodecTrainConfig, train_codec

    caplog.set_level("INFO", logger="cdfv")
    face_set(tmp_path, count=4)
    summary = train_codec(CodecTrainConfig(shards="faces", root=str(tmp_path), out=str(tmp_path / "codec"), untrained=True,
                                           epochs=1000, max_steps=3, batch_size=2, patch=64, workers=0, tensorboard=False))
    bar, = recorder.bars
    assert (bar.total, bar.n, summary["steps"]) == (3, 3, 3)  # not one epoch of 2 steps out of 1000 epochs
    codec = torch.load(tmp_path / "codec" / "codec.pt", weights_only=True)
    assert codec["provenance"] == summary["provenance"] == provenance()
    assert phase_total(epochs=6, steps_per_epoch=10, start_epoch=0, start_step=0, step=0, max_steps=None) == 60
    assert phase_total(epochs=6, steps_per_epoch=10, start_epoch=2, start_step=4, step=24, max_steps=30) == 30
    assert phase_total(epochs=3, steps_per_epoch=10, start_epoch=0, start_step=0, step=50, max_steps=55) == 5  # a later phase


def test_models_record_the_software_that_made_them(tmp_path: Path) -> None:
    result = CliRunner().invoke(train_main, ["--untrained", "--arch", "cresnet39", "--in-channels", "8", "--width", "4",
                                             "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert torch.load(tmp_path / "model.pt", weights_only=True)["provenance"] == provenance()


def test_the_demo_data_hold_no_file_its_prep_would_skip(tmp_path: Path) -> None:
    """The demo's pairs file lies beside its image folder, as LFW ships them: inside it, every
    demo run listed it as a skipped file."""
    from cdfv.eval.protocol import read_pairs
    from cdfv.pipeline.demo import demo_data
    from cdfv.pipeline.sources import lfw

    images, pairs = demo_data(tmp_path / "data")
    dataset = lfw(images)
    assert dataset.skipped == [] and len(dataset.items) == 96
    keys = {k for p in read_pairs(pairs) for k in (p.probe, p.reference)}
    assert keys and keys <= {item.key for item in dataset.items}
    assert demo_data(tmp_path / "data") == (images, pairs)  # a re-run finds them
