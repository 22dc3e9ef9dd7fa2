"""The shard-format contract: keys, bitstream framing, tars any reader opens, the index, and the
errors a reader gives for a set it cannot use."""
from __future__ import annotations

import json
import logging
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xxhash

from cdfv import shards
from cdfv.shards import spec as S
from cdfv.shards.reader import ShardSetError

from prep_helpers import load_npy, tar_members


def make_sample(key: str, label: int) -> dict:
    latent = np.arange(2 * 3 * 3, dtype=np.int16).reshape(2, 3, 3) * (label + 1)
    return {"__key__": key, S.LATENT: latent, S.LABEL: label, S.META: {"key": key, "label": label}}


def write_set(directory: Path, per_shard: list[int], name: str = "toy") -> dict:
    """A latent set of shards holding per_shard[i] samples each; returns its index."""
    writer = shards.ShardSetWriter(directory, name)
    n = 0
    for chunk, count in enumerate(per_shard):
        writer.write(chunk, [make_sample(f"id{(n + i) % 2}__img{n + i:03d}", (n + i) % 2) for i in range(count)])
        n += count
    return shards.write_index(directory, name, "latent", [S.LATENT, S.LABEL, S.META], ["id0", "id1"], {"untrained": True})


def test_make_key_replaces_dots_and_unsafe_characters():
    assert S.make_key("Aaron_Peirsol", "Aaron_Peirsol_0001") == "Aaron_Peirsol__Aaron_Peirsol_0001"
    assert S.make_key("n000002", "0001.01") == "n000002__0001-01"
    assert S.make_key("José María", "a+b") == "Jos--Mar-a__a-b"
    with pytest.raises(ValueError, match="empty key part"):
        S.make_key("id", "")


def test_bitstream_round_trip_and_payload():
    strings = [b"\x01\x02\x03", b"", b"zz"]
    blob = S.pack_bitstream(strings, (4, 5))
    assert len(blob) == 9 + 4 * 3 + 5
    assert S.unpack_bitstream(blob) == (strings, (4, 5))
    assert S.payload_bytes(strings) == 5
    assert S.bits_per_pixel(5) == 8 * 5 / (224 * 224)


@pytest.mark.parametrize(
    "blob, message",
    [
        (S.pack_bitstream([b"abcd", b"ef"], (4, 4))[:-1], "length mismatch"),
        (S.pack_bitstream([b"abcd"], (4, 4)) + b"x", "length mismatch"),
        (b"CDF", "too short"),
        (b"JPEG" + bytes(20), "not a cdfv bitstream"),
    ],
)
def test_unpack_bitstream_refuses_damaged_blobs(blob, message):
    with pytest.raises(ValueError, match=message):
        S.unpack_bitstream(blob)


def test_shards_are_deterministic_ustar_tars(tmp_path):
    write_set(tmp_path / "a", [3, 2])
    write_set(tmp_path / "b", [3, 2])
    first = sorted((tmp_path / "a").glob("*.tar"))
    assert [p.name for p in first] == ["toy-p000of001-000000.tar", "toy-p000of001-000001.tar"]
    for p in first:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
        with tarfile.open(p) as tar:
            assert all(m.isfile() and m.mtime == 0 for m in tar.getmembers())
    members = tar_members(first[0])
    assert sorted(members) == [S.CHECKSUMS] + [f"{k}.{e}" for k in ("id0__img000", "id0__img002", "id1__img001") for e in ("cls", "json", "latent.npy")]
    table = json.loads(members[S.CHECKSUMS])
    assert table["id1__img001"] == {ext: xxhash.xxh3_64_hexdigest(members[f"id1__img001.{ext}"]) for ext in ("cls", "json", "latent.npy")}
    assert members["id1__img001.cls"] == b"1"
    np.testing.assert_array_equal(load_npy(members["id1__img001.latent.npy"]), make_sample("x", 1)[S.LATENT])


def test_shards_are_listed_by_the_tar_command(tmp_path):
    write_set(tmp_path, [2])
    listing = subprocess.run(["tar", "-tf", str(tmp_path / "toy-p000of001-000000.tar")], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == [S.CHECKSUMS, "id0__img000.cls", "id0__img000.json", "id0__img000.latent.npy",
                                      "id1__img001.cls", "id1__img001.json", "id1__img001.latent.npy"]


def test_shards_are_read_by_webdataset(tmp_path):
    import webdataset as wds

    write_set(tmp_path, [3, 1])
    ss = shards.open_shard_set(tmp_path)
    raw = list(wds.WebDataset(ss.urls, shardshuffle=False, empty_check=False))
    assert [r["__key__"] for r in raw] == ["id0__img000", "id1__img001", "id0__img002", "id1__img003"]
    decoded = list(ss.samples())
    assert [s[S.LABEL] for s in decoded] == [0, 1, 0, 1]
    assert decoded[1][S.META] == {"key": "id1__img001", "label": 1}
    assert decoded[3][S.LATENT].dtype == np.int16 and decoded[3][S.LATENT].shape == (2, 3, 3)


def test_index_lists_every_shard_and_sample(tmp_path):
    index = write_set(tmp_path, [3, 2, 0])
    on_disk = json.loads((tmp_path / "index.json").read_text())
    assert on_disk == index
    assert (index["format"], index["version"], index["kind"]) == ("cdfv-shards", 3, "latent")
    assert index["num_samples"] == 5
    assert [(e["url"], e["samples"]) for e in index["shards"]] == [
        ("toy-p000of001-000000.tar", 3), ("toy-p000of001-000001.tar", 2), ("toy-p000of001-000002.tar", 0)]
    assert [e["bytes"] for e in index["shards"]] == [(tmp_path / e["url"]).stat().st_size for e in index["shards"]]
    assert index["members"] == sorted([S.LATENT, S.LABEL, S.META])
    assert index["identities"] == ["id0", "id1"]


def test_index_refuses_parts_of_different_splits(tmp_path):
    shards.ShardSetWriter(tmp_path, "toy", 0, 2).write(0, [make_sample("a__b", 0)])
    shards.ShardSetWriter(tmp_path, "toy", 0, 3).write(0, [make_sample("a__c", 0)])
    with pytest.raises(ValueError, match="split"):
        shards.write_index(tmp_path, "toy", "latent", [S.LATENT], ["a"], {})


def test_writer_refuses_a_part_outside_the_split(tmp_path):
    with pytest.raises(ValueError, match="part 2 outside 0..1"):
        shards.ShardSetWriter(tmp_path, "toy", 2, 2)


def test_open_missing_set_names_the_paths_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("CDFV_SHARDS", raising=False)
    with pytest.raises(ShardSetError, match=f"{tmp_path / 'nope' / 'index.json'}"):
        shards.open_shard_set(tmp_path / "nope")


def test_open_resolves_a_name_under_the_root(tmp_path, monkeypatch):
    write_set(tmp_path / "latents-q1", [2])
    assert shards.open_shard_set("latents-q1", root=tmp_path).num_samples == 2
    monkeypatch.setenv("CDFV_SHARDS", str(tmp_path))
    assert shards.open_shard_set("latents-q1").directory == tmp_path / "latents-q1"


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"format": "something-else"}, "not a cdfv-shards index"),
        ({"version": 99}, r"format version 99, this cdfv reads \(1, 2, 3\)"),
    ],
)
def test_open_refuses_foreign_or_other_version_index(tmp_path, edit, message):
    index = write_set(tmp_path, [2])
    (tmp_path / "index.json").write_text(json.dumps({**index, **edit}))
    with pytest.raises(ShardSetError, match=message) as err:
        shards.open_shard_set(tmp_path)
    assert str(tmp_path / "index.json") in str(err.value)


def test_open_refuses_unreadable_index(tmp_path):
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ShardSetError, match="unreadable index"):
        shards.open_shard_set(tmp_path)


def test_open_refuses_a_set_with_a_missing_shard(tmp_path):
    write_set(tmp_path, [2, 2])
    (tmp_path / "toy-p000of001-000001.tar").unlink()
    with pytest.raises(ShardSetError, match="1 listed shard.s. missing, first toy-p000of001-000001.tar") as err:
        shards.open_shard_set(tmp_path)
    assert str(tmp_path / "index.json") in str(err.value)


def test_open_refuses_an_empty_set(tmp_path):
    write_set(tmp_path, [0])
    with pytest.raises(ShardSetError, match="holds no samples") as err:
        shards.open_shard_set(tmp_path)
    assert str(tmp_path / "index.json") in str(err.value)


def test_samples_read_back_can_be_written_again(tmp_path):
    write_set(tmp_path / "a", [2])
    read = list(shards.open_shard_set(tmp_path / "a").samples())
    assert any(k.startswith("__") and k != "__key__" for k in read[0])  # webdataset adds __url__ and others
    shards.ShardSetWriter(tmp_path / "b", "toy").write(0, read)
    assert (tmp_path / "b" / "toy-p000of001-000000.tar").read_bytes() == (tmp_path / "a" / "toy-p000of001-000000.tar").read_bytes()


def test_damage_lists_each_lost_sample_once_by_the_key_its_checksum_table_gives(tmp_path, caplog):
    """The reader's damage record is per sample, named from the shard's checksum table, and a
    shard read again (by each chunk it spans, each epoch) adds nothing: any caller can count it."""
    write_set(tmp_path, [6, 2])
    shard = tmp_path / "toy-p000of001-000000.tar"
    with tarfile.open(shard) as tar:
        cut = tar.getmembers()[1 + 3 * 2].offset  # before the 3rd sample's first header
    shard.write_bytes(shard.read_bytes()[:cut])
    damage = shards.Damage("skip")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            kept = [s["__key__"] for s in shards.open_shard_set(tmp_path, damage="skip").samples(damage=damage)]
            assert kept == ["id0__img000", "id1__img001", "id0__img006", "id1__img007"]
    assert damage.lost_samples == 4
    assert len([r for r in caplog.records if "damaged shard" in r.getMessage()]) == 1  # said once, as it is counted
    assert [(x.key, x.index, x.samples) for x in damage.lost] == [(f"id{n % 2}__img{n:03d}", n, 1) for n in range(2, 6)]
    unsized = shards.Shard(shard, 6, None, True, shards.open_shard_set(tmp_path, damage="skip").shards[0].table)
    with pytest.raises(shards.DamagedShard, match="toy-p000of001-000000.tar: .*: 4 of its 6 indexed samples lost"):
        list(shards.read_shard(unsized))  # policy error: the message counts the loss too
