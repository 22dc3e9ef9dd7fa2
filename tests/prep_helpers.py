"""Helpers shared by the pipeline (cdfv-prep) tests: small datasets made of links to real images,
the Click entry point, and readers of what a run leaves on disk."""
from __future__ import annotations

import functools
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner, Result

from cdfv import shards
from cdfv.pipeline.cli import main
from cdfv.shards import spec as S
from cdfv.shards.reader import digest

CODEC_ARGS = ("--codec", "bmshj2018-hyperprior", "--quality", "1", "--untrained", "--device", "cpu")


def view1_images(lfw_root: Path, lfw_meta: Path, count: int) -> list[Path]:
    """The first `count` distinct pictures named by LFW View 1 (pairsDevTest.txt), in file order."""
    paths: list[Path] = []
    for line in (lfw_meta / "pairsDevTest.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        pairs = [(f[0], f[1]), (f[0], f[2])] if len(f) == 3 else [(f[0], f[1]), (f[2], f[3])]
        for name, num in pairs:
            p = lfw_root / name / f"{name}_{int(num):04d}.jpg"
            if p.is_file() and p not in paths:
                paths.append(p)
        if len(paths) >= count:
            return paths[:count]
    raise AssertionError(f"LFW View 1 names fewer than {count} pictures under {lfw_root}")


def celeba_images(celeba_root: Path, identities: int, per_identity: int) -> list[Path]:
    """The first pictures of the first identities of the CelebA folder-per-identity subset."""
    out = []
    for ident in sorted(p for p in celeba_root.iterdir() if p.is_dir())[:identities]:
        out += sorted(ident.iterdir())[:per_identity]
    return out


def link_dataset(paths: list[Path], root: Path) -> Path:
    """A folder-per-identity dataset of symlinks: root/<parent folder name>/<file name>."""
    for p in paths:
        dest = root / p.parent.name / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(p.resolve())
    return root


def invoke(*args: Any) -> Result:
    """Runs cdfv-prep in-process; stdout and stderr are kept apart (result.stdout / result.stderr)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def invoke_ok(*args: Any) -> dict[str, Any]:
    """Runs cdfv-prep, asserts success and returns the JSON summary it prints."""
    result = invoke(*args)
    assert result.exit_code == 0, f"cdfv-prep {' '.join(map(str, args))} failed:\n{result.output}"
    return json.loads(result.stdout)


def samples(directory: Path, members: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every sample of a shard set, decoded, in index order."""
    ss = shards.open_shard_set(directory)
    return list(ss.samples(members))


def by_key(directory: Path, members: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    return {s["__key__"]: s for s in samples(directory, members)}


def tar_members(path: Path) -> dict[str, bytes]:
    """Member name -> bytes of one shard, read with the standard library only."""
    with tarfile.open(path, mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def raw_members(directory: Path, ext: str) -> dict[str, bytes]:
    """key -> raw bytes of one member over every shard of a set."""
    out = {}
    for url in shards.open_shard_set(directory).urls:
        for name, data in tar_members(Path(url)).items():
            key, _, member = name.partition(".")
            if member == ext:
                assert key not in out, f"{key} appears twice in {directory}"
                out[key] = data
    return out


def rejects(directory: Path) -> list[dict[str, str]]:
    """Rows of every rejects-*.parquet beside a set's shards."""
    rows = []
    for f in sorted(Path(directory).glob("rejects-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def tar_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(directory).glob("*.tar"))}


def rebuild_tar(path: Path, edit: dict[str, bytes], reseal: bool = False) -> None:
    """Rewrites a shard with some members' bytes replaced (member name -> new bytes): damage, as
    a reader sees it. With `reseal` the edited samples get matching checksums and the set its
    index again, as if a writer had written those bytes (e.g. a latent decoded on another device)."""
    members = tar_members(path)
    members.update(edit)
    if reseal:
        table: dict[str, dict[str, str]] = {}
        for name, data in members.items():
            if name != S.CHECKSUMS:
                key, ext = name.split(".", 1)
                table.setdefault(key, {})[ext] = digest(data)
        members[S.CHECKSUMS] = json.dumps(table).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.chmod(0o644)
    path.write_bytes(buf.getvalue())
    if reseal:
        index = shards.open_shard_set(path.parent).index
        shards.write_index(path.parent, index["name"], index["kind"], index["members"], index["identities"], index["meta"])


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@functools.lru_cache(maxsize=None)
def untrained_codec(name: str = "bmshj2018-hyperprior", quality: int = 1, seed: int = 0):
    """A stages.Codec with random weights on the CPU, built once per test session."""
    import torch

    from cdfv.pipeline.codecs import CodecSpec, load_codec
    from cdfv.pipeline.coding import CodecEngine
    from cdfv.pipeline.stages import Codec

    spec = CodecSpec(name, quality)
    model, weights_id = load_codec(spec, untrained=True, seed=seed)
    return Codec(spec, CodecEngine(spec, model, torch.device("cpu")), weights_id, True)


@functools.lru_cache(maxsize=None)
def detector():
    from cdfv.pipeline.detect import RetinaFaceOnnx

    return RetinaFaceOnnx(providers=["CPUExecutionProvider"])


def payload_of(bits: bytes) -> int:
    strings, _ = S.unpack_bitstream(bits)
    return S.payload_bytes(strings)
