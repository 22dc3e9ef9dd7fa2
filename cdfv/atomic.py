"""Outputs that are a whole folder (cdfv-eval's report): built in a temporary sibling and swapped in
by rename, so an error, a full disk or a kill leaves the previous folder as it was, or no folder:
never new tables beside old plots, a truncated file or an empty one.

The swap is two renames (the old folder aside, the new one in place); a kill between them leaves
no folder and the previous one aside, and the next write puts it back before it starts. Leftovers
of a dead writer (its pid is in their names) are removed by the next write to that folder.

Several files that belong together (cdfv-eval run's scores files, which its report reads) are
replaced as one by `atomic_files`: all written first, then renamed in with the earlier ones kept
aside until the work that reads them has succeeded, and put back if it fails.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are from an earlier call that failed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _leftovers(folder: Path, name: str = r".+") -> Iterator[tuple[Path, str, str]]:
    """A dead writer's temporaries in `folder` for the file or folder `name` (a pattern): (entry,
    'tmp' or 'old', the name it stands for)."""
    pattern = re.compile(rf"^\.({name})\.(tmp|old)-(\d+)-[0-9a-f]+$")
    for entry in sorted(folder.iterdir()):
        match = pattern.match(entry.name)
        if match and not _alive(int(match.group(3))):
            yield entry, match.group(2), match.group(1)


def _recover(out: Path) -> None:
    """Removes a dead writer's temporary folders beside `out`, and puts back the previous folder a
    kill left aside between the two renames of a swap."""
    for entry, kind, _ in _leftovers(out.parent, re.escape(out.name)):
        if kind == "old" and not out.exists():
            os.rename(entry, out)
        else:
            shutil.rmtree(entry)


def _foreign(out: Path, owns: Callable[[str], bool]) -> list[Path]:
    """The files in `out` the writer does not own, to keep; a folder in it stops the write, as
    moving a tree in and out of the swap could lose it."""
    if not out.exists():
        return []
    if not out.is_dir():
        raise NotADirectoryError(20, "not a folder", str(out))
    kept = []
    for entry in sorted(out.iterdir()):
        if owns(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            raise IsADirectoryError(21, "a folder inside an output folder that is replaced as a whole; give it a "
                                        "folder of its own", str(entry))
        kept.append(entry)
    return kept


def _carry(entry: Path, into: Path) -> None:
    """A file of the old folder into the new one: a hard link (no copy, same bytes), or a copy
    where links are not allowed; symbolic links as links."""
    target = into / entry.name
    if entry.is_symlink():
        os.symlink(os.readlink(entry), target)
        return
    try:
        os.link(entry, target)
    except OSError:
        shutil.copy2(entry, target)


def _fsync(path: Path) -> None:
    """Forces a file, or on POSIX a folder's entries, to disk before a rename publishes it."""
    if path.is_dir() and os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_directory(out: Path, owns: Callable[[str], bool]) -> Iterator[Path]:
    """Yields an empty folder beside `out` to write into; when the block ends, its files (synced to
    disk) replace `out` as a whole. Files already in `out` that `owns` does not claim by name (a
    reproduction's table7.csv beside its report) are carried into the new folder. On any error the
    new folder is removed and `out` is left as it was; an OSError on a file of the new folder names
    that file as it would have been in `out`."""
    out = Path(out)
    if out.is_symlink():
        out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    _recover(out)
    keep = _foreign(out, owns)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = out.parent / f".{out.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
        for entry in keep:
            _carry(entry, tmp)
        for path in tmp.iterdir():
            if path.is_file() and not path.is_symlink():
                _fsync(path)
        _fsync(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{token}"
            os.rename(out, old)
            try:
                os.rename(tmp, out)
            except BaseException:
                os.rename(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)  # what is left goes with the next write's _recover
        else:
            os.rename(tmp, out)
        _fsync(out.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.filename and Path(e.filename).parent == tmp:
            raise OSError(e.errno, f"{e.strerror or e}; {out} is left as it was", str(out / Path(e.filename).name)) from e
        raise


def _recover_files(folder: Path) -> None:
    """Puts back the earlier files a killed atomic_files kept aside (its work did not finish, so
    its new files are not a whole) and removes its unfinished temporary files."""
    for entry, kind, name in _leftovers(folder):
        if entry.is_dir() and not entry.is_symlink():
            continue  # an atomic_directory's, beside its folder: that folder's next write clears it
        if kind == "old":
            os.replace(entry, folder / name)
        else:
            entry.unlink()


def _taken_back(e: BaseException, folder: Path, names: list[str]) -> BaseException:
    """The error with what atomic_files left, so a user knows what is on disk."""
    said = f"{folder} is left as it was (this run's {', '.join(names)} not kept)"
    if isinstance(e, OSError):
        return OSError(e.errno, f"{e.strerror or e}; {said}", e.filename)
    if isinstance(e, ValueError):
        return ValueError(f"{e}; {said}")
    return e


@contextmanager
def atomic_files(folder: Path, contents: dict[str, bytes]) -> Iterator[list[Path]]:
    """Puts the files `contents` names into `folder` as one change, for the block, and yields their
    paths: each is written to a temporary sibling and synced, then the earlier files of those names
    are set aside and the new ones renamed in; the block runs with them in place (the report that
    reads them). If a write, a rename or the block fails, every file of `folder` is put back as it
    was (new ones removed, earlier ones restored) and an OSError or ValueError says so; when the
    block ends well the earlier files are deleted. A kill leaves the earlier files aside: the next
    call puts them back before it starts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _recover_files(folder)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary = {name: folder / f".{name}.tmp-{token}" for name in contents}
    aside: dict[str, Path] = {}  # the earlier files, kept until the block has ended well
    placed: list[str] = []  # the new files renamed in
    try:
        for name, data in contents.items():
            try:
                with open(temporary[name], "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:  # named as the user knows the file, not by its temporary
                raise OSError(e.errno, e.strerror, str(folder / name)) from e
        for name in contents:
            if (folder / name).exists():
                os.rename(folder / name, folder / f".{name}.old-{token}")
                aside[name] = folder / f".{name}.old-{token}"
            os.rename(temporary[name], folder / name)
            placed.append(name)
        _fsync(folder)
        yield [folder / name for name in contents]
    except BaseException as e:
        for name in placed:
            (folder / name).unlink()
        for name, path in aside.items():
            os.replace(path, folder / name)
        for path in temporary.values():
            path.unlink(missing_ok=True)
        error = _taken_back(e, folder, list(contents))
        if error is e:
            raise
        raise error from e
    for path in aside.values():
        path.unlink()
