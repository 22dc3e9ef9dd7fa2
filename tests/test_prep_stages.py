"""Stage functions: resumption after a kill, checksum-guarded entropy decoding, and refusing inputs
of the wrong kind."""
from __future__ import annotations

import json

import pytest

from cdfv import shards
from cdfv.pipeline import stages
from cdfv.shards import spec as S

from prep_helpers import by_key, detector, link_dataset, raw_members, rebuild_tar, rejects, tar_files, tar_members, untrained_codec, view1_images
from cdfv.pipeline.sources import lfw


@pytest.fixture(scope="module")
def dataset(lfw_root, lfw_meta, tmp_path_factory):
    return lfw(link_dataset(view1_images(lfw_root, lfw_meta, 7), tmp_path_factory.mktemp("lfw7")))


def stream(dataset, out):
    o = stages.RunOptions(out, chunk_size=2, batch_size=2)
    return stages.run_stream(dataset, detector(), [untrained_codec()], o, stages.StreamOptions(outputs=("latents",)))


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    stream(dataset, out)
    return out / "latents-q1"


def test_killed_run_resumes_to_the_same_shards(dataset, uninterrupted, tmp_path, monkeypatch):
    real = stages.run_chunks

    def killed_at_third_chunk(stage, chunks, process, *args, **kwargs):
        calls = []

        def dying(chunk, advance):
            calls.append(chunk)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return process(chunk, advance)

        return real(stage, chunks, dying, *args, **kwargs)

    monkeypatch.setattr(stages, "run_chunks", killed_at_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        stream(dataset, tmp_path)
    assert len(list((tmp_path / "latents-q1").glob("*.tar"))) == 2
    monkeypatch.setattr(stages, "run_chunks", real)

    summary = stream(dataset, tmp_path).summary()
    # the inputs the run covers (7), of which the two finished chunks' (4) resumed
    assert summary["chunks"] == 4 and summary["resumed_chunks"] == 2 and (summary["inputs"], summary["resumed_inputs"]) == (7, 4)
    keys = list(raw_members(tmp_path / "latents-q1", "cls"))  # raw_members fails on a duplicate key
    assert sorted(keys) == sorted(i.key for i in dataset.items)
    assert tar_files(tmp_path / "latents-q1") == tar_files(uninterrupted)


def test_deleted_last_shard_is_rewritten_identically(dataset, uninterrupted, tmp_path):
    stream(dataset, tmp_path)
    last = sorted((tmp_path / "latents-q1").glob("*.tar"))[-1]
    last.unlink()
    summary = stream(dataset, tmp_path).summary()
    assert summary["resumed_chunks"] == 3 and (summary["inputs"], summary["resumed_inputs"]) == (7, 6)
    assert shards.open_shard_set(tmp_path / "latents-q1").num_samples == 7
    assert tar_files(tmp_path / "latents-q1") == tar_files(uninterrupted)


@pytest.fixture(scope="module")
def encoded(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("encoded")
    o = stages.RunOptions(out, chunk_size=3, batch_size=3)
    stages.run_align(dataset, None, o)
    stages.run_encode(shards.open_shard_set(out / "faces"), untrained_codec(), o, "encoded-q1")
    return out


def test_tampered_latent_checksum_is_rejected(encoded):
    shard = sorted((encoded / "encoded-q1").glob("*.tar"))[0]
    members = tar_members(shard)
    name = sorted(n for n in members if n.endswith(".json"))[0]
    key = name.split(".")[0]
    meta = json.loads(members[name])
    meta["latent_crc32"] = (meta["latent_crc32"] + 1) % 2**32
    rebuild_tar(shard, {name: json.dumps(meta).encode()}, reseal=True)

    o = stages.RunOptions(encoded, chunk_size=3, batch_size=3)
    stats = stages.run_entropy_decode(shards.open_shard_set(encoded / "encoded-q1"), untrained_codec(), o, "latents-full-q1")
    assert [r.key for r in stats.rejects] == [key]
    (row,) = rejects(encoded / "latents-full-q1")
    assert row["key"] == key and row["stage"] == "entropy-decode"
    assert "decoded latent differs from the encoder's" in row["reason"]
    kept = by_key(encoded / "latents-full-q1")
    assert key not in kept and len(kept) == 6


def test_stages_refuse_inputs_of_the_wrong_kind(encoded, tmp_path):
    o = stages.RunOptions(tmp_path)
    faces = shards.open_shard_set(encoded / "faces")
    bits = shards.open_shard_set(encoded / "encoded-q1")
    with pytest.raises(shards.ShardSetError, match="entropy-decode needs a bitstream set"):
        stages.run_entropy_decode(faces, untrained_codec(), o, "x")
    with pytest.raises(shards.ShardSetError, match="encode needs an image shard set"):
        stages.run_encode(bits, untrained_codec(), o, "x")
    with pytest.raises(shards.ShardSetError, match="crop-latent needs a latent set"):
        stages.run_crop_latent(bits, o, "x")
    with pytest.raises(shards.ShardSetError, match=r"has no member\(s\) \['latent.npy'\]"):
        stages.run_shard(bits, o, "x", [S.LATENT])


def test_run_stream_refuses_unknown_outputs(dataset, tmp_path):
    with pytest.raises(ValueError, match="outputs must be among"):
        stages.run_stream(dataset, detector(), [untrained_codec()], stages.RunOptions(tmp_path), stages.StreamOptions(outputs=("bits",)))
