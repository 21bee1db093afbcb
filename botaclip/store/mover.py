"""Finishing partition files in the background while the writer encodes the next one.

A partition file's last step is an fsync (its bytes reach the disk before the rename, so not even a power cut
leaves a torn file) and the rename. When the writer writes many partitions in one call (`flush`, a `write` that
overflows its buffers, `close`), a single background thread does those steps for one file while the caller's
thread encodes the next; the call returns only once every file is in place, so what callers see does not change
(`finish_partition`, one file, still does it all before returning).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path

from botaclip.errors import StoreWriteError
from botaclip.store.layout import move_into_place


class BackgroundMover:
    """Moves temporary partition files into place in the order submitted, one at a time, in a background thread.

    After a move fails, the files submitted after it are dropped (their temporary files removed, never renamed),
    so what lands is always a prefix of what was submitted."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="botaclip-mover")
        self._jobs: list[tuple[Future, Callable[[], None]]] = []
        self._failed = threading.Event()

    def submit(self, tmp: Path, final: Path, label: str, landed: Callable[[], None]) -> None:
        """Queue `tmp` (a complete temporary file) to replace `final`; `landed` is called by `finish`, in the
        caller's thread, once it is in place."""
        self._jobs.append((self._pool.submit(self._move, tmp, final, label), landed))

    def _move(self, tmp: Path, final: Path, label: str) -> bool:
        if self._failed.is_set():
            tmp.unlink(missing_ok=True)
            return False
        try:
            move_into_place(tmp, final, self.root, label, sync_dir=False)  # the writer syncs folders at commit
        except BaseException:
            self._failed.set()
            raise
        return True

    def finish(self, raise_errors: bool = True) -> None:
        """Wait until every submitted file is in place or dropped (no move happens after this returns, even when
        it is interrupted), call `landed` for each file in place, and raise the first move's StoreWriteError."""
        try:
            wait_all([f for f, _ in self._jobs])
        except BaseException:
            self._failed.set()  # interrupted: drop what has not moved yet
            raise
        finally:
            self._pool.shutdown(wait=True)
            first = None
            for fut, landed in self._jobs:
                exc = fut.exception()
                if exc is None and fut.result():
                    landed()
                elif exc is not None and first is None:
                    first = exc
            self._jobs.clear()
        if first is not None and raise_errors:
            if isinstance(first, StoreWriteError):
                raise first
            raise StoreWriteError(str(first)) from first
