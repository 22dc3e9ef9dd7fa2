"""Dataset readers: LFW, VGGFace2 and folder-per-identity layouts as ordered, keyed items.

Every item gets a key without dots (shards.make_key) and a label that is the identity's position
in the sorted identity list, so labels agree across runs, machines and processes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from cdfv.shards import make_key

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
LFW_NAME = re.compile(r"^(?P<name>.+)_(?P<num>\d{4})$")
DATASETS = ("lfw", "vggface2", "folder", "unlabelled")


class SourceError(ValueError):
    """A dataset root or list file that cannot be read as the layout asked for."""


@dataclass(frozen=True)
class Item:
    key: str
    source: str  # path relative to the dataset root, '/'-separated
    identity: str | None  # None in an unlabelled dataset
    label: int | None


@dataclass
class Dataset:
    name: str
    root: Path
    items: list[Item]
    identities: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): listed, not dropped

    def path(self, item: Item) -> Path:
        return self.root / item.source


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise SourceError(f"dataset root {root} does not exist")
    if not root.is_dir():
        raise SourceError(f"dataset root {root} is not a directory")
    return root


def _build(name: str, root: Path, entries: list[tuple[str, str, str]], skipped: list[tuple[str, str]]) -> Dataset:
    """entries: (identity, stem, relative path). Sorts, labels and checks key uniqueness."""
    if not entries:
        raise SourceError(f"{root}: no images found for the {name} layout")
    identities = sorted({e[0] for e in entries})
    label = {ident: i for i, ident in enumerate(identities)}
    items: list[Item] = []
    seen: dict[str, str] = {}
    for identity, stem, rel in sorted(entries):
        key = make_key(identity, stem)
        if key in seen:
            raise SourceError(f"{root}: {rel} and {seen[key]} map to the same key {key!r}; rename one")
        seen[key] = rel
        items.append(Item(key, rel, identity, label[identity]))
    return Dataset(name, root, items, identities, skipped)


def _walk_identity_folders(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    entries, skipped = [], []
    for f in sorted(p for p in root.iterdir() if not p.is_dir()):
        skipped.append((f.name, "file at the dataset root, outside any identity folder"))
    for ident_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(ident_dir.iterdir()):
            rel = f"{ident_dir.name}/{f.name}"
            if f.is_dir():
                skipped.append((rel, "nested folder ignored"))
            elif f.suffix.lower() in IMAGE_SUFFIXES:
                entries.append((ident_dir.name, f.stem, rel))
            else:
                skipped.append((rel, f"not an image suffix ({f.suffix or 'none'})"))
    return entries, skipped


def folder(root: Path) -> Dataset:
    """<root>/<identity>/<any image file>."""
    root = _check_root(root)
    entries, skipped = _walk_identity_folders(root)
    return _build("folder", root, entries, skipped)


def lfw(root: Path) -> Dataset:
    """<root>/<Name>/<Name>_<NNNN>.jpg; files not following the pattern are listed as skipped."""
    root = _check_root(root)
    walked, skipped = _walk_identity_folders(root)
    entries = []
    for identity, stem, rel in walked:
        m = LFW_NAME.match(stem)
        if m is None or m.group("name") != identity:
            skipped.append((rel, f"not an LFW name (<{identity}>_<NNNN>)"))
        else:
            entries.append((identity, stem, rel))
    return _build("lfw", root, entries, skipped)


def vggface2(root: Path, list_file: Path | None = None) -> Dataset:
    """<root>/<n000002>/<0001_01>.jpg. With a list file (train_list.txt / test_list.txt, one
    relative path a line) exactly its images are used, in its identity set; a listed file that is
    absent is listed as skipped."""
    root = _check_root(root)
    if list_file is None:
        entries, skipped = _walk_identity_folders(root)
        return _build("vggface2", root, entries, skipped)
    list_file = Path(list_file)
    try:
        lines = list_file.read_text().splitlines()
    except OSError as e:
        raise SourceError(f"{list_file}: cannot read list file: {e.strerror or e}") from e
    entries, skipped = [], []
    for n, line in enumerate(lines, 1):
        rel = line.strip()
        if not rel:
            continue
        parts = rel.split("/")
        if len(parts) != 2 or not parts[1]:
            raise SourceError(f"{list_file}:{n}: expected <identity>/<image>, got {rel!r}")
        if (root / rel).is_file():
            entries.append((parts[0], Path(parts[1]).stem, rel))
        else:
            skipped.append((rel, f"listed in {list_file.name}:{n} but missing"))
    return _build("vggface2", root, entries, skipped)


def unlabelled(root: Path) -> Dataset:
    """Every picture under <root> (any depth), without identities: a folder of faces for
    distillation, whose targets are a teacher's embeddings, not labels. Keys are the relative path
    without its suffix, folders joined by '__'."""
    root = _check_root(root)
    items, skipped, seen = [], [], {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((rel, f"not an image suffix ({f.suffix or 'none'})"))
            continue
        key = make_key(*f.relative_to(root).with_suffix("").parts)
        if key in seen:
            raise SourceError(f"{root}: {rel} and {seen[key]} map to the same key {key!r}; rename one")
        seen[key] = rel
        items.append(Item(key, rel, None, None))
    if not items:
        raise SourceError(f"{root}: no images found")
    return Dataset("unlabelled", root, items, [], skipped)


def open_dataset(layout: str, root: Path, list_file: Path | None = None) -> Dataset:
    if layout == "lfw":
        return lfw(root)
    if layout == "vggface2":
        return vggface2(root, list_file)
    if layout == "folder":
        return folder(root)
    if layout == "unlabelled":
        return unlabelled(root)
    raise SourceError(f"unknown layout {layout!r}; choose one of {', '.join(DATASETS)}")


def split_part(items: list, part: int, parts: int) -> list:
    """The deterministic share of part `part` of `parts`: a contiguous block, so shards of one part
    hold neighbouring identities and parts differ in size by at most one item."""
    if not 0 <= part < parts:
        raise ValueError(f"part {part} outside 0..{parts - 1}")
    n = len(items)
    return items[part * n // parts : (part + 1) * n // parts]
