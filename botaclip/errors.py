"""The errors users see.

Library code raises :class:`BotaclipError` (or one of its subclasses) for a problem it can explain: what is
wrong, with which file or value, what to do. The CLI prints it as one line and exits non-zero, without a
traceback. The subclasses also derive from the matching built-in exception, so Python callers can catch what
they expect (``except ValueError``, ``except FileNotFoundError``, ``except OSError`` for a damaged store or a full
disk) and tests can assert types, not message text.

A message names the *parameters* it is about with :func:`param`: a Python caller reads the parameter's name
(``folds``), the CLI shows the option that sets it (``--folds``), so one message serves both::

    raise InvalidInputError(f"{param('folds')} must be at least 2, got {folds}")
"""

from __future__ import annotations

import errno
import os
import re
from typing import Callable

_MARK = "\x1f"
_PARAM = re.compile(f"{_MARK}([A-Za-z_][A-Za-z0-9_]*){_MARK}")


def param(name: str) -> str:
    """A parameter's name, marked inside an error message so each interface can spell it its own way."""
    return f"{_MARK}{name}{_MARK}"


def option_spelling(name: str) -> str:
    """The default CLI spelling of a Python parameter: ``block_res`` -> ``--block-res``."""
    return "--" + name.replace("_", "-")


class BotaclipError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    exit_code = 2

    def render(self, spell: Callable[[str], str] | None = None) -> str:
        """The message on one line, each marked parameter spelt by ``spell`` (default: its Python name)."""
        text = super().__str__()
        text = _PARAM.sub(lambda m: spell(m.group(1)) if spell else m.group(1), text)
        # One line, always: messages may embed values that contain newlines.
        return " ".join(text.split())

    def __str__(self) -> str:
        return self.render()

    @property
    def params(self) -> list[str]:
        """The parameters the message names."""
        return _PARAM.findall(super().__str__())


class InvalidInputError(BotaclipError, ValueError):
    """A value given to botaclip is wrong: out of range, of the wrong type, an unknown name, a bad format."""


class MissingFileError(BotaclipError, FileNotFoundError):
    """A file or folder that should exist does not."""


class StoreBusyError(BotaclipError, BlockingIOError):
    """Another process holds the store's write lock."""


class MissingDependencyError(BotaclipError, ImportError):
    """An optional dependency (an extra such as ``botaclip[ray]``) is not installed."""


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
