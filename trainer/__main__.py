"""`python -m cdfv.trainer ...` is `cdfv-train ...` (and what torchrun runs: `torchrun -m cdfv.trainer`)."""
from .cli import main

main()
