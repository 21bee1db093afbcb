"""Writer exclusion for a store: one writer at a time, across processes.

An advisory `flock` on STORE/.writer.lock, whose content says who holds it (PID, host, since). The kernel drops the
lock when the holder dies (even by SIGKILL), so a stale lock of a dead process is taken over without any cleanup.
Readers never take this lock.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path

from botaclip.errors import StoreBusyError, StoreWriteError

LOCK_NAME = ".writer.lock"


class WriterLock:
    """Exclusive writer lock of one store directory; use as a context manager or acquire()/release()."""

    def __init__(self, store_dir: str | os.PathLike) -> None:
        self.store_dir = Path(store_dir)
        self.path = self.store_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict:
        """Who last wrote the lock file ({} if unknown)."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "WriterLock":
        """Take the lock now or raise :class:`StoreBusyError` naming the process that holds it (no waiting);
        a :class:`StoreWriteError` when the lock file cannot be created (a read-only store)."""
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise StoreWriteError(f"{self.path} is a directory, not the store's lock file; remove it (rmdir) and "
                                  "retry") from None
        except OSError as exc:
            raise StoreWriteError(f"cannot write to store {self.store_dir}: {exc.strerror} ({self.path}); writes "
                                  "need a writable store directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            raise StoreBusyError(
                f"store {self.store_dir} is being written by PID {h.get('pid', '?')} on {h.get('host', '?')} "
                f"since {h.get('since', '?')}; wait for that job to finish (or stop it) and retry") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:  # who holds the lock is only a courtesy for the message above (a full disk may refuse it)
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WriterLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
