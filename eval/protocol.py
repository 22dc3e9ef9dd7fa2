"""Verification pair lists: LFW View 2 (pairs.txt), LFW View 1 (pairsDevTrain/DevTest.txt) and a
plain CSV of shard keys, parsed strictly so a malformed file fails on its line, never half-read."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cdfv.shards import make_key

NO_FOLD = -1  # View 1 and CSV pairs without a fold column: no 10-fold accuracy


class ProtocolError(ValueError):
    """A pair file that cannot be used; the message names the file, the line and the problem."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")


@dataclass(frozen=True)
class Pair:
    index: int  # position in the file, 0-based: the row id of the scores file
    fold: int  # 0..9 for View 2, NO_FOLD when the file has no folds
    probe: str  # shard key of the first image of the pair (the probe: decoded in the decoded anchor)
    reference: str  # shard key of the second image (always original in the decoded anchor)
    label: bool  # True for a same-person pair
    line: int = 0  # its line in the file (1-based), for errors about a pair found after parsing


def lfw_key(name: str, number: int) -> str:
    """The shard key of LFW image <name>/<name>_<NNNN>.jpg."""
    return make_key(name, f"{name}_{number:04d}")


def _image_number(path: Path, line: int, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ProtocolError(path, line, f"image number {text!r} is not an integer") from None
    if number < 1:
        raise ProtocolError(path, line, f"image number {number} must be 1 or more")
    return number


def _lfw_pair(path: Path, line: int, text: str, same: bool, fold: int, index: int) -> Pair:
    fields = text.split("\t") if "\t" in text else text.split()
    if same:
        if len(fields) != 3:
            raise ProtocolError(path, line, f"same-person pair needs 3 fields (name, n1, n2), got {len(fields)}: {text!r}")
        name, a, b = fields
        return Pair(index, fold, lfw_key(name, _image_number(path, line, a)), lfw_key(name, _image_number(path, line, b)), True, line)
    if len(fields) != 4:
        raise ProtocolError(path, line, f"different-person pair needs 4 fields (name1, n1, name2, n2), got {len(fields)}: {text!r}")
    name_a, a, name_b, b = fields
    if name_a == name_b:
        raise ProtocolError(path, line, f"different-person pair names the same person {name_a!r}")
    return Pair(index, fold, lfw_key(name_a, _image_number(path, line, a)), lfw_key(name_b, _image_number(path, line, b)), False, line)


def _header_ints(path: Path, text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split()]
    except ValueError:
        raise ProtocolError(path, 1, f"header {text!r} is not 'folds<TAB>pairs' (View 2) or a pair count (View 1)") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise ProtocolError(path, 1, f"header {text!r} is not 'folds<TAB>pairs' (View 2) or a pair count (View 1)")
    return values


def _parse_lfw(path: Path, lines: list[str]) -> list[Pair]:
    """View 2: header 'folds<TAB>n', then per fold n same-person and n different-person lines.
    View 1: header 'n', then n same-person and n different-person lines, no folds."""
    header = _header_ints(path, lines[0])
    folds, per_half = (header[0], header[1]) if len(header) == 2 else (1, header[0])
    expected = folds * 2 * per_half
    body = lines[1:]
    while body and not body[-1].strip():
        body.pop()
    blank = next((i for i, text in enumerate(body) if not text.strip()), None)
    if blank is not None:  # before counting: a blank line shifts every later pair
        raise ProtocolError(path, blank + 2, "blank line inside the pair list")
    if len(body) != expected:
        extra = len(body) > expected
        where = expected + 2 if extra else len(body) + 2  # the first extra line, or where the file ends short
        raise ProtocolError(path, where, f"header promises {expected} pairs, the file has {len(body)} pair lines"
                            + (" (first extra line)" if extra else " (file ends here)"))
    pairs = []
    for i, text in enumerate(body):
        fold = i // (2 * per_half) if len(header) == 2 else NO_FOLD
        same = i % (2 * per_half) < per_half
        pairs.append(_lfw_pair(path, i + 2, text.strip(), same, fold, i))
    return _distinct(path, pairs)


def _distinct(path: Path, pairs: list[Pair]) -> list[Pair]:
    """Refuses an image paired with itself (a genuine pair that scores 1 whatever the model) and a
    pair given twice, in either order (it would count twice in every metric), naming the lines."""
    seen: dict[frozenset[str], int] = {}
    for pair in pairs:
        if pair.probe == pair.reference:
            raise ProtocolError(path, pair.line, f"pairs image {pair.probe!r} with itself")
        key = frozenset((pair.probe, pair.reference))
        if key in seen:
            raise ProtocolError(path, pair.line, f"repeats the pair of line {seen[key]} ({pair.probe}, {pair.reference})")
        seen[key] = pair.line
    return pairs


CSV_COLUMNS = ("probe", "reference", "label")
_LABELS = {"1": True, "true": True, "same": True, "0": False, "false": False, "different": False}


def _parse_csv(path: Path, lines: list[str]) -> list[Pair]:
    """CSV with header probe,reference,label[,fold]; keys are shard keys, label 1/0 or true/false."""
    rows = csv.reader(lines)
    header = [h.strip() for h in next(rows)]
    if tuple(header[:3]) != CSV_COLUMNS or header[3:] not in ([], ["fold"]):
        raise ProtocolError(path, 1, f"CSV header must be probe,reference,label[,fold], got {','.join(header)}")
    pairs = []
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ProtocolError(path, line, f"expected {len(header)} columns, got {len(row)}")
        probe, reference, label = (c.strip() for c in row[:3])
        if not probe or not reference:
            raise ProtocolError(path, line, "empty key")
        if label.lower() not in _LABELS:
            raise ProtocolError(path, line, f"label {label!r} is not one of 1/0/true/false/same/different")
        fold = NO_FOLD
        if len(header) == 4:
            try:
                fold = int(row[3])
            except ValueError:
                raise ProtocolError(path, line, f"fold {row[3]!r} is not an integer") from None
            if not 0 <= fold < 2**31:
                raise ProtocolError(path, line, f"fold {fold} must be from 0 to 2^31 - 1")
        pairs.append(Pair(len(pairs), fold, probe, reference, _LABELS[label.lower()], line))
    if not pairs:
        raise ProtocolError(path, 1, "CSV holds no pairs")
    return _distinct(path, pairs)


def pairs_sha256(path: str | Path) -> str:
    """The pairs file's sha256: scores, reports and evaluation folders name the pairs they come from by it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_pairs(path: str | Path) -> list[Pair]:
    """Reads a pair file, recognising its kind by its first line (a CSV header starts 'probe,')."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a spreadsheet's CSV may open with a byte-order mark
    except OSError as e:
        raise ProtocolError(path, 0, f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ProtocolError(path, 0, f"not a text file: {e}") from e
    if not lines or not lines[0].strip():
        raise ProtocolError(path, 1, "empty first line: expected a header")
    if lines[0].lstrip().startswith("probe,"):
        return _parse_csv(path, lines)
    return _parse_lfw(path, lines)


def folds_of(pairs: list[Pair]) -> int:
    """Number of folds, 0 when the pairs carry none."""
    return len({p.fold for p in pairs if p.fold != NO_FOLD})
