"""`python -m cdfv.pipeline ...` is `cdfv-prep ...`."""
from .cli import main

main()
