"""The one exception type users see.

Library code raises :class:`BotaclipError` for bad input it can explain (what is wrong, with which file or
value, what to do). The CLI prints its message as one line and exits non-zero, without a traceback.

Subclasses also derive from the matching built-in, so callers may catch either (``except OSError`` still sees a
damaged store or a full disk).
"""

import errno
import os


class BotaclipError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def __str__(self) -> str:
        # One line, always: messages may embed values that contain newlines.
        return " ".join(super().__str__().split())


class StoreDamagedError(BotaclipError, OSError):
    """A store file is missing, truncated or unreadable; the message names it and says how to repair."""


class StoreWriteError(BotaclipError, OSError):
    """Writing into a store failed (disk full, read-only, permissions); the store is left as it was."""


class Interrupted(BotaclipError):
    """The user pressed Ctrl-C; what was committed is kept. The CLI prints the message as is and exits 130."""

    exit_code = 130


def root_cause(exc: BaseException) -> str:
    """The message of the innermost chained exception: GDAL's own reason hides behind rasterio's
    "Read failed. See previous exception for details."."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.errno:  # "No space left on device", not pyarrow's wrapping of it
        return os.strerror(exc.errno)
    text = str(exc).strip()
    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES):  # said inside another library's message (DuckDB's)
        if os.strerror(code) in text:
            return os.strerror(code)
    return text.splitlines()[0] if text else type(exc).__name__


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, whether Python raised it or DuckDB turned it into ``RuntimeError('Query interrupted')``."""
    return isinstance(exc, KeyboardInterrupt) or (isinstance(exc, RuntimeError) and "interrupted" in str(exc).lower())
