"""`python -m cdfv.eval ...` is `cdfv-eval ...`."""
from .cli import main

main()
