"""Hostile files, damaged shards, mismatched resumes and bad output directories, each through the
command a user runs: no file runs code, nothing is lost without being counted and named, every
failure is one line."""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from cdfv import shards
from cdfv.eval.cli import main as eval_main
from cdfv.pipeline.cli import main as prep_main
from cdfv.shards import spec as S
from cdfv.trainer.cli import main as train_main
from cdfv.trainer.export import export_untrained

from conftest import REPO
from prep_helpers import CODEC_ARGS, rejects

M = 8  # latent channels of the toy sets


class Planted:
    """Unpickling this creates `marker`: proof that loading a file ran code from it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def run(main, *args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def one_line_error(output: str) -> str:
    """The error a command printed: exactly one line, no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "rror" in line]
    assert len(errors) == 1, output
    return errors[0]


def latent_set(root: Path, name: str = "lat", per_shard: tuple[int, ...] = (12,), identities: int = 4) -> Path:
    writer = shards.ShardSetWriter(root / name, name)
    n = 0
    for chunk, count in enumerate(per_shard):
        samples = []
        for _ in range(count):
            latent = np.random.default_rng(n).integers(-6, 7, (M, 14, 14)).astype(np.int16)
            key = f"id{n % identities}__img{n:03d}"
            samples.append({"__key__": key, S.LATENT: latent, S.LABEL: n % identities,
                            S.META: {"key": key, "source": f"id{n % identities}/img{n:03d}.png", "label": n % identities,
                                     "latent": {"shape_full": [M, 14, 14]}}})
            n += 1
        writer.write(chunk, samples)
    shards.write_index(root / name, name, "latent", [S.LATENT, S.LABEL, S.META], [f"id{i}" for i in range(identities)],
                       {"variant": "latent", "codec": {"name": "bmshj2018-hyperprior", "quality": 1, "metric": "mse"}})
    return root / name


def members_of(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as tar:
        return tar.getmembers()


def damage_header(shard: Path, member: int) -> None:
    """Overwrites the name field of one member's header in place, as a bad disk block would."""
    info = members_of(shard)[member]
    data = bytearray(shard.read_bytes())
    data[info.offset : info.offset + 16] = b"\xff" * 16
    shard.write_bytes(bytes(data))


def flip_byte(shard: Path, suffix: str, index: int = 0, at: int = 200) -> str:
    """Flips one byte inside the index-th member ending in `suffix`; returns that sample's key."""
    info = [m for m in members_of(shard) if m.name.endswith(suffix)][index]
    data = bytearray(shard.read_bytes())
    data[info.offset_data + at] ^= 0xFF
    shard.write_bytes(bytes(data))
    return info.name.split(".", 1)[0]


def image_folder(root: Path, count: int = 8, size: int = 96) -> Path:
    """A folder-per-identity dataset of small noise pictures (pre-aligned inputs: --no-detect)."""
    for i in range(count):
        path = root / f"p{i % 2}" / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return root


# ---------------------------------------------------------------- no file runs code

def test_no_torch_load_without_weights_only_and_no_bare_pickle_load() -> None:
    for part in ("cdfv", "pipeline", "trainer", "eval", "shards"):
        for path in (REPO / part).rglob("*.py"):
            text = path.read_text()
            assert "weights_only=False" not in text, path
            assert not re.search(r"pickle\.loads?\(", text), path
            for call in re.findall(r"torch\.load\([^)]*\)", text):
                assert "weights_only=True" in call, (path, call)


def test_init_and_resume_files_never_run_code(tmp_path: Path) -> None:
    latent_set(tmp_path)
    marker = tmp_path / "ran"
    evil_pt, evil_pkl = tmp_path / "evil.pt", tmp_path / "evil.pkl"
    torch.save({"format": "cdfv-train-checkpoint", "model": Planted(marker)}, evil_pt)
    evil_pkl.write_bytes(pickle.dumps({"conv1.weight": Planted(marker)}, protocol=2))
    common = ("--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet", "--batch-size", "4")

    code, out = run(train_main, *common, "--init", evil_pt, "--out", tmp_path / "a")
    assert code == 2 and "not a cdfv training checkpoint, model.pt or ResNet50 state dict that loads safely" in one_line_error(out)
    code, out = run(train_main, *common, "--init", evil_pkl, "--out", tmp_path / "b")
    assert code == 2 and "refused to load io.open: a weight file holds only numpy arrays" in one_line_error(out)
    planted = tmp_path / "c"
    planted.mkdir()
    torch.save({"format": "cdfv-train-checkpoint", "config": Planted(marker)}, planted / "checkpoint.pt")
    code, out = run(train_main, *common, "--resume", "--out", planted)
    assert code == 2 and "loads safely" in one_line_error(out)
    assert not marker.exists()


def test_a_planted_codec_checkpoint_never_runs_code(tmp_path: Path) -> None:
    faces = [np.zeros((224, 224, 3), np.uint8) for _ in range(4)]
    writer = shards.ShardSetWriter(tmp_path / "faces", "faces")
    writer.write(0, [{"__key__": f"a__{i}", S.IMAGE: f, S.LABEL: 0, S.META: {}} for i, f in enumerate(faces)])
    shards.write_index(tmp_path / "faces", "faces", "image", [S.IMAGE, S.LABEL, S.META], ["a"], {"variant": "original"})
    marker = tmp_path / "ran"
    out = tmp_path / "codec"
    out.mkdir()
    torch.save({"format": "cdfv-train-checkpoint", "task": Planted(marker)}, out / "codec-checkpoint.pt")
    code, output = run(train_main, "--task", "codec", "--shards", "faces", "--root", tmp_path, "--untrained-codec",
                       "--resume", "--out", out, "--workers", "0", "--quiet", "--batch-size", "2")
    assert code == 2 and "loads safely" in one_line_error(output) and not marker.exists()


def test_a_planted_model_or_codec_weights_file_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "cdfv-model", "state_dict": Planted(marker)}, evil)
    latent_set(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("probe,reference,label\nid0__img000,id0__img004,1\n")
    code, out = run(eval_main, "--pairs", pairs, "--root", tmp_path, "--compressed", f"{evil}=lat", "--out", tmp_path / "r")
    assert code == 1 and "not a cdfv-model file that loads safely" in one_line_error(out) and "io.open" in out
    code, out = run(prep_main, "encode", "--out", tmp_path, "--quality", "1", "--weights", evil)
    assert code == 1 and "not a PyTorch weights file that loads safely" in one_line_error(out)
    assert not marker.exists()


# ---------------------------------------------------------------- damaged shards

@pytest.fixture
def broken_header(tmp_path: Path) -> Path:
    """A 12-sample shard (the checksum table, then 3 members a sample) whose 7th sample's first
    header is damaged."""
    latent_set(tmp_path)
    damage_header(tmp_path / "lat" / "lat-p000of001-000000.tar", member=1 + 6 * 3)
    return tmp_path


def test_a_damaged_header_stops_every_tool_naming_the_shard(broken_header: Path) -> None:
    root = broken_header
    shard = "lat-p000of001-000000.tar"
    code, out = run(prep_main, "shard", "lat", "--out", root, "--name", "re")
    assert code == 1 and shard in one_line_error(out) and "damaged tar header" in out
    code, out = run(prep_main, "index", root / "lat")
    assert code == 1 and shard in one_line_error(out) and "damaged tar header" in out
    code, out = run(train_main, "--shards", "lat", "--root", root, "--width", "4", "--workers", "0", "--quiet",
                    "--batch-size", "4", "--out", root / "t")
    assert code == 2 and shard in one_line_error(out)
    model = export_untrained(root / "m.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
    assert model["untrained"]
    pairs = root / "pairs.csv"
    pairs.write_text("probe,reference,label\nid0__img000,id0__img004,1\nid1__img001,id2__img002,0\n")
    code, out = run(eval_main, "--pairs", pairs, "--root", root, "--compressed", f"{root / 'm.pt'}=lat", "--out", root / "r")
    assert code == 1 and shard in one_line_error(out)


def test_skip_policy_reads_past_a_damaged_header_losing_only_its_sample(broken_header: Path) -> None:
    root = broken_header
    written = {s["__key__"]: s for s in shards.open_shard_set(root / "lat", damage="skip").samples(decode=False,
                                                                                                      damage=shards.Damage("skip"))}
    code, out = run(prep_main, "shard", "lat", "--out", root, "--name", "re", "--damaged", "skip")
    assert code == 0, out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["damaged_samples_lost"] == 1 and summary["written"] == {"re": 11}
    (row,) = rejects(root / "re")
    assert row["key"] == "id2__img006" and "damaged tar header" in row["reason"]
    recovered = list(shards.open_shard_set(root / "re").samples(decode=False))  # each checked against its digest
    assert [s["__key__"] for s in recovered] == [f"id{n % 4}__img{n:03d}" for n in range(12) if n != 6]
    assert all(s[m] == written[s["__key__"]][m] for s in recovered for m in (S.LATENT, S.LABEL, S.META))
    code, out = run(train_main, "--shards", "lat", "--root", root, "--width", "4", "--workers", "0", "--quiet", "--batch-size", "2",
                    "--classify-epochs", "1", "--phase", "classify", "--damaged", "skip", "--out", root / "t")
    assert code == 0, out
    summary = json.loads((root / "t" / "summary.json").read_text())
    assert summary["skipped_samples"] == 1 and len(summary["damaged"]) == 1 and ":id2__img006: damaged tar header" in summary["damaged"][0]


def test_samples_after_a_damaged_header_are_kept_only_where_their_checksums_pass(tmp_path: Path) -> None:
    """One damaged header (the 5th member: the 2nd sample's first) and a flipped byte in the 6th
    sample's latent: exactly those two samples are lost, by name, and the six others read back."""
    latent_set(tmp_path, per_shard=(8,))
    shard = tmp_path / "lat" / "lat-p000of001-000000.tar"
    assert flip_byte(shard, ".latent.npy", index=5) == "id1__img005"
    damage_header(shard, member=4)
    damage = shards.Damage("skip")
    kept = [s["__key__"] for s in shards.open_shard_set(tmp_path / "lat", damage="skip").samples(damage=damage)]
    assert kept == ["id0__img000", "id2__img002", "id3__img003", "id0__img004", "id2__img006", "id3__img007"]
    assert damage.lost_samples == 2 and [(x.key, x.index) for x in damage.lost] == [("id1__img001", 1), ("id1__img005", 5)]
    assert "damaged tar header" in damage.lost[0].problem and "latent.npy fails its checksum" in damage.lost[1].problem


@pytest.fixture
def truncated(tmp_path: Path) -> Path:
    """An 8-sample shard cut short inside its 5th sample's first header: 4 samples lost."""
    latent_set(tmp_path, per_shard=(8,))
    shard = tmp_path / "lat" / "lat-p000of001-000000.tar"
    shard.write_bytes(shard.read_bytes()[: members_of(shard)[1 + 3 * 4].offset + 300])
    return tmp_path


LOST = ["id0__img004", "id1__img005", "id2__img006", "id3__img007"]


def test_a_truncated_shard_spanning_two_output_chunks_counts_each_loss_once(truncated: Path) -> None:
    code, out = run(prep_main, "shard", "lat", "--out", truncated, "--name", "re", "--chunk-size", "4", "--damaged", "skip")
    assert code == 0, out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["damaged_samples_lost"] == 4 and summary["written"] == {"re": 4} and summary["rejects"] == 4
    assert [line.split(":")[1] for line in summary["damaged"]] == LOST
    assert [row["key"] for row in rejects(truncated / "re")] == LOST


def test_training_past_a_truncated_shard_counts_and_names_every_lost_sample(truncated: Path) -> None:
    code, out = run(train_main, "--shards", "lat", "--root", truncated, "--width", "4", "--workers", "0", "--quiet",
                    "--batch-size", "2", "--classify-epochs", "2", "--phase", "classify", "--damaged", "skip", "--out", truncated / "t")
    assert code == 0, out
    summary = json.loads((truncated / "t" / "summary.json").read_text())
    assert summary["skipped_samples"] == 4 and [line.split(":")[1] for line in summary["damaged"]] == LOST


def test_a_flipped_byte_in_a_latent_is_caught_by_its_checksum(tmp_path: Path) -> None:
    latent_set(tmp_path)
    key = flip_byte(tmp_path / "lat" / "lat-p000of001-000000.tar", ".latent.npy", index=4)
    assert key == "id0__img004"
    export_untrained(tmp_path / "m.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"probe,reference,label\nid0__img000,{key},1\nid1__img001,id1__img005,1\nid1__img001,id2__img002,0\n")
    args = ("--pairs", pairs, "--root", tmp_path, "--compressed", f"{tmp_path / 'm.pt'}=lat", "--bootstrap", "0")
    code, out = run(eval_main, *args, "--out", tmp_path / "r")
    assert code == 1 and key in one_line_error(out) and "fails its checksum" in out
    code, out = run(eval_main, *args, "--missing", "skip", "--out", tmp_path / "s")
    assert code == 0, out
    table = pq.read_table(next((tmp_path / "s" / "scores").glob("*.parquet"))).to_pylist()
    assert table[0]["missing"] and "fails its checksum" in table[0]["missing_reason"]
    assert not table[1]["missing"] and not table[2]["missing"]


def test_damaged_samples_are_rejected_by_name_and_the_stage_goes_on(tmp_path: Path) -> None:
    latent_set(tmp_path, per_shard=(6, 6))
    key = flip_byte(tmp_path / "lat" / "lat-p000of001-000001.tar", ".latent.npy", index=2)
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--name", "crop", "--size", "12")
    assert code == 0, out
    (row,) = rejects(tmp_path / "crop")
    assert row["key"] == key and "lat-p000of001-000001.tar" in row["reason"] and "latent.npy fails its checksum" in row["reason"]
    assert shards.open_shard_set(tmp_path / "crop").num_samples == 11


def test_crop_latent_names_its_output_by_the_codec_its_input_records(tmp_path: Path) -> None:
    """A variant's latents are filed under the variant (not the plain codec's latents-q1), and a
    set of one quality is not cropped into a set named for another."""
    index = json.loads((latent_set(tmp_path) / "index.json").read_text())
    index["meta"]["codec"]["variant"] = "id"
    (tmp_path / "lat" / "index.json").write_text(json.dumps(index))
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--size", "12")
    assert code == 0, out
    assert shards.open_shard_set("latents-id-q1", tmp_path).num_samples == 12 and not (tmp_path / "latents-q1").exists()
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "3", "--input", "lat", "--size", "12")
    assert code == 1 and "holds latents of bmshj2018-hyperprior-mse q1, not of bmshj2018-hyperprior-mse-q3" in one_line_error(out)
    assert not (tmp_path / "latents-q3").exists()


def test_a_missing_member_is_named_not_a_key_error(tmp_path: Path) -> None:
    writer = shards.ShardSetWriter(tmp_path / "lat", "lat")
    good = {"__key__": "a__0", S.LATENT: np.zeros((M, 14, 14), np.int16), S.LABEL: 0, S.META: {"source": "a/0", "latent": {}}}
    writer.write(0, [good, {"__key__": "a__1", S.LABEL: 0, S.META: {"source": "a/1", "latent": {}}}])
    shards.write_index(tmp_path / "lat", "lat", "latent", [S.LATENT, S.LABEL, S.META], ["a"], {})
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--name", "crop", "--size", "12")
    assert code == 0, out
    (row,) = rejects(tmp_path / "crop")
    assert row["key"] == "a__1" and "lacks member(s) ['latent.npy']" in row["reason"]


@pytest.mark.parametrize("command", ["eval", "crop-latent", "index", "encode"])
def test_a_truncated_shard_is_one_line(tmp_path: Path, command: str) -> None:
    latent_set(tmp_path)
    shard = tmp_path / "lat" / "lat-p000of001-000000.tar"
    shard.write_bytes(shard.read_bytes()[: 5000])
    if command == "eval":
        export_untrained(tmp_path / "m.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
        (tmp_path / "pairs.csv").write_text("probe,reference,label\nid0__img000,id0__img004,1\n")
        code, out = run(eval_main, "--pairs", tmp_path / "pairs.csv", "--root", tmp_path, "--compressed", f"{tmp_path / 'm.pt'}=lat",
                        "--out", tmp_path / "r")
    elif command == "crop-latent":
        code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", "lat", "--name", "c")
    elif command == "index":
        code, out = run(prep_main, "index", tmp_path / "lat")
    else:
        (tmp_path / "lat" / "index.json").write_text((tmp_path / "lat" / "index.json").read_text().replace('"latent"', '"image"', 1))
        code, out = run(prep_main, "encode", "--out", tmp_path, "--input", "lat", *CODEC_ARGS)
    line = one_line_error(out)
    assert code == 1 and "lat-p000of001-000000.tar" in line
    assert re.search(r"is 5000 bytes, its index entry says \d+|not a readable tar", line)


# ---------------------------------------------------------------- resumes that must not mix

def test_prep_restart_with_other_chunking_or_inputs_is_refused(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    args = ("run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "faces,latents", "--out", tmp_path / "o",
            *CODEC_ARGS, "--batch-size", "4")
    code, out = run(prep_main, *args, "--chunk-size", "4")
    assert code == 0, out
    code, out = run(prep_main, *args, "--chunk-size", "8")
    assert code == 1 and "chunk_size: 4 -> 8" in one_line_error(out) and "would mix" in out
    code, out = run(prep_main, *args, "--chunk-size", "4")
    assert code == 0 and json.loads(out[out.index("{"): out.rindex("}") + 1])["resumed_chunks"] == 2
    image_folder(tmp_path / "data", count=9)  # one picture more
    code, out = run(prep_main, *args, "--chunk-size", "4")
    assert code == 1 and "inputs or their split into chunks changed: 9 inputs now" in one_line_error(out)
    for name in ("faces", "latents-q1"):
        ss = shards.open_shard_set(tmp_path / "o" / name)
        assert ss.num_samples == 8 == len(list(ss.samples()))


def test_a_run_of_another_split_is_refused_writing_nothing(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data")
    args = ("run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "faces,latents", "--out", tmp_path / "o",
            *CODEC_ARGS, "--batch-size", "4", "--chunk-size", "2")
    code, out = run(prep_main, *args)
    assert code == 0, out
    before = {p: p.read_bytes() for p in sorted((tmp_path / "o").rglob("*")) if p.is_file()}
    code, out = run(prep_main, *args, "--part", "1/2")
    line = one_line_error(out)
    assert code == 1 and "holds parts made with --part i/1" in line and "--part 1/2 would add parts" in line
    assert {p: p.read_bytes() for p in sorted((tmp_path / "o").rglob("*")) if p.is_file()} == before
    code, out = run(prep_main, *args)
    assert code == 0 and json.loads(out[out.index("{"): out.rindex("}") + 1])["resumed_chunks"] == 4, out
    code, out = run(prep_main, "index", tmp_path / "o" / "faces")
    assert code == 0 and "4 shards, 8 samples" in out, out


def test_train_resume_refuses_changed_options_unless_allowed(tmp_path: Path) -> None:
    latent_set(tmp_path, per_shard=(12, 12))
    common = ("--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet", "--phase", "classify",
              "--classify-epochs", "2", "--out", tmp_path / "t")
    code, out = run(train_main, *common, "--batch-size", "4", "--max-steps", "3")
    assert code == 0, out
    code, out = run(train_main, *common, "--batch-size", "4", "--max-steps", "3")
    assert code == 2 and "holds a run" in one_line_error(out)
    code, out = run(train_main, *common, "--batch-size", "6", "--lr", "0.5", "--seed", "3", "--resume")
    line = one_line_error(out)
    assert code == 2 and "batch_size: 4 -> 6" in line and "seed: 0 -> 3" in line and "lr_classify: 0.1 -> 0.5" in line
    code, out = run(train_main, *common, "--batch-size", "6", "--resume", "--allow-change", "batch_size")
    assert code == 0, out
    state = torch.load(tmp_path / "t" / "checkpoint.pt", weights_only=True)
    assert state["config"]["batch_size"] == 6
    assert state["config_changes"] == [{"step": 3, "changed": {"batch_size": [4, 6]}}]


# ---------------------------------------------------------------- output directories and disks

def test_unwritable_outputs_are_one_line_in_every_tool(tmp_path: Path) -> None:
    latent_set(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    code, out = run(prep_main, "crop-latent", "--out", tmp_path, "--quality", "1", "--input", str(tmp_path / "lat"),
                    "--name", str(blocker / "crop"))
    assert code == 1 and "Not a directory" in one_line_error(out)
    code, out = run(train_main, "--shards", "lat", "--root", tmp_path, "--width", "4", "--workers", "0", "--quiet",
                    "--out", blocker / "run")
    assert code == 2 and "Not a directory" in one_line_error(out)
    export_untrained(tmp_path / "m.pt", "cresnet39", in_channels=M, width=4, embedding_dim=8)
    (tmp_path / "pairs.csv").write_text("probe,reference,label\nid0__img000,id0__img004,1\n")
    code, out = run(eval_main, "--pairs", tmp_path / "pairs.csv", "--root", tmp_path, "--compressed", f"{tmp_path / 'm.pt'}=lat",
                    "--out", blocker / "r")
    assert code == 1 and "Not a directory" in one_line_error(out) and "pairs" not in out.split("rror")[0]


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    latent_set(tmp_path)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("cdfv.shards.writer.os.fsync", full)
    code, out = run(prep_main, "shard", "lat", "--out", tmp_path, "--name", "re")
    assert code == 1 and "No space left on device" in one_line_error(out)
    assert not [p for p in (tmp_path / "re").iterdir() if ".tmp" in p.name]


def test_decode_of_a_chunk_whose_faces_were_all_rejected(tmp_path: Path) -> None:
    writer = shards.ShardSetWriter(tmp_path / "faces", "faces")
    face = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    writer.write(0, [{"__key__": "a__0", S.IMAGE: face, S.LABEL: 0, S.META: {"key": "a__0", "source": "a/0", "label": 0}}])
    writer.write(1, [])  # every picture of this chunk was rejected upstream
    shards.write_index(tmp_path / "faces", "faces", "image", [S.IMAGE, S.LABEL, S.META], ["a"], {"variant": "original"})
    for stage in ("encode", "decode", "decode"):  # the second decode resumes
        code, out = run(prep_main, stage, "--out", tmp_path, *CODEC_ARGS)
        assert code == 0, out
    ss = shards.open_shard_set(tmp_path / "decoded-q1")
    assert [s.samples for s in ss.shards] == [1, 0] and len(list(ss.samples())) == 1


# ---------------------------------------------------------------- messages that say where

def test_skipped_files_are_named_and_stray_root_files_counted(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data", count=4)
    (data / "stray.jpg").write_bytes(b"x")
    (data / "p0" / "notes.txt").write_text("x")
    code, out = run(prep_main, "align", "--dataset", "folder", "--root", data, "--no-detect", "--out", tmp_path / "o")
    assert code == 0, out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["skipped_files"] == 2
    assert summary["skipped_files_listed"] == ["stray.jpg: file at the dataset root, outside any identity folder",
                                               "p0/notes.txt: not an image suffix (.txt)"]
    assert (tmp_path / "o" / "faces" / "skipped-files.tsv").read_text().count("\n") == 2


def test_multi_output_run_keeps_reject_reasons_beside_every_output(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data", count=4)
    (data / "p1" / "broken.png").write_bytes(b"\x89PNG not really")
    code, out = run(prep_main, "run", "--dataset", "folder", "--root", data, "--no-detect", "--outputs", "faces,latents",
                    "--out", tmp_path / "o", *CODEC_ARGS)
    assert code == 0, out
    for name in ("faces", "latents-q1"):
        (row,) = rejects(tmp_path / "o" / name)
        assert row["key"] == "p1__broken" and row["source"] == "p1/broken.png"


def test_no_face_whole_fallbacks_are_counted(tmp_path: Path) -> None:
    data = image_folder(tmp_path / "data", count=2, size=160)  # noise: no face
    code, out = run(prep_main, "run", "--dataset", "folder", "--root", data, "--outputs", "faces", "--no-face", "whole",
                    "--out", tmp_path / "o", *CODEC_ARGS)
    assert code == 0, out
    summary = json.loads(out[out.index("{"): out.rindex("}") + 1])
    assert summary["counters"]["no_face_whole_image"] == 2


def test_transplant_without_a_teacher_names_the_command_that_makes_its_maps(tmp_path: Path) -> None:
    latent_set(tmp_path)
    code, out = run(train_main, "--shards", "lat", "--root", tmp_path, "--workers", "0", "--quiet", "--phase", "transplant",
                    "--junction", "level2", "--out", tmp_path / "a")
    line = one_line_error(out)
    assert code == 2 and "--phase transplant needs dlib's" in line and "`cdfv-prep teacher --model dlib --maps level2`" in line
    assert "distill" not in line


def test_a_set_absent_under_the_given_root_is_named_there(tmp_path: Path) -> None:
    code, out = run(train_main, "--shards", "nope", "--root", tmp_path, "--workers", "0", "--quiet", "--out", tmp_path / "b")
    line = one_line_error(out)
    assert code == 2 and f"no shard set 'nope' under {tmp_path}:" in line and str(tmp_path / "nope" / "index.json") in line
    assert "set --root" not in line


def test_a_blank_line_in_a_pairs_file_is_reported_where_it_is(tmp_path: Path) -> None:
    from cdfv.eval.protocol import ProtocolError, read_pairs

    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nA\t1\t2\nB\t1\t2\n\nC\t1\tD\t1\nE\t1\tF\t1\n")
    with pytest.raises(ProtocolError, match=r"pairs.txt:4: blank line inside the pair list"):
        read_pairs(pairs)
