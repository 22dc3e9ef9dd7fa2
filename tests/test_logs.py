"""Logs other tools read: TensorBoard event files beside the JSON-lines metrics of training, and
messages through `logging` (library use prints nothing; the commands put messages on stderr and
results on stdout)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_train_fixtures import celeba_faces, shard_root  # noqa: F401  (session fixtures)
from test_trust import latent_set
from cdfv.trainer import train as train_module
from cdfv.trainer.codec_train import CodecTrainConfig, train_codec
from cdfv.trainer.train import TrainConfig, train

TINY = dict(width=4, batch_size=16, workers=0, progress=False, log_every=1)


def board_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> (step, value) as TensorBoard shows them (later sessions purge the steps they redo)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def jsonl_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """The same view of a metrics.jsonl: tag phase/split/name -> (step, value)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in map(json.loads, path.read_text().splitlines()):
        for name, value in record.items():
            if name not in ("phase", "split", "epoch", "step"):
                out.setdefault(f"{record['phase']}/{record['split']}/{name}", []).append((record["step"], value))
    return out


def assert_same(board: dict, jsonl: dict) -> None:
    assert board.keys() == jsonl.keys()
    for tag, points in jsonl.items():
        assert [s for s, _ in board[tag]] == [s for s, _ in points], tag
        assert [v for _, v in board[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag


def test_training_writes_tensorboard_scalars_equal_to_its_jsonl(shard_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    summary = train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(out), val_shards="latents-heldout",
                                phase="classify", classify_epochs=2, **TINY))
    assert summary["tensorboard"] == str(out / "tensorboard")
    board = board_scalars(out / "tensorboard")
    assert {"classify/train/loss", "classify/train/acc", "classify/train/lr", "classify/train/samples_per_s",
            "classify/val/loss", "classify/val/acc"} <= set(board)
    assert_same(board, jsonl_scalars(out / "metrics.jsonl"))
    assert len(board["classify/train/loss"]) == 2 * (96 // 16)


def test_a_resumed_codec_run_shows_each_step_once_with_the_resumed_values(shard_root: Path, tmp_path: Path) -> None:
    """Killed after logging steps past its last checkpoint: TensorBoard, like the JSON lines, keeps
    the records up to the checkpoint and takes the rest from the resumed run."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "codec"

    def run(max_steps: int, resume: bool = False) -> dict:
        return train_codec(CodecTrainConfig(shards="faces-train", root=str(shard_root), out=str(out), untrained=True,
                                            batch_size=4, patch=64, max_steps=max_steps, workers=0, progress=False,
                                            log_every=1, resume=resume))

    run(2)
    shutil.copy(out / "codec-checkpoint.pt", tmp_path / "step2.pt")
    run(4, resume=True)  # logs steps 3 and 4, checkpoints at 4 ...
    shutil.copy(tmp_path / "step2.pt", out / "codec-checkpoint.pt")  # ... and is "killed" before that checkpoint lands
    summary = run(4, resume=True)
    assert summary["tensorboard"] == str(out / "tensorboard-codec")
    board, jsonl = board_scalars(out / "tensorboard-codec"), jsonl_scalars(out / "codec-metrics.jsonl")
    assert {"codec/train/loss", "codec/train/bpp", "codec/train/distortion"} <= set(board)
    assert [s for s, _ in board["codec/train/loss"]] == [1, 2, 3, 4]
    assert_same(board, jsonl)


def test_without_the_tensorboard_package(shard_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    real = train_module.importlib.util.find_spec
    monkeypatch.setattr(train_module.importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    caplog.set_level(logging.INFO, logger="cdfv")
    out = tmp_path / "plain"
    summary = train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(out), phase="classify",
                                classify_epochs=1, max_steps=1, **TINY))
    assert summary["tensorboard"] is None and not (out / "tensorboard").exists()
    assert "tensorboard: off (pip install 'cdfv[tensorboard]'" in caplog.text
    with pytest.raises(ValueError, match=r"the tensorboard package is not installed \(pip install 'cdfv\[tensorboard\]'\)"):
        train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(tmp_path / "asked"), tensorboard=True, **TINY))
    from cdfv.trainer.cli import main

    result = CliRunner().invoke(main, ["--shards", "latents-train", "--root", str(shard_root), "--tensorboard",
                                       "--out", str(tmp_path / "cli")])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("cdfv-train: error: --tensorboard: the tensorboard package is not installed "
                                     "(pip install 'cdfv[tensorboard]')")


@pytest.fixture
def as_a_library() -> None:
    """The "cdfv" logger as a program using cdfv finds it: no handler of cdfv's own (a command run
    earlier in this process added one)."""
    logger = logging.getLogger("cdfv")
    handlers, level = logger.handlers[:], logger.level
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def test_library_training_logs_its_summary_and_prints_nothing(shard_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             caplog: pytest.LogCaptureFixture, as_a_library: None) -> None:
    caplog.set_level(logging.INFO, logger="cdfv")
    train(TrainConfig(shards="latents-train", root=str(shard_root), out=str(tmp_path / "run"), phase="classify",
                      classify_epochs=1, max_steps=2, tensorboard=False, **TINY))
    train_codec(CodecTrainConfig(shards="faces-train", root=str(shard_root), out=str(tmp_path / "codec"), untrained=True,
                                 batch_size=4, patch=64, max_steps=1, workers=0, progress=False, tensorboard=False))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    summaries = [r for r in caplog.records if r.levelno == logging.INFO and "cdfv-train" in r.getMessage()]
    assert [r.name for r in summaries] == ["cdfv.trainer.train", "cdfv.trainer.codec_train"]
    assert "cresnet39 on latents-train, 2 steps" in summaries[0].getMessage()
    assert summaries[0].getMessage().endswith("\n  tensorboard: off")  # asked off: no hint to install it
    assert "bmshj2018-hyperprior" in summaries[1].getMessage()


def test_train_cli_puts_its_summary_on_stdout_and_messages_on_stderr(shard_root: Path, tmp_path: Path) -> None:
    """`cdfv-train ... > log` keeps the closing summary (the JSON of summary.json), as every cdfv
    command keeps its results on stdout; --quiet silences the messages, not the results."""
    from cdfv.trainer.cli import main

    args = ["--shards", "latents-train", "--root", str(shard_root), "--phase", "classify", "--epochs", "1", "--max-steps", "1",
            "--width", "4", "--workers", "0", "--no-tensorboard"]
    loud = CliRunner().invoke(main, args + ["--out", str(tmp_path / "loud")])
    assert loud.exit_code == 0, loud.output
    assert json.loads(loud.stdout) == json.loads((tmp_path / "loud" / "summary.json").read_text())
    assert "cdfv-train: cresnet39 on latents-train, 1 steps" in loud.stderr and "cdfv-train:" not in loud.stdout
    quiet = CliRunner().invoke(main, args + ["--out", str(tmp_path / "quiet"), "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["steps"] == 1 and quiet.stderr == ""


def test_eval_cli_messages_on_stderr_results_on_stdout(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from cdfv.eval.cli import main
    from cdfv.trainer.export import export_untrained

    latent_set(tmp_path)
    export_untrained(tmp_path / "m.pt", "cresnet39", in_channels=8, width=4, embedding_dim=8)
    (tmp_path / "pairs.csv").write_text("probe,reference,label\nid0__img000,id0__img004,1\nid0__img000,id1__img001,0\n")
    result = CliRunner().invoke(main, ["--pairs", str(tmp_path / "pairs.csv"), "--root", str(tmp_path), "--compressed",
                                       f"{tmp_path / 'm.pt'}=lat", "--bootstrap", "0", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'pairs.csv'}: 2 pairs, 1 same-person" in result.stderr
    assert "same-person" not in result.stdout and "| compressed |" in result.stdout  # the metrics table
    assert any(r.name == "cdfv.eval.cli" and "2 pairs, 0 missing" in r.getMessage() for r in caplog.records)
