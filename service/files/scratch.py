"""Temporary files that belong to a live process, so that leftovers can be told apart.

Each file is held under an exclusive advisory lock (`flock`) for as long as its process works
on it; the kernel drops the lock when the process dies, even by `kill -9`. A sweep removes
every file it can lock: the leftover of a dead process, never an upload another process (a
replica on the same data folder) is still receiving. A file younger than `MIN_AGE_SECONDS` is
kept, as it may have been created an instant before its lock was taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from pathlib import Path
from typing import IO

MIN_AGE_SECONDS = 2.0


class HeldFile:
    """A new file under `directory`, locked until `release()`; `open()` writes it."""

    def __init__(self, directory: Path, prefix: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{prefix}-{uuid.uuid4().hex}"
        self._lock: int | None = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDONLY, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def open(self) -> IO[bytes]:
        """Open the file for writing; closing the writer keeps the lock."""
        return self.path.open("wb")

    def release(self) -> None:
        """Let go of the file (it was moved into place, or is being removed)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def remove_unheld(directory: Path) -> int:
    """Remove the files of `directory` that no live process holds; return how many."""
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.iterdir():
        try:
            if time.time() - path.stat().st_mtime < MIN_AGE_SECONDS:
                continue
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError):
            continue  # removed meanwhile (another replica's sweep), or not ours
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process is writing it
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        finally:
            os.close(fd)
    return removed
