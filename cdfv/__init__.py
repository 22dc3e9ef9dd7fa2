"""cdfv: compressed-domain face verification.

The import namespace over the project's four parts, each a folder at the repository root:
`cdfv.pipeline` (pipeline/: datasets to shards), `cdfv.trainer` (trainer/: face models and
codecs), `cdfv.eval` (eval/: verification, metrics, reports) and `cdfv.shards` (shards/: the
shard format all three read and write).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cdfv")
except PackageNotFoundError:  # a source tree used without installing
    __version__ = "unknown"
