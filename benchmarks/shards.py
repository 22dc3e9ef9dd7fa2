"""Reading throughput of the shard reader with and without its integrity checks (header scan
against the index, per-member CRC32), on a latent set and an image set it writes first.

The checks' cost must stay under 5 % of reading throughput (issue 9). Each configuration reads
the whole set `--repeats` times (the file cache warm after the first, as in a training epoch)
and the best pass counts.

    python benchmarks/shards.py                                   # 2,000 latents (M=192, 14x14), 500 faces
    python benchmarks/shards.py --latents 20000 --faces 2000 --repeats 5
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cdfv import shards
from cdfv.shards import spec as S


def write_set(root: Path, name: str, kind: str, count: int, per_shard: int, make) -> shards.ShardSet:
    writer = shards.ShardSetWriter(root / name, name)
    for chunk, start in enumerate(range(0, count, per_shard)):
        writer.write(chunk, [make(i) for i in range(start, min(start + per_shard, count))])
    member = S.LATENT if kind == "latent" else S.IMAGE
    shards.write_index(root / name, name, kind, [member, S.LABEL, S.META], ["a"], {})
    return shards.open_shard_set(root / name)


def read_rate(shard_set: shards.ShardSet, member: str, verify: bool, decode: bool, repeats: int) -> float:
    """Best samples/s over `repeats` full passes."""
    best = 0.0
    for _ in range(repeats):
        start, n = time.perf_counter(), 0
        for shard in shard_set.shards:
            for _sample in shards.read_shard(shard, (member, S.LABEL), decode=decode, verify=verify):
                n += 1
        best = max(best, n / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latents", type=int, default=2000)
    parser.add_argument("--faces", type=int, default=500)
    parser.add_argument("--per-shard", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    latent = rng.integers(-8, 9, (192, 14, 14)).astype(np.int16)
    face = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sets = {
            "latents (M=192, 14x14, int16)": (write_set(root, "lat", "latent", args.latents, args.per_shard,
                                                        lambda i: {"__key__": f"a__{i:07d}", S.LATENT: latent, S.LABEL: 0, S.META: {"i": i}}), S.LATENT),
            "faces (224x224 PNG)": (write_set(root, "img", "image", args.faces, args.per_shard,
                                              lambda i: {"__key__": f"a__{i:07d}", S.IMAGE: face, S.LABEL: 0, S.META: {"i": i}}), S.IMAGE),
        }
        print(f"| set | decode | unchecked samples/s | checked samples/s | cost of the checks |")
        print("|---|---|---|---|---|")
        for title, (shard_set, member) in sets.items():
            for decode in (False, True):
                plain = read_rate(shard_set, member, False, decode, args.repeats)
                checked = read_rate(shard_set, member, True, decode, args.repeats)
                print(f"| {title} | {'yes' if decode else 'no (bytes)'} | {plain:,.0f} | {checked:,.0f} | {100 * (plain - checked) / plain:+.1f} % |")


if __name__ == "__main__":
    main()
