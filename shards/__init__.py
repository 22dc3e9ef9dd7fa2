"""The cdfv shard format: what the pipeline writes and the trainer and evaluator read."""
from .reader import (
    DAMAGE_POLICIES,
    Damage,
    DamagedShard,
    Lost,
    Shard,
    ShardSet,
    ShardSetError,
    decode_member,
    iter_samples,
    open_shard_set,
    read_shard,
    resolve,
)
from .spec import FORMAT, VERSION, bits_per_pixel, make_key, pack_bitstream, unpack_bitstream
from .writer import ShardSetWriter, atomic_write_bytes, part_tags, remove_stale_temporaries, run_digest, write_index

__all__ = [
    "DAMAGE_POLICIES",
    "FORMAT",
    "VERSION",
    "Damage",
    "DamagedShard",
    "Lost",
    "Shard",
    "ShardSet",
    "ShardSetError",
    "ShardSetWriter",
    "atomic_write_bytes",
    "bits_per_pixel",
    "decode_member",
    "iter_samples",
    "make_key",
    "open_shard_set",
    "pack_bitstream",
    "part_tags",
    "read_shard",
    "remove_stale_temporaries",
    "resolve",
    "run_digest",
    "unpack_bitstream",
    "write_index",
]
