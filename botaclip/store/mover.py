"""Finishing partition files in the background while the writer encodes the next one.

A partition file's last step is an fsync (its bytes reach the disk before the rename, so not even a power cut
leaves a torn file) and the rename. A single background thread does those steps for one file while the caller's
thread encodes the next. Two ways the writer uses it:

- one call that writes many partitions (`flush`, a `write` that overflows its buffers, `close`) hands them all
  over and returns only once every file is in place (`finish`), so what callers see does not change;
- `finish_partition(parent, wait=False)` hands its file over and returns; the writer waits for it (`settle`)
  in its next call that writes a partition, so at most one finished partition is ever in flight. A process
  killed in that window loses that one partition (its temporary file, never a torn file under its name; the
  catalog only lists files in place) and the next run, which skips the cells on disk, writes it again.
  `finish_partition(parent)` (the default, wait=True) still does it all before returning.
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
        self._jobs: list[tuple[Future, Callable[[], None], Path]] = []
        self._failed = threading.Event()

    def submit(self, tmp: Path, final: Path, label: str, landed: Callable[[], None]) -> None:
        """Queue `tmp` (a complete temporary file) to replace `final`; `landed` is called by `settle` or `finish`,
        in the caller's thread, once it is in place."""
        self._jobs.append((self._pool.submit(self._move, tmp, final, label), landed, final))

    def pending(self) -> set[Path]:
        """The final paths of files submitted and not yet reported landed (or dropped) by `settle`/`finish`."""
        return {final for _, _, final in self._jobs}

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

    def settle(self, keep: int = 0) -> None:
        """Wait until at most `keep` submitted files (the newest) are still to move; call `landed` for each file
        in place, oldest first, and raise the first failed move's StoreWriteError (the files after it are
        dropped). Interrupted, nothing moves after the one under way."""
        done = self._jobs[:max(0, len(self._jobs) - keep)]
        try:
            wait_all([f for f, _, _ in done])
        except BaseException:
            self._failed.set()  # interrupted: drop what has not moved yet
            raise
        _raise_first(self._report(done))

    def _report(self, done: list) -> BaseException | None:
        """Call `landed` for each file of `done` in place, forget them, and return the first failed move's error."""
        first = None
        for fut, landed, _ in done:
            exc = fut.exception()
            if exc is None and fut.result():
                landed()
            elif exc is not None and first is None:
                first = exc
        del self._jobs[:len(done)]
        return first

    def finish(self, raise_errors: bool = True) -> None:
        """Wait until every submitted file is in place or dropped and stop the thread (no move happens after this
        returns, even when it is interrupted), call `landed` for each file in place, and raise the first move's
        StoreWriteError."""
        try:
            wait_all([f for f, _, _ in self._jobs])
        except BaseException:
            self._failed.set()  # interrupted: drop what has not moved yet
            raise
        finally:
            self._pool.shutdown(wait=True)
            first = self._report(list(self._jobs))
        if raise_errors:
            _raise_first(first)


def _raise_first(first: BaseException | None) -> None:
    """Raise a failed move's error as the StoreWriteError callers expect (nothing when no move failed)."""
    if first is None:
        return
    if isinstance(first, StoreWriteError):
        raise first
    raise StoreWriteError(str(first)) from first
