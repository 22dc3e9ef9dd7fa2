"""The shard stream: per-epoch deterministic shuffling, equal rank shares, bad input handling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cdfv.shards import Damage, ShardSetError, ShardSetWriter, open_shard_set, write_index
from cdfv.trainer.data import ShardStream, damage_summary, identity_split, make_loader, scan_labels
from cdfv.trainer.train import TrainConfig, train


def latent_set(root: Path, name: str, sizes: list[int], m: int = 8, corrupt: str | None = None) -> Path:
    writer = ShardSetWriter(root / name, name)
    n = 0
    for chunk, size in enumerate(sizes):
        samples = []
        for _ in range(size):
            value = np.full((m, 14, 14), n, dtype=np.int16)
            key = f"id{n % 4}__{n:04d}"
            samples.append({"__key__": key, "cls": n % 4, "latent.npy": b"not npy" if key == corrupt else value})
            n += 1
        writer.write(chunk, samples)
    write_index(root / name, name, "latent", ["cls", "latent.npy"], [f"id{i}" for i in range(4)], {})
    return root / name


def ids(stream: ShardStream, workers: int = 0) -> list[int]:
    return [int(x[i, 0, 0, 0]) for x, _, _ in make_loader(stream, workers, False) for i in range(len(x))]


def test_epoch_shuffle_is_deterministic_and_changes_per_epoch(tmp_path) -> None:
    s = open_shard_set(latent_set(tmp_path, "lat", [10, 7, 9]))
    a = ShardStream(s, batch_size=4, seed=3, shuffle=True, shuffle_buffer=5)
    first = ids(a)
    assert first == ids(a) and len(first) == 24 and len(set(first)) == 24
    a.set_epoch(1)
    assert ids(a) != first
    a.set_epoch(0, start_step=2)  # resume mid-epoch: the same stream minus the first 2 batches
    assert ids(a) == first[8:]
    two = ShardStream(s, batch_size=4, seed=3, shuffle=True, shuffle_buffer=5)
    whole = ids(two, workers=2)
    two.set_epoch(0, start_step=3)  # an odd step: worker 0 must now play reader 1
    assert ids(two, workers=2) == whole[12:]


def test_ranks_take_equal_shares(tmp_path) -> None:
    s = open_shard_set(latent_set(tmp_path, "lat", [10, 3, 9, 4]))  # 26 samples, uneven shards
    shares = [ids(ShardStream(s, batch_size=3, seed=0, shuffle=True, rank=r, world=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 12  # 26 // 2 = 13 -> 4 batches of 3 each
    with_workers = ids(ShardStream(s, batch_size=3, seed=0, shuffle=True, rank=0, world=2), workers=2)
    assert len(with_workers) == 12


def test_corrupt_member_is_skipped_counted_and_listed_once(tmp_path) -> None:
    s = open_shard_set(latent_set(tmp_path, "lat", [8, 8], corrupt="id1__0005"))
    log = tmp_path / "damaged.tsv"
    stream = ShardStream(s, batch_size=5, seed=0, shuffle=False, damage_log=log)
    got = ids(stream)
    assert len(got) == 15 and 5 not in got
    for epoch in (1, 2):  # the same bad sample met again (other epochs, other workers) is one loss
        stream.set_epoch(epoch)
        ids(stream, workers=2)
    assert len(log.read_text().splitlines()) > 1  # each reader logs what it met
    summary = damage_summary(log, settle=True)
    assert summary["damaged_samples_lost"] == 1 and len(log.read_text().splitlines()) == 1  # the run's log: each loss once
    assert damage_summary(log) == summary
    (line,) = summary["damaged"]
    assert "lat-p000of001-000000.tar:id1__0005: member latent.npy does not decode" in line


def test_identity_split_is_disjoint() -> None:
    labels = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 0]]
    train_keep, val_keep, n_train, n_val = identity_split(labels, 0.1, seed=0)
    assert (n_train, n_val) == (9, 1)
    assert not np.any((train_keep >= 0) & (val_keep >= 0))
    assert sorted(train_keep[train_keep >= 0]) == list(range(9))


def test_scan_labels(tmp_path) -> None:
    s = open_shard_set(latent_set(tmp_path, "lat", [3, 2]))
    assert scan_labels(s, Damage()) == [[0, 1, 2], [3, 0]]


def test_bad_inputs_fail_before_training(tmp_path) -> None:
    latent_set(tmp_path, "lat", [20])
    cfg = dict(root=str(tmp_path), out=str(tmp_path / "run"), width=4, workers=0, progress=False)
    with pytest.raises(ShardSetError, match="holds latent samples, but resnet50 reads images"):
        train(TrainConfig(shards="lat", arch="resnet50", **cfg))
    with pytest.raises(ShardSetError, match="no shard set 'nothing'"):
        train(TrainConfig(shards="nothing", **cfg))
    empty = tmp_path / "empty"
    ShardSetWriter(empty, "empty").write(0, [])
    write_index(empty, "empty", "latent", ["cls", "latent.npy"], ["a"], {})
    with pytest.raises(ShardSetError, match="holds no samples"):
        train(TrainConfig(shards="empty", **cfg))
    latent_set(tmp_path, "other-m", [20], m=16)
    with pytest.raises(ShardSetError, match="has 16 channels, the training set 8"):
        train(TrainConfig(shards="lat", val_shards="other-m", **cfg))
    (tmp_path / "lat" / "lat-p000of001-000000.tar").write_bytes(b"\0" * 10)
    with pytest.raises(ShardSetError, match=r"lat-p000of001-000000.tar: is 10 bytes, its index entry says \d+"):
        train(TrainConfig(shards="lat", **cfg))


@pytest.mark.parametrize("workers", [0, 2, 4])
@pytest.mark.parametrize("world", [1, 2])
def test_every_sample_once_per_epoch_across_workers_and_ranks(tmp_path, workers: int, world: int) -> None:
    s = open_shard_set(latent_set(tmp_path, "lat", [25] * 8))  # 200 samples
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in range(world):
            stream = ShardStream(s, batch_size=5, seed=7, shuffle=True, shuffle_buffer=10, rank=rank, world=world)
            stream.set_epoch(epoch)
            seen += ids(stream, workers=workers)
        assert sorted(seen) == list(range(200))


def test_uneven_shares_still_read_each_sample_at_most_once(tmp_path) -> None:
    s = open_shard_set(latent_set(tmp_path, "lat", [10, 3, 9, 4, 7]))  # 33 samples, uneven shards
    seen = [i for rank in range(2) for i in ids(ShardStream(s, batch_size=4, seed=1, shuffle=True, rank=rank, world=2), workers=3)]
    assert len(seen) == 32 and len(set(seen)) == 32  # 33 // 2 // 4 = 4 batches of 4 per rank
