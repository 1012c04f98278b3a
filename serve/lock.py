"""One run at a time per output: an exclusive lock beside each file a run writes.

Two runs appending to one output would each skip only the ids it held when
they started, so every record would be written twice. A run therefore locks
`OUTPUT.lock` (and the rejects file's) with flock before it reads or trims
anything, and a second run stops at once, naming the holder's pid, which the
lock file holds. The kernel drops a flock when its process dies, so a
SIGKILLed run never blocks the rerun; the lock file it leaves is reused. A
finished run removes its lock files while still holding them; a run that
opened the old file meanwhile sees it is gone and opens the new one.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import AbstractContextManager
from pathlib import Path

from distill.errors import OutputBusyError
from distill.records import output_error


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class OutputLock(AbstractContextManager):
    """Exclusive locks on every path a run writes; OutputBusyError if a path is taken."""

    def __init__(self, paths: list[Path]):
        unique = {Path(p).resolve(): Path(p) for p in paths}  # a second flock from this process would clash
        self.paths = list(unique.values())
        self._held: list[tuple[Path, int]] = []

    def __enter__(self) -> OutputLock:
        try:
            for path in self.paths:
                self._held.append((lock_path(path), _acquire(path)))
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        for lock, fd in reversed(self._held):
            try:
                lock.unlink(missing_ok=True)  # while still held: see the module doc
            except OSError:
                pass  # a lock file that stays behind is harmless: the next run reuses it
            os.close(fd)
        self._held.clear()


def _acquire(path: Path) -> int:
    """The fd of `path`'s lock file, locked by this process, with our pid written in it."""
    lock = lock_path(path)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise output_error(path, exc, f"create its lock file {lock.name}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise OutputBusyError(
                f"{path}: another distill-score run ({holder}) is writing it; wait for it to finish "
                "or score into another --output") from None
        if _same_file(fd, lock):
            break
        os.close(fd)  # the holder finished and removed this lock file in between: take the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as exc:
        os.close(fd)
        raise output_error(path, exc, f"write its lock file {lock.name}") from exc
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "pid not yet recorded"
