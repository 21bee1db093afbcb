"""Progress reporting: one small interface for every job, and the ``botaclip`` logger for notes.

A job takes a :class:`Progress` reporter and says what it does through it:

- ``progress.step(message)``: one line saying what happens now (an epoch, a phase of the job);
- ``progress.warn(message)``: a warning that is not an error (a random-init backbone, a skipped figure);
- ``with progress.bar(total, unit, desc) as bar: bar.update(n)``: a counter over a known amount of work.

:class:`Silent` says nothing (its warnings still go to ``logging.getLogger("botaclip")``, which has no handler
unless the application configures one); :class:`Echo` writes lines through a callable (default: stderr), with a
tqdm bar or a throttled text line for the counters. The CLI passes an :class:`Echo`; Python callers pass one,
:class:`Silent`, or their own object with these three methods. :func:`as_progress` turns the older forms (a bool,
an ``echo`` callable, None) into a reporter.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

logger = logging.getLogger("botaclip")
logger.addHandler(logging.NullHandler())  # a library: the application decides where records go


class Bar(Protocol):
    """A counter over a known amount of work (a context manager; closed on exit)."""

    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Bar: ...

    def __exit__(self, *exc) -> None: ...


@runtime_checkable
class Progress(Protocol):
    """What a job reports while it runs."""

    def step(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def bar(self, total: int, unit: str = "it", desc: str = "") -> Bar: ...


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Silent:
    """Reports nothing; warnings go to the ``botaclip`` logger only."""

    def step(self, message: str) -> None:
        logger.debug(message)

    def warn(self, message: str) -> None:
        logger.warning(message)

    def bar(self, total: int, unit: str = "it", desc: str = "") -> Bar:
        return _NullBar()


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


class _LineBar(_NullBar):
    """A counter shown as a line ``desc: done/total unit`` at most every ``every_s`` seconds, and at the end."""

    def __init__(self, echo: Callable[[str], None], total: int, unit: str, desc: str, every_s: float) -> None:
        self.echo, self.total, self.unit, self.desc, self.every_s = echo, int(total), unit, desc, every_s
        # -inf, not 0: perf_counter() counts from an arbitrary point (boot, here), so 0 would hide the first line
        # on a machine up for less than every_s.
        self.done, self.last = 0, -math.inf

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        now = time.perf_counter()
        if self.done >= self.total or now - self.last > self.every_s:
            self.last = now
            self.echo(f"{self.desc + ': ' if self.desc else ''}{self.done}/{self.total} {self.unit}")


class Echo:
    """Reports through ``echo`` (default: a line on stderr). Counters are a tqdm bar on stderr with ``tqdm=True``,
    else a text line at most every ``every_s`` seconds (for logs, and for callers that filter lines)."""

    def __init__(self, echo: Callable[[str], None] | None = None, *, tqdm: bool = False, every_s: float = 10.0) -> None:
        self.echo = echo or _to_stderr
        self.tqdm = tqdm
        self.every_s = every_s

    def step(self, message: str) -> None:
        self.echo(message)

    def warn(self, message: str) -> None:
        self.echo(f"warning: {message}")

    def bar(self, total: int, unit: str = "it", desc: str = "") -> Bar:
        if self.tqdm:
            from tqdm import tqdm

            return tqdm(total=total, unit=unit, desc=desc or None, file=sys.stderr, dynamic_ncols=True,
                        smoothing=0.1)
        return _LineBar(self.echo, total, unit, desc, self.every_s)


def as_progress(progress: Progress | bool | Callable[[str], None] | None, echo: Callable[[str], None] | None = None
                ) -> Progress:
    """A reporter from what a caller passed: a reporter as is; True: lines through ``echo`` (default stderr) with
    tqdm counters; a callable: lines through it; False or None: :class:`Silent` (None with an ``echo``: lines)."""
    if isinstance(progress, Progress):
        return progress
    if progress is True:
        return Echo(echo, tqdm=True)
    if callable(progress):
        return Echo(progress)
    if progress is None and echo is not None:
        return Echo(echo)
    return Silent()


def counter(progress: Progress, unit: str, desc: str = "") -> Callable[[int, int], None]:
    """A ``(done, total)`` callback (the form of :func:`botaclip.pipeline.feature_cache.cache_features`) feeding
    a bar of ``progress``, opened on the first call and closed when done reaches total."""
    state: dict = {"bar": None, "done": 0}

    def report(done: int, total: int) -> None:
        if state["bar"] is None:
            state["bar"] = progress.bar(total, unit, desc)
        state["bar"].update(done - state["done"])
        state["done"] = done
        if done >= total:
            state["bar"].close()

    return report
