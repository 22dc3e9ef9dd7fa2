"""Reading torch files that users hand to cdfv, without running code from them.

`torch.load(weights_only=True)` refuses any pickled global that is not a tensor, a number or a
container; this wrapper turns its long refusal, and the errors of foreign or damaged files, into
one line that names the file.
"""
from __future__ import annotations

import pickle
import re
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
    except pickle.UnpicklingError as e:  # a pickle that would run code: say what it asked for, not torch's advice
        refused = _REFUSED.search(str(e))
        if refused is None:
            raise ValueError(f"{path}: not a {what} ({_first_line(e)})") from None
        raise ValueError(f"{path}: not a {what} that loads safely: it asks for {refused.group(1)}, which is not a tensor, "
                         f"a number or a container, and cdfv never runs code from a file") from None
    except Exception as e:  # a foreign or damaged file: torch raises many types
        raise ValueError(f"{path}: not a {what} that loads safely ({type(e).__name__}: {_first_line(e)})") from None


# torch words its refusal "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module y is blocked"
_REFUSED = re.compile(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def _first_line(e: Exception) -> str:
    """The first line of an error that is not torch's advice to turn weights_only off."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(e).__name__
