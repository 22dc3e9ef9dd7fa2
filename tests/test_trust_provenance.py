"""Trust, round 2: every shard and run proves where it came from. A shard of another run put in a
shard's place, parts made differently, a resume on another set, two runs into one directory and
damaged shards under `--damaged skip` are each caught, named, or read past as promised."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cdfv import shards
from cdfv.eval.cli import main as eval_main
from cdfv.outlock import OutputBusy, output_lock
from cdfv.pipeline.cli import main as prep_main
from cdfv.shards import spec as S
from cdfv.trainer.cli import main as train_main
from cdfv.trainer.export import export_untrained

from prep_helpers import CODEC_ARGS
from test_trust import M, image_folder, one_line_error, run

SHARD = "lat-p000of001-000000.tar"


def latent_set(root: Path, seed: int, per_shard: tuple[int, ...] = (12,), name: str = "lat") -> Path:
    """Like test_trust's toy set, but its values drawn from `seed`: two seeds give shards of the
    same names, keys and byte sizes with other content."""
    writer = shards.ShardSetWriter(root / name, name)
    n = 0
    for chunk, count in enumerate(per_shard):
        samples = []
        for _ in range(count):
            latent = np.random.default_rng([seed, n]).integers(-6, 7, (M, 14, 14)).astype(np.int16)
            key = f"id{n % 4}__img{n:03d}"
            samples.append({"__key__": key, S.LATENT: latent, S.LABEL: n % 4,
                            S.META: {"key": key, "source": f"id{n % 4}/img{n:03d}.png", "label": n % 4}})
            n += 1
        writer.write(chunk, samples)
    shards.write_index(root / name, name, "latent", [S.LATENT, S.LABEL, S.META], [f"id{i}" for i in range(4)],
                       {"variant": "latent", "codec": {"name": "bmshj2018-hyperprior", "quality": 1, "metric": "mse"}})
    return root / name


def eval_args(root: Path, pairs: str = "probe,reference,label\nid0__img000,id0__img004,1\nid1__img001,id2__img002,0\n") -> list:
    if not (root / "m.pt").exists():
        export_untrained(root / "m.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
    (root / "pairs.csv").write_text(pairs)
    return ["--pairs", root / "pairs.csv", "--root", root, "--compressed", f"{root / 'm.pt'}=lat", "--bootstrap", "0"]


# ---------------------------------------------------------------- a shard is bound to its set

def test_a_shard_of_another_run_in_its_place_is_refused_by_every_reader(tmp_path: Path) -> None:
    ours, theirs = latent_set(tmp_path, seed=0), latent_set(tmp_path / "other", seed=1)
    assert (ours / SHARD).stat().st_size == (theirs / SHARD).stat().st_size  # the size check alone cannot tell
    shutil.copy(theirs / SHARD, ours / SHARD)
    expected = "is not the shard its index lists"
    code, out = run(eval_main, *eval_args(tmp_path), "--out", tmp_path / "r")
    assert code == 1 and SHARD in one_line_error(out) and expected in out
    code, out = run(train_main, "--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet",
                    "--batch-size", "4", "--out", tmp_path / "t")
    assert code == 2 and SHARD in one_line_error(out) and expected in out
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--name", "c", "--size", "12")
    assert code == 1 and SHARD in one_line_error(out) and expected in out


def test_the_index_records_each_shards_content_and_run(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    code, out = run(prep_main, "run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "latents",
                    "--out", tmp_path / "o", *CODEC_ARGS, "--chunk-size", "4")
    assert code == 0, out
    directory = tmp_path / "o" / "latents-q1"
    index = json.loads((directory / "index.json").read_text())
    runs = {e["run"] for e in index["shards"]}
    assert len(runs) == 1 and None not in runs
    for entry in index["shards"]:
        done = json.loads((directory / f"done-{entry['url'][len('latents-q1-'):-len('.tar')]}.json").read_text())
        assert entry["table"] == done["content"] and len(entry["table"]) == 16
    identity = shards.open_shard_set(directory).identity
    code, out = run(prep_main, "index", directory)  # rebuilt from the same shards: the same identity
    assert code == 0 and shards.open_shard_set(directory).identity == identity
    # a shard swapped before indexing is caught against the chunk's record
    other = tmp_path / "other"
    code, out = run(prep_main, "run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "latents",
                    "--out", other, *CODEC_ARGS, "--chunk-size", "4", "--seed", "5")
    assert code == 0, out
    shard = index["shards"][1]["url"]
    shutil.copy(other / "latents-q1" / shard, directory / shard)
    code, out = run(prep_main, "index", directory)
    assert code == 1 and shard in one_line_error(out) and "is not the shard its chunk wrote" in out


# ---------------------------------------------------------------- resume on the set it trained on

def test_train_resume_refuses_another_set_under_the_same_path(tmp_path: Path) -> None:
    latent_set(tmp_path, seed=0, per_shard=(12, 12))
    common = ("--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet", "--epochs", "1",
              "--batch-size", "4", "--out", tmp_path / "t")
    code, out = run(train_main, *common, "--max-steps", "3")
    assert code == 0, out
    first = shards.open_shard_set(tmp_path / "lat").identity
    shutil.rmtree(tmp_path / "lat")
    latent_set(tmp_path, seed=1, per_shard=(12, 12))  # rebuilt: same path, names and sizes, other content
    second = shards.open_shard_set(tmp_path / "lat").identity
    assert first != second
    code, out = run(train_main, *common, "--resume")
    line = one_line_error(out)
    assert code == 2 and f"data: 'lat@{first}' -> 'lat@{second}'" in line
    code, out = run(train_main, *common, "--resume", "--allow-change", "data")
    assert code == 0, out
    state = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)
    assert state["data"] == f"lat@{second}" and state["config_changes"][0]["changed"] == {"data": [f"lat@{first}", f"lat@{second}"]}
    info = torch.load(tmp_path / "t" / "model.pt", weights_only=True)["info"]
    info = json.loads(info) if isinstance(info, str) else info
    assert info["train_shards"]["identity"] == second


# ---------------------------------------------------------------- one writer per output directory

@pytest.mark.parametrize("tool", ["train", "eval", "prep"])
def test_a_second_run_into_a_busy_directory_is_refused(tmp_path: Path, tool: str) -> None:
    latent_set(tmp_path, seed=0)
    if tool == "train":
        out, name = tmp_path / "t", ".cdfv-lock"
        args = (train_main, "--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet", "--epochs", "1",
                "--batch-size", "4", "--out", out)
    elif tool == "eval":
        out, name = tmp_path / "r", ".cdfv-lock"
        args = (eval_main, *eval_args(tmp_path), "--out", out)
    else:
        out, name = tmp_path / "c", ".cdfv-lock-p000of001"
        args = (prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--name", "c", "--size", "12")
    with output_lock(out, name):
        code, output = run(*args)
        assert code != 0 and "in use by another run" in one_line_error(output) and f"pid {os.getpid()}" in output
    assert not (out / "checkpoint.pt").exists() and not (out / "scores").exists() and not (out / "index.json").exists()
    code, output = run(*args)  # the holder gone, the same command runs
    assert code == 0, output


def test_a_killed_holder_never_leaves_its_lock_stuck(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from cdfv.outlock import output_lock\n"
                               f"with output_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match=f"pid {holder.pid}"):
            with output_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with output_lock(tmp_path):  # released by the kernel with the process
        pass


def test_a_refused_run_leaves_no_record_that_blocks_the_corrected_command(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    base = ("run", "--dataset", "folder", "--root", data, "--no-detect", "--out", tmp_path / "o", *CODEC_ARGS)
    code, out = run(prep_main, *base, "--outputs", "latents", "--chunk-size", "4")
    assert code == 0, out
    code, out = run(prep_main, *base, "--outputs", "faces,latents", "--chunk-size", "8")  # latents holds chunk 4: refused
    assert code == 1 and "chunk_size: 4 -> 8" in one_line_error(out)
    assert not list((tmp_path / "o" / "faces").glob("run-*.json"))
    code, out = run(prep_main, *base, "--outputs", "faces,latents", "--chunk-size", "4")
    assert code == 0, out


# ---------------------------------------------------------------- --damaged skip keeps what is intact

def damaged(root: Path, how: str) -> Path:
    """A 5-sample shard damaged at its end: garbage after the tar, its last member cut short, or gone."""
    latent_set(root, seed=0, per_shard=(5, 5))
    shard = root / "lat" / SHARD
    data = shard.read_bytes()
    if how == "appended":
        shard.write_bytes(data + b"garbage" * 100)
    elif how == "truncated":
        with tarfile.open(shard) as tar:
            last = [m for m in tar.getmembers() if m.name.endswith(".latent.npy")][-1]
        shard.write_bytes(data[: last.offset_data + 100])
    else:
        shard.unlink()
    return shard


@pytest.mark.parametrize("how, kept", [("appended", 5), ("truncated", 4), ("missing", 0)])
def test_skip_keeps_the_intact_samples_of_a_damaged_shard(tmp_path: Path, how: str, kept: int) -> None:
    damaged(tmp_path, how)
    code, out = run(prep_main, "shard", "lat", "--out", tmp_path, "--name", "re")
    assert code == 1 and SHARD in one_line_error(out)
    code, out = run(prep_main, "shard", "lat", "--out", tmp_path, "--name", "re", "--damaged", "skip")
    assert code == 0, out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["written"] == {"re": kept + 5} and summary["damaged_samples_lost"] == 5 - kept
    if how != "appended":
        assert SHARD in json.dumps(summary)


def test_eval_skip_scores_the_pairs_a_damaged_shard_does_not_lose(tmp_path: Path) -> None:
    damaged(tmp_path, "truncated")  # id0__img004 is the sample cut short; id1__img005 lives in the intact shard
    args = eval_args(tmp_path, "probe,reference,label\nid0__img000,id0__img004,1\nid1__img001,id1__img005,1\nid2__img002,id3__img003,0\n")
    code, out = run(eval_main, *args, "--out", tmp_path / "r")
    assert code == 1 and SHARD in one_line_error(out) and "--damaged skip" in out
    code, out = run(eval_main, *args, "--damaged", "skip", "--missing", "skip", "--out", tmp_path / "s")
    assert code == 0, out
    table = pq.read_table(next((tmp_path / "s" / "scores").glob("*.parquet"))).to_pylist()
    assert [row["missing"] for row in table] == [True, False, False]
    assert "id0__img004" in table[0]["missing_reason"] and SHARD in table[0]["missing_reason"]


# ---------------------------------------------------------------- messages that say what is wrong

class Planted:
    """Unpickling this would call os.system: proof that a loader ran code from the file."""

    def __reduce__(self):
        return (os.system, ("true",))


def test_an_unsafe_torch_file_is_refused_naming_what_it_asks_for(tmp_path: Path) -> None:
    latent_set(tmp_path, seed=0)
    torch.save({"format": "cdfv-train-checkpoint", "model": Planted()}, tmp_path / "evil.pt")
    code, out = run(train_main, "--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet",
                    "--init", tmp_path / "evil.pt", "--out", tmp_path / "a")
    line = one_line_error(out)
    assert code == 2 and "evil.pt" in line and "asks for posix.system" in line
    assert "weights_only" not in out


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    latent_set(tmp_path, seed=0)

    def full(fd: int) -> None:
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr("cdfv.shards.writer.os.fsync", full)
    code, out = run(prep_main, "shard", "lat", "--out", tmp_path, "--name", "re")
    line = one_line_error(out)
    assert code == 1 and line.endswith(f"{tmp_path / 're' / 'run-p000of001.json'}: No space left on device")


@pytest.mark.parametrize("rows, problem", [
    ("probe,reference,label\na__1,b__1,0\na__2,a__3,1\nb__1,a__1,0\n", "pairs.csv:4: repeats the pair of line 2"),
    ("probe,reference,label\na__1,b__1,0\n\na__2,a__2,1\n", "pairs.csv:4: pairs image 'a__2' with itself"),
])
def test_repeated_and_self_pairs_are_refused_with_their_line(tmp_path: Path, rows: str, problem: str) -> None:
    from cdfv.eval.protocol import ProtocolError, read_pairs

    (tmp_path / "pairs.csv").write_text(rows)
    with pytest.raises(ProtocolError, match=problem):
        read_pairs(tmp_path / "pairs.csv")


def test_a_csv_pairs_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    from cdfv.eval.protocol import read_pairs

    (tmp_path / "pairs.csv").write_bytes("probe,reference,label\r\na__1,b__1,0\r\n".encode("utf-8-sig"))
    (pair,) = read_pairs(tmp_path / "pairs.csv")
    assert (pair.probe, pair.reference, pair.label) == ("a__1", "b__1", False)


@pytest.mark.parametrize("broken", [np.zeros(4, np.float32), np.full(8, np.nan, np.float32)])
def test_distillation_names_a_broken_teacher_embedding(tmp_path: Path, broken: np.ndarray) -> None:
    writer = shards.ShardSetWriter(tmp_path / "lat", "lat")
    rng = np.random.default_rng(0)
    samples = [{"__key__": f"a__{i}", S.LATENT: rng.integers(-6, 7, (M, 14, 14)).astype(np.int16),
                S.TEACHER: (broken if i == 5 else rng.normal(size=8).astype(np.float32))} for i in range(8)]
    writer.write(0, samples)
    shards.write_index(tmp_path / "lat", "lat", "latent", [S.LATENT, S.TEACHER], [], {"variant": "latent"})
    code, out = run(train_main, "--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet",
                    "--phase", "distill", "--epochs", "1", "--batch-size", "4", "--out", tmp_path / "d")
    line = one_line_error(out)
    assert code == 2 and f"{SHARD}:a__5: teacher.npy has" in line


def test_a_temporary_file_left_by_a_kill_is_removed_by_the_next_run(tmp_path: Path) -> None:
    latent_set(tmp_path, seed=0)
    (tmp_path / "c").mkdir()
    stale = tmp_path / "c" / ".c-p000of001-000000.tar.tmp4242"
    stale.write_bytes(b"half a shard")
    other_part = tmp_path / "c" / ".c-p001of002-000000.tar.tmp4243"  # another part's: not this run's to remove
    other_part.write_bytes(b"x")
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--name", "c", "--size", "12")
    assert code == 0, out
    assert not stale.exists() and other_part.exists()


def test_a_resumed_codec_run_reports_the_steps_it_ran(tmp_path: Path) -> None:
    from cdfv.trainer.codec_train import CodecTrainConfig, train_codec

    data = image_folder(tmp_path / "data", size=64)
    code, out = run(prep_main, "align", "--dataset", "folder", "--root", data, "--no-detect", "--out", tmp_path)
    assert code == 0, out

    def train(steps: int, resume: bool) -> dict:
        return train_codec(CodecTrainConfig(shards="faces", root=str(tmp_path), out=str(tmp_path / "c"), untrained=True,
                                            batch_size=2, max_steps=steps, workers=0, progress=False, resume=resume, patch=64))

    assert train(2, False)["steps"] == 2
    summary = train(3, True)
    assert (summary["resumed_at"], summary["steps"], summary["steps_this_run"]) == (2, 3, 1)


# ---------------------------------------------------------------- no traceback

def test_no_traceback_for_bad_weights_and_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = image_folder(tmp_path / "data")
    code, out = run(prep_main, "align", "--dataset", "folder", "--root", data, "--no-detect", "--out", tmp_path)
    assert code == 0, out
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty zoo cache
    code, out = run(train_main, "--task", "codec", "--shards", "faces", "--root", tmp_path, "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "Traceback" not in out and "--codec-weights FILE" in out and "--untrained-codec" in out
    from cdfv.pipeline.codecs import CodecSpec

    cached = CodecSpec("bmshj2018-hyperprior", 1).cache_path
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a checkpoint")
    code, out = run(prep_main, "encode", "--quality", "1", "--out", tmp_path, "--device", "cpu")
    assert code == 1 and str(cached) in one_line_error(out) and "copy the zoo's file" in out
    (tmp_path / "det.onnx").write_text("not onnx")
    code, out = run(prep_main, "detect", "--dataset", "folder", "--root", data, "--detector-model", tmp_path / "det.onnx",
                    "--out", tmp_path / "d")
    assert code == 1 and "det.onnx: not an ONNX model" in one_line_error(out)
    import pickle

    (tmp_path / "obj.pkl").write_bytes(pickle.dumps({"conv1/7x7_s2": np.array([1, "a", None], dtype=object)}, protocol=2))
    code, out = run(train_main, "--shards", "faces", "--root", tmp_path, "--init", tmp_path / "obj.pkl", "--quiet",
                    "--out", tmp_path / "t", "--batch-size", "2")
    assert code == 2 and "conv1/7x7_s2 is a numpy array of object values" in one_line_error(out)


# ---------------------------------------------------------------- an adversary's edits (round 2)

def test_index_refuses_a_chunk_copied_in_from_another_run(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    for out, seed in (("a", "0"), ("b", "5")):
        code, output = run(prep_main, "run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "latents",
                           "--out", tmp_path / out, *CODEC_ARGS, "--chunk-size", "2", "--seed", seed)
        assert code == 0, output
    ours, theirs = tmp_path / "a" / "latents-q1", tmp_path / "b" / "latents-q1"
    chunk = "p000of001-000001"
    before = (ours / "index.json").read_bytes()
    shutil.copy(theirs / f"latents-q1-{chunk}.tar", ours)
    shutil.copy(theirs / f"done-{chunk}.json", ours)  # its chunk record too
    code, out = run(prep_main, "index", ours)
    assert code == 1 and f"latents-q1-{chunk}.tar" in one_line_error(out) and "written by another run" in out
    (ours / f"done-{chunk}.json").unlink()  # or without any chunk record
    code, out = run(prep_main, "index", ours)
    assert code == 1 and "no record of the chunk that wrote it" in one_line_error(out)
    assert (ours / "index.json").read_bytes() == before  # a refused index is never written


def test_index_refuses_a_partial_split_unless_asked(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    code, out = run(prep_main, "run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "latents",
                    "--out", tmp_path, *CODEC_ARGS, "--part", "0/2")
    assert code == 0, out
    code, out = run(prep_main, "index", tmp_path / "latents-q1")
    assert code == 1 and "part(s) p001of002 of the split have no shards here" in one_line_error(out)
    code, out = run(prep_main, "index", tmp_path / "latents-q1", "--partial")
    assert code == 0, out


def rewrite_shard(shard: Path, order: list[int]) -> None:
    """The shard again with its samples' member groups in `order` (indexes into the original samples),
    the checksum table kept: a sample can be repeated in place of another, same size and count."""
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
        data = {m.name: tar.extractfile(m).read() for m in members}
    table, samples = members[0], [members[1 + 3 * i: 4 + 3 * i] for i in range((len(members) - 1) // 3)]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for info in [table] + [m for i in order for m in samples[i]]:
            tar.addfile(info, __import__("io").BytesIO(data[info.name]))


@pytest.mark.parametrize("edit", ["repeated sample", "entry without table", "entry listed twice", "entry outside the set"])
def test_edited_shards_and_indexes_are_refused(tmp_path: Path, edit: str) -> None:
    latent_set(tmp_path, seed=0, per_shard=(4, 4))
    index_path = tmp_path / "lat" / "index.json"
    index = json.loads(index_path.read_text())
    if edit == "repeated sample":
        size = (tmp_path / "lat" / SHARD).stat().st_size
        rewrite_shard(tmp_path / "lat" / SHARD, [0, 2, 0, 3])
        assert (tmp_path / "lat" / SHARD).stat().st_size == size
        expected = "sample id0__img000 appears twice"
    elif edit == "entry without table":
        del index["shards"][0]["table"]
        expected = "has no content digest"
    elif edit == "entry listed twice":
        index["shards"].append(index["shards"][0])
        index["num_samples"] += 4
        expected = "is listed twice"
    else:
        index["shards"][0]["url"] = str(tmp_path / "lat" / SHARD)
        expected = "is not a file name in the set's directory"
    index_path.write_text(json.dumps(index))
    code, out = run(prep_main, "shard", "lat", "--out", tmp_path, "--name", "re")
    assert code == 1 and expected in one_line_error(out)
    code, out = run(train_main, "--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet",
                    "--batch-size", "2", "--out", tmp_path / "t")
    assert code == 2 and expected in one_line_error(out)


def test_a_huge_fold_is_a_line_not_a_traceback(tmp_path: Path) -> None:
    from cdfv.eval.protocol import ProtocolError, read_pairs

    (tmp_path / "pairs.csv").write_text("probe,reference,label,fold\na__1,b__1,0,0\na__2,b__2,0,99999999999999999999\n")
    with pytest.raises(ProtocolError, match=r"pairs.csv:3: fold 99999999999999999999 must be from 0 to 2\^31 - 1"):
        read_pairs(tmp_path / "pairs.csv")


def test_a_stale_index_temporary_is_removed(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    args = ("run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "latents", "--out", tmp_path, *CODEC_ARGS)
    code, out = run(prep_main, *args)
    assert code == 0, out
    stale = tmp_path / "latents-q1" / ".index.json.tmp99999"
    stale.write_text("{")
    code, out = run(prep_main, *args)
    assert code == 0 and not stale.exists()
