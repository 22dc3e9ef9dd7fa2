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
            raise ValueError(f"{path}: not a {what}: {foreign(path) or _first_line(e)}") from None
        raise ValueError(f"{path}: not a {what} that loads safely: it asks for {refused.group(1)}, which is not a tensor, "
                         f"a number or a container, and cdfv never runs code from a file") from None
    except Exception:  # a foreign or damaged file: torch raises many types, whose words (IndexError: pop from empty list) help no user
        said = foreign(path) or "a damaged or truncated PyTorch file (or a zip archive or pickle of another program)"
        raise ValueError(f"{path}: not a {what}: {said}") from None


ZIP_MAGIC, PICKLE_MAGIC = b"PK\x03\x04", b"\x80"  # torch.save writes a zip archive, or (before torch 1.6) a pickle


def foreign(path: Path) -> str | None:
    """What a file is that cannot be a PyTorch file, from its first bytes (empty, text, another kind);
    None for a zip archive or a pickle, the two forms torch.save writes."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "the file is empty"
    if head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return None
    text = b"\0" not in head
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = text and e.start >= len(head) - 3  # only a character cut at the end of the bytes read
    kind = "a text file" if text else "another kind of file"
    return f"{kind}, not a PyTorch file (torch.save writes a zip archive, or before torch 1.6 a pickle)"


# torch words its refusal "Unsupported global: GLOBAL x" or "unsupported GLOBAL x whose module y is blocked"
_REFUSED = re.compile(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)


def _first_line(e: Exception) -> str:
    """The first line of an error that is not torch's advice to turn weights_only off."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else type(e).__name__
