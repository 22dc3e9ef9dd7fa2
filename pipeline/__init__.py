"""cdfv-prep: datasets to shards of faces, bitstreams, latents and decoded faces."""
import warnings

# CompressAI scripts modules at import time; newer torch warns about it on every command.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
