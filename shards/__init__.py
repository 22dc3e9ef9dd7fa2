"""The cdfv shard format: what the pipeline writes and the trainer and evaluator read."""
from .reader import ShardSet, ShardSetError, decode_member, decode_sample, iter_samples, open_shard_set, resolve
from .spec import FORMAT, VERSION, bits_per_pixel, make_key, pack_bitstream, unpack_bitstream
from .writer import ShardSetWriter, atomic_write_bytes, write_index

__all__ = [
    "FORMAT",
    "VERSION",
    "ShardSet",
    "ShardSetError",
    "ShardSetWriter",
    "atomic_write_bytes",
    "bits_per_pixel",
    "decode_member",
    "decode_sample",
    "iter_samples",
    "make_key",
    "open_shard_set",
    "pack_bitstream",
    "resolve",
    "unpack_bitstream",
    "write_index",
]
