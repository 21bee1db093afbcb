"""Damaged stores, named: a partition file that is missing, truncated, empty or garbage is reported in one line
saying which file of which feature set, and what to do (`botaclip store verify STORE --repair`).

Readers check a feature set's partition files against the catalog's list before answering, so a file deleted
behind the store's back stops the read instead of silently shrinking the answer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.errors import StoreDamagedError, root_cause
from botaclip.store.catalog import ERROR_VIEW_PREFIX
from botaclip.store.layout import partition_files, partition_path
from botaclip.store.schema import FOOTER_KEY


def repair_hint(root: Path) -> str:
    return (f"run `botaclip store verify {root} --repair` to set it aside (the rest stays usable), then recompute "
            "it: `botaclip index` fills the missing cells, an import or add-raster is run again")


def damaged_error(root: Path, name: str, path: Path, exc: BaseException | str) -> StoreDamagedError:
    rel = Path(path).relative_to(root) if Path(path).is_relative_to(root) else Path(path)
    why = exc if isinstance(exc, str) else root_cause(exc)
    return StoreDamagedError(f"partition file {rel} of feature set {name!r} is damaged ({why}); {repair_hint(root)}")


def missing_error(root: Path, name: str, parents: list[int]) -> StoreDamagedError:
    rel = partition_path(Path("."), name, parents[0])
    more = f" and {len(parents) - 1} more" if len(parents) > 1 else ""
    return StoreDamagedError(f"partition file {rel}{more} of feature set {name!r} is missing from store {root} "
                             f"(the catalog lists it); {repair_hint(root)}")


def read_partition_table(root: Path, name: str, path: Path, columns: list[str] | None = None) -> pa.Table:
    """A partition file's rows (the `columns` given, default all), or a StoreDamagedError naming it."""
    try:
        # ParquetFile, not read_table: one known file needs no dataset machinery, and read_table's first call
        # imports pyarrow.dataset and pandas (a second on a loaded machine, for a one-cell lookup).
        with pq.ParquetFile(path) as f:
            return f.read(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise damaged_error(root, name, path, exc) from None


def read_footer(root: Path, name: str, path: Path) -> dict:
    """The botaclip footer metadata of a partition file ({} if absent), or a StoreDamagedError naming it."""
    try:
        raw = (pq.read_metadata(path).metadata or {}).get(FOOTER_KEY)
        return json.loads(raw) if raw else {}
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise damaged_error(root, name, path, exc) from None


def missing_partitions(root: Path, name: str, catalogued: dict[int, tuple[int, int]] | None
                       ) -> tuple[dict[int, Path], list[int]]:
    """(partition files on disk, catalogued partitions whose file is gone)."""
    files = partition_files(root, name)
    return files, sorted(p for p in (catalogued or {}) if p not in files)


_FILE_IN_MESSAGE = re.compile(r"""['"]?(/[^'"]*?/features/([a-z_][a-z0-9_]*)/parent=[0-9a-f]+/[^'"\s]+)""")


def explain_query_error(root: Path, message: str) -> StoreDamagedError | None:
    """A DuckDB error raised by a damaged set's view, or one that names a partition file of this store, said as
    a damaged partition (else None)."""
    if ERROR_VIEW_PREFIX in message:
        return StoreDamagedError(message.split(ERROR_VIEW_PREFIX, 1)[1].strip().splitlines()[0])
    m = _FILE_IN_MESSAGE.search(message)
    if not m or not Path(m.group(1)).is_relative_to(Path(root) / "features"):
        return None
    return damaged_error(Path(root), m.group(2), Path(m.group(1)), message.strip().splitlines()[0])
