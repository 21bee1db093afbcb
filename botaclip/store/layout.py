"""Where things live in a store directory, and the one way files get there (temp file, fsync, rename).

STORE/
  catalog.duckdb                                   catalog tables + one view per feature set
  features/<name>/parent=<hex cell>/data.parquet   one file per (feature set, coarse parent), rows sorted by h3
  .tmp/                                            files being written (never matched by readers' globs)
  .writer.lock                                     writer exclusion (see lock.py)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.atomic import fsync_dir
from botaclip.errors import StoreWriteError, root_cause
from botaclip.store.schema import FOOTER_KEY

PARTITION_FILE = "data.parquet"
# Dictionary encoding only for int8 codes (255 values; float values and cell ids are all distinct, where it only
# costs time); BYTE_STREAM_SPLIT on
# float32 values (groups the exponent bytes, so ZSTD finds something to compress). Measured in bench/store.py.
PARQUET_OPTIONS = dict(compression="zstd", compression_level=1, write_statistics=["h3"],
                       store_schema=True)


def _byte_stream_split_columns(schema: pa.Schema) -> list[str]:
    out = []
    for f in schema:
        if pa.types.is_float32(f.type):
            out.append(f.name)
        elif pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type):
            out.append(f"{f.name}.list.element")
    return out


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    return [f"{f.name}.list.element" for f in schema
            if pa.types.is_fixed_size_list(f.type) and pa.types.is_int8(f.type.value_type)]


def parquet_write_options(table: pa.Table) -> dict:
    """Keyword arguments of `pq.write_table` for a partition file (one row group; see PARQUET_OPTIONS)."""
    return dict(row_group_size=max(1, table.num_rows),
                use_byte_stream_split=_byte_stream_split_columns(table.schema) or False,
                use_dictionary=_dictionary_columns(table.schema) or False, **PARQUET_OPTIONS)


def features_dir(root: Path, name: str) -> Path:
    return Path(root) / "features" / name


def partition_path(root: Path, name: str, parent: int) -> Path:
    return features_dir(root, name) / f"parent={int(parent):x}" / PARTITION_FILE


def partition_files(root: Path, name: str) -> dict[int, Path]:
    """Committed partition files of a feature set, keyed by coarse parent cell."""
    out: dict[int, Path] = {}
    d = features_dir(root, name)
    if not d.is_dir():
        return out
    for sub in d.iterdir():
        if sub.name.startswith("parent=") and (sub / PARTITION_FILE).is_file():
            try:
                out[int(sub.name[len("parent="):], 16)] = sub / PARTITION_FILE
            except ValueError:
                continue
    return dict(sorted(out.items()))


def footer_meta(path: Path) -> dict:
    """The botaclip metadata stored in a Parquet file's footer ({} if absent)."""
    md = pq.read_metadata(path).metadata or {}
    raw = md.get(FOOTER_KEY)
    return json.loads(raw) if raw else {}


def tmp_dir(root: Path) -> Path:
    d = Path(root) / ".tmp"
    d.mkdir(exist_ok=True)
    return d


def write_parquet_atomic(table: pa.Table, final: Path, root: Path, label: str | None = None, *,
                         sync_dir: bool = True) -> int:
    """Write `table` to `final` so that no reader ever sees a partial file; returns bytes written.

    The file's bytes are flushed to disk before the rename, so no crash (not even a power cut) can leave a torn
    file under `final`. `sync_dir=False` leaves the flush of `final`'s folder (which makes the rename itself
    survive a power cut) to the caller, who then syncs all the folders it wrote to at once before it records
    them (the store writer, at its commit: see `FeatureSetWriter`); until then a power cut can at worst undo the
    rename (the old file or none), never tear the file.

    On failure (a full disk, a read-only store, a path blocked by a file) `final` keeps its old content, the
    temporary file is removed, and a :class:`StoreWriteError` names the cause (and `label`, what was written).
    """
    tmp = write_parquet_tmp(table, final, root, label)
    move_into_place(tmp, final, root, label, sync_dir=sync_dir)
    return final.stat().st_size


def _write_error(exc: BaseException, final: Path, root: Path, label: str | None) -> StoreWriteError:
    what = label or (final.relative_to(root) if final.is_relative_to(root) else final)
    return StoreWriteError(f"cannot write {what} in store {root}: {root_cause(exc)}")


def write_parquet_tmp(table: pa.Table, final: Path, root: Path, label: str | None = None) -> Path:
    """The first half of `write_parquet_atomic`: `table` written to a new temporary file in the store's `.tmp/`
    (returned), to be finished by `move_into_place`. On failure nothing is left and a StoreWriteError says why."""
    tmp = Path(root) / ".tmp" / f"{final.parent.name}-{os.getpid()}-{time.monotonic_ns()}.parquet"
    try:
        tmp_dir(root)
        pq.write_table(table, tmp, **parquet_write_options(table))
    except (OSError, pa.ArrowException) as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(exc, final, root, label) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def move_into_place(tmp: Path, final: Path, root: Path, label: str | None = None, *, sync_dir: bool = True) -> None:
    """The second half of `write_parquet_atomic`: flush `tmp`'s bytes to disk, then rename it over `final` (and
    flush `final`'s folder unless `sync_dir` is False). On failure `tmp` is removed, `final` is unchanged and a
    StoreWriteError says why."""
    try:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        if sync_dir:
            fsync_dir(final.parent)
    except OSError as exc:
        raise _write_error(exc, final, root, label) from None
    finally:
        if tmp.exists():
            tmp.unlink()
