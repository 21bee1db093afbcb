"""Writing partition files in the background while the writer prepares the next one.

A partition file's last step is an fsync (its bytes reach the disk before the rename, so not even a power cut
leaves a torn file) and the rename. The writer hands over each partition's table (`submit_table`): one
background thread encodes it into its temporary file, a second one flushes the file before it to disk and
renames it, so encoding partition k, flushing partition k-1 and the caller's work on partition k+1 overlap. Two
ways the writer uses it:

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
    """Writes partition files (one background thread) and moves them into place (a second one), in the order
    submitted.

    After a job fails (its encoding or its move), the files submitted after it are dropped (never written, or
    their temporary files removed, never renamed), so what lands is always a prefix of what was submitted."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="botaclip-mover")
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="botaclip-encoder")
        self._jobs: list[tuple[Future, Callable[[], None], Path]] = []
        self._submitted = 0
        # The first job that failed: the jobs after it are dropped, the ones before it still land (the encoding
        # thread runs ahead of the moves, so a failed encoding must not drop the moves of the files before it).
        self._first_failure: int | None = None
        self._stopped = threading.Event()  # interrupted: drop everything not yet done
        self._lock = threading.Lock()

    def submit_table(self, write: Callable[[], Path], final: Path, label: str, landed: Callable[[], None]) -> None:
        """Queue `write` (writes a complete temporary file and returns its path; run in the encoding thread, in
        the order submitted), then that file's move over `final`; `landed` is called by `settle` or `finish`,
        in the caller's thread, once it is in place. A failed `write` fails this job like a failed move, and
        nothing submitted after it is written or moved."""
        job = self._next()
        written = self._encoder.submit(self._write, job, write)
        self._jobs.append((self._pool.submit(self._move_written, job, written, final, label), landed, final))

    def _next(self) -> int:
        self._submitted += 1
        return self._submitted

    def _dropped(self, job: int) -> bool:
        with self._lock:
            return self._stopped.is_set() or (self._first_failure is not None and self._first_failure < job)

    def _failed(self, job: int) -> None:
        with self._lock:
            if self._first_failure is None or job < self._first_failure:
                self._first_failure = job

    def _write(self, job: int, write: Callable[[], Path]) -> Path | None:
        if self._dropped(job):
            return None
        try:
            return write()
        except BaseException:
            self._failed(job)
            raise

    def _move_written(self, job: int, written: Future, final: Path, label: str) -> bool:
        tmp = written.result()  # the encoding's error, if any, is this job's
        return False if tmp is None else self._move(job, tmp, final, label)

    def pending(self) -> set[Path]:
        """The final paths of files submitted and not yet reported landed (or dropped) by `settle`/`finish`."""
        return {final for _, _, final in self._jobs}

    def _move(self, job: int, tmp: Path, final: Path, label: str) -> bool:
        if self._dropped(job):
            tmp.unlink(missing_ok=True)
            return False
        try:
            move_into_place(tmp, final, self.root, label, sync_dir=False)  # the writer syncs folders at commit
        except BaseException:
            self._failed(job)
            raise
        return True

    def settle(self, keep: int = 0) -> None:
        """Wait until at most `keep` submitted files (the newest) are still to move; call `landed` for each file
        in place, oldest first, and raise the first failed move's StoreWriteError (the files after it are
        dropped). Interrupted, nothing moves after the one under way."""
        done = self._jobs[:max(0, len(self._jobs) - keep)]
        self._wait([f for f, _, _ in done])
        _raise_first(self._report(done))

    def _wait(self, futures: list[Future]) -> None:
        """Wait for ``futures``; interrupted, nothing not yet moved moves at all."""
        try:
            wait_all(futures)
        except BaseException:
            self._stopped.set()
            raise

    def throttle(self, keep: int) -> None:
        """Wait until at most `keep` submitted files are still to move, without reporting them: a failure
        stays for `settle` or `finish`, and what is submitted after it is dropped (the batch lands as a prefix)."""
        waiting = [f for f, _, _ in self._jobs if not f.done()]
        if len(waiting) > keep:
            self._wait(waiting[:len(waiting) - keep])

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
            self._wait([f for f, _, _ in self._jobs])
        finally:
            self._encoder.shutdown(wait=True)
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
