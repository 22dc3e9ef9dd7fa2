"""Reading torch files that users hand to cdfv, without running code from them.

`torch.load(weights_only=True)` refuses any pickled global that is not a tensor, a number or a
container; this wrapper turns its long refusal, and the errors of foreign or damaged files, into
one line that names the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_torch_file(path: Path, what: str) -> Any:
    """The file's contents, loaded on the CPU with weights_only=True; `what` names the kind of
    file in the error (e.g. "cdfv-model file")."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a {what}") from None
    except Exception as e:  # a pickle that would run code, a foreign or damaged file: torch raises many types
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
        raise ValueError(f"{path}: not a {what} that loads safely ({type(e).__name__}: {reason})") from e
