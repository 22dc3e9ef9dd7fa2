"""One writer per output directory.

Two runs writing into one directory at once would interleave their files (a second `cdfv-train`
silently replacing the first's model, two logs mixed into one `metrics.jsonl`). Each command
therefore holds an exclusive `flock(2)` on a file in its output directory for as long as it
writes there; a second run is refused at once, naming the first. The kernel releases the lock
when its holder's process ends, however it ends (exit, exception, kill -9, a crash), so a lock is
never left stuck: the lock file that remains is only a note of the last holder and is reused.
flock needs a local file system (or NFSv4 / a Lustre mount with flock enabled); on one that does
not implement it the command stops with the system's error rather than running unlocked.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".cdfv-lock"


class OutputBusy(ValueError):
    """Another run is writing into the output directory (a user's mistake, reported in one line
    by every command like its other bad inputs)."""


@contextmanager
def output_lock(directory: Path, name: str = LOCK_NAME, wait: bool = False) -> Iterator[bool]:
    """Holds `directory/name` exclusively (creating the directory), yielding True; raises
    OutputBusy naming the holder if another process has it, or with `wait` waits for it (for
    short critical sections)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise OutputBusy(f"{directory} is in use by another run ({holder}); two runs writing into one directory would "
                             f"mix their outputs: wait for it to end, or choose another output directory") from None
        note = f"{Path(sys.argv[0]).name} pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
