"""Nothing writes into a store except its writer: every command that writes a file or a folder checks its
output path here first.

A store is recognised by its catalog file; the check resolves symlinks, so a link that points into a store is
refused too.
"""

from __future__ import annotations

import os
from pathlib import Path

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError
from botaclip.store.catalog import CATALOG_NAME


def store_containing(path: str | os.PathLike) -> Path | None:
    """The store directory that `path` (a file or folder, existing or not) lies in or is, else None."""
    p = Path(path).expanduser().resolve()  # follows symlinks of every existing part
    for d in (p, *p.parents):
        if (d / CATALOG_NAME).is_file():
            return d
    return None


def check_output_path(path: str | os.PathLike, *, what: str = "output", is_dir: bool = False) -> Path:
    """Refuse an output path inside a store (or the store itself); for a file, its folder must exist and the
    path must not be a folder. Returns the path as given."""
    p = Path(path)
    store = store_containing(p)
    if store is not None:
        raise InvalidInputError(f"{what} {p} is inside store {store}; only the store's writer writes there, so write "
                                "it outside the store directory")
    if not is_dir:
        if p.is_dir():
            raise InvalidInputError(f"{what} {p} is a directory; give a file name")
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise MissingFileError(f"{what} folder {parent} does not exist; create it first")
    else:
        if p.exists() and not p.is_dir():
            raise InvalidInputError(f"{what} {p} is a file, not a folder; choose a folder path")
        parent = next((d for d in (p, *p.parents) if d.exists()), Path("."))
    if parent.is_dir() and not os.access(parent, os.W_OK):  # access(2) also says EROFS for a read-only mount
        raise BotaclipError(f"{what} {p} cannot be written: folder {parent} is read-only or not writable for you")
    return p


def make_output_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """`check_output_path` for a folder, then create it (with its parents); a path blocked by a file or a
    read-only parent is said in one line."""
    p = check_output_path(path, what=what, is_dir=True)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocking = next((d for d in (p, *p.parents) if d.exists() and not d.is_dir()), None)
        why = f"{blocking} is a file, not a folder" if blocking is not None else (exc.strerror or str(exc))
        raise BotaclipError(f"cannot create {what} {p}: {why}") from None
    return p
