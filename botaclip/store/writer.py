"""Streaming writer of one feature set: buffers rows per coarse partition, writes each partition as one sorted
Parquet file (temp file, fsync, rename), and records the run in the catalog.

Durability: a file's bytes reach the disk before it is renamed into place, so even a power cut never leaves a
torn file. The folders the renames went into are flushed once, together, when the writer commits (and before
`existing_cells` answers), not once per file: until then a power cut (not a killed process: the rename is
already visible to every process) can at worst undo a rename, which leaves the previous file or none, a state
that resuming handles like any unwritten partition; the catalog, which lists partitions, is only written after
that flush, so it never names a partition a power cut could take back. (A folder flush is a journal commit:
about 3 ms each on the dev machine, against about 14 ms to encode a partition of 2,401 x 768 floats; flushed
together, 85 folders take about 20 ms.)

Guarantees:
- a partition file is replaced atomically, merged with what was there (new rows win on the same cell), so
  writing is idempotent per partition and readers never see a partial file;
- what `existing_cells()` returns is exactly what is on disk, so a job killed at any moment (even SIGKILL) and
  rerun on the cells that are not there completes with no duplicate and no missing cell;
- `finish_partition(parent)` returns with the file durable and in place; with ``wait=False`` its fsync and rename
  run in the background (`mover`) while the caller computes the next partition, one partition at most in flight:
  a kill then may lose that one (never tear it; the catalog never lists it) and the rerun writes it again;
- buffers are bounded (`max_buffer_bytes`): when exceeded, the largest partitions are written early as
  "partial" (merged again later), so memory does not grow with the size of the job;
- a replacement (`overwrite=True` of an existing set) and an `atomic=True` write are built aside and swapped in
  only when the writer closes without error (see `staging`): a failed, interrupted or empty replacement leaves
  the old set as it was;
- a writer that fails before writing any file leaves the catalog untouched; the catalog records every
  committed partition's rows and bytes, so readers notice a partition file that disappears.

Speed (bench/store.py): `write` sorts the batch's cells once (of a cell given twice, the last row sorts last and
wins); cells of one parent are contiguous in numeric H3 order, so every partition is a zero-copy slice of one
encoded table. Embeddings are gathered and normalised in one pass into one array (none when the batch is sorted
and unit already); a partition that arrives whole and sorted is written as it is.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.atomic import fsync_dirs
from botaclip.errors import BotaclipError, InvalidInputError, StoreWriteError, param, root_cause
from botaclip.store import h3vec
from botaclip.store.catalog import utcnow, write_catalog
from botaclip.store.damage import read_footer, read_partition_table
from botaclip.store.geometry import geometry_stats
from botaclip.store.layout import (
    features_dir,
    move_into_place,
    partition_files,
    partition_path,
    tmp_dir,
    write_parquet_tmp,
)
from botaclip.store.lock import WriterLock
from botaclip.store.mover import BackgroundMover
from botaclip.store.schema import FOOTER_KEY, FeatureSetSpec
from botaclip.store.staging import link_untouched, new_stage_root, recover_swaps, swap_in

if TYPE_CHECKING:
    from botaclip.store.store import Store

DEFAULT_MAX_BUFFER_BYTES = 512 * 1024**2


def _code_version() -> str:
    try:
        from botaclip import __version__
        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


def sort_order(cells: np.ndarray) -> np.ndarray | None:
    """Indices that sort `cells` keeping only the last row of a cell given twice, or None when they are sorted
    and distinct already (the common case: one partition's cells in order)."""
    if len(cells) < 2 or bool((cells[1:] > cells[:-1]).all()):
        return None
    order = np.argsort(cells, kind="stable")  # stable: of a repeated cell, the last row given sorts last
    s = cells[order]
    last = np.r_[s[1:] != s[:-1], True]
    return order if last.all() else order[last]


def row_norms(x: np.ndarray, name: str) -> np.ndarray:
    """L2 norm of each row of float32 `x` (no temporary matrix; exactly 1 for rows within 1e-6 of unit); an
    InvalidInputError for NaN or infinity."""
    sq = np.einsum("ij,ij->i", x, x)
    if not np.isfinite(sq).all():
        if not np.isfinite(x).all():
            raise InvalidInputError(f"embedding for {name!r} contains NaN or infinite values")
        sq = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64))  # huge but finite values
    norms = np.sqrt(sq)
    # A row already unit within float32 rounding is stored as given (so writing it again changes nothing).
    norms[np.abs(norms - 1) < 1e-6] = 1
    return norms


def _merge_pieces(schema: pa.Schema, pieces: list[pa.Table], existing: pa.Table | None) -> tuple[pa.Table, int]:
    """(one partition's rows sorted by cell, a cell's last row winning, new rows): the buffered `pieces` (each
    sorted and distinct, from `write`) over the `existing` file's rows. One piece and no file: no copy."""
    new = pieces[0] if len(pieces) == 1 else (pa.concat_tables(pieces) if pieces else schema.empty_table())
    new_rows = new.num_rows
    if existing is not None and existing.num_rows:
        keep = ~np.isin(existing.column("h3").to_numpy(), new.column("h3").to_numpy())
        merged = pa.concat_tables([existing.filter(pa.array(keep)), new])
    else:
        merged = new
    h = merged.column("h3").to_numpy()
    if len(h) > 1 and not bool((h[1:] > h[:-1]).all()):
        order = sort_order(h)  # several pieces, or a merge: sort, and of a cell given twice keep the last row
        merged = merged.take(pa.array(order if order is not None else np.arange(len(h))))
    return merged, new_rows


#: Rows from which `unit_rows_in_order` gathers in two threads: below it, starting threads costs more than it saves.
PARALLEL_GATHER_ROWS = 65_536


def unit_rows_in_order(values: np.ndarray, order: np.ndarray, name: str, chunk: int = 4096) -> np.ndarray:
    """float32 rows ``values[order]``, each divided by its L2 norm (zero rows stay zero), in one output array.

    Large inputs are gathered by two threads, each filling its half of the output: the gather from rows in
    random order waits on memory, and NumPy releases the GIL while it copies and divides."""
    out = np.empty((len(order), values.shape[1]), dtype=np.float32)

    def fill(start: int, stop: int) -> None:
        for i in range(start, stop, chunk):
            j = min(i + chunk, stop)
            x = np.asarray(values[order[i:j]], dtype=np.float32)
            norms = row_norms(x, name)
            np.divide(x, np.where(norms > 0, norms, 1).astype(np.float32)[:, None], out=out[i:j])

    n = len(order)
    if n < PARALLEL_GATHER_ROWS or (os.cpu_count() or 1) < 2:
        fill(0, n)
        return out
    middle = (n // 2 // chunk) * chunk
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="botaclip-gather") as pool:
        halves = [pool.submit(fill, 0, middle), pool.submit(fill, middle, n)]
        for half in halves:
            half.result()  # a half's error (NaN in a row) is raised here, as the one-thread path raises it
    return out


class FeatureSetWriter:
    """Appends rows to one feature set; use `with store.writer(...) as w:` (commit on exit).

    Embeddings passed to `write` are unit-normalised here (L2), so callers may pass raw or normalised vectors;
    an all-zero vector stays zero. Non-finite values are refused.

    On a normal close, an embedding set's geometry statistics (`botaclip.store.geometry`: mean vector, PCA
    spectrum and axes, effective dimensionality) are recomputed from its files and kept in the catalog (written
    once, with the run's record); ``geometry=False`` skips that (for intermediate commits of a longer job, which
    pass it on the last one).
    """

    def __init__(self, store: "Store", spec: FeatureSetSpec, *, overwrite: bool = False, atomic: bool = False,
                 max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES, geometry: bool = True) -> None:
        if store.read_only:
            raise InvalidInputError(f"store {store.path} was opened read-only; open it with read_only=False to write")
        self.store = store
        self.spec = spec
        self.name = spec.name
        self.max_buffer_bytes = int(max_buffer_bytes)
        self.geometry = bool(geometry)
        self._buffers: dict[int, list[pa.Table]] = {}
        self._buffered_bytes = 0
        self.rows_written = 0
        self.partitions_written = 0
        self._closed = False
        self._stage: Path | None = None
        self._scratch: list[Path] = []
        self._unsynced: set[Path] = set()  # folders a partition file was renamed into since the last flush
        self._mover: BackgroundMover | None = None  # moves files of `finish_partition(wait=False)` into place
        self._registered_state = None  # the catalog as `_register` wrote it
        self._geometry_error: BotaclipError | None = None
        self._lock = WriterLock(store.path).acquire()
        try:
            self._open(overwrite, atomic)
        except BaseException:
            self._lock.release()
            raise

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def _open(self, overwrite: bool, atomic: bool) -> None:
        root = self.store.path
        state = self.store.catalog()
        try:
            # We hold the lock: finish or undo a replacement a killed writer left half-swapped, then drop the
            # leftovers of killed writers.
            recover_swaps(root, {r["run_id"] for r in state.runs if r["status"] == "done"})
            shutil.rmtree(root / ".tmp", ignore_errors=True)
        except OSError as exc:
            raise StoreWriteError(f"cannot prepare store {root} for writing: {root_cause(exc)}") from None
        self.spec.provenance.setdefault("resolution", self.store.resolution)
        self.spec.provenance.setdefault("code_version", _code_version())
        old = state.feature_sets.get(self.name)
        replace = False
        if old is not None:
            why = state.spec(self.name).conflicts_with(self.spec)
            if why and not overwrite:
                raise InvalidInputError(f"feature set {self.name!r} already exists with a different {why}; "
                                        f"pass {param('overwrite')} to replace it, or choose another name")
            replace = overwrite
        now = utcnow()
        if old is None or replace:
            self.spec.provenance.setdefault("created", now.isoformat())
            provenance, created = self.spec.provenance, now
        else:
            provenance = {**old["provenance"], **{k: v for k, v in self.spec.provenance.items()
                                                  if k not in ("created",)}}
            created = old["created"]
        self.spec.provenance = provenance
        self._schema = self.spec.arrow_schema(self.store.resolution, self.store.partition_resolution)
        self._record = {**self.spec.to_record(), "extras": list(self.spec.extras), "created": created}
        self.run_id = max([r["run_id"] for r in state.runs], default=0) + 1
        self._run = {"run_id": self.run_id, "feature_set": self.name, "pid": os.getpid(),
                     "host": socket.gethostname(), "started": now, "finished": None, "status": "running",
                     "rows_written": 0, "partitions_written": 0, "botaclip_version": _code_version()}
        self._state_at_open = state  # restored if this writer fails before committing any file
        self._replace = replace
        self._old_parts = {} if replace else dict(state.partitions.get(self.name, {}))
        self._old_rows = int(old["rows"] or 0) if old is not None else 0
        self._touched: set[int] = set()
        self._registered = False  # the catalog knows this run (non-staged writers register on their first file)
        if replace or atomic:
            try:
                self._stage = new_stage_root(root, self.name)
            except OSError as exc:
                raise StoreWriteError(f"cannot write to store {root}: {root_cause(exc)}") from None
        self._view_has_files = self._stage is None and bool(partition_files(root, self.name))

    @property
    def replacing(self) -> bool:
        """True when this writer replaces an existing set (built aside, swapped in on a successful close)."""
        return self._replace

    @property
    def _data_root(self) -> Path:
        """Where this writer's partition files go: the store, or its staging directory."""
        return self._stage if self._stage is not None else self.store.path

    def partition_path(self, parent: int) -> Path:
        """The file partition `parent` is written to by this writer (in the staging area for a replacement)."""
        return partition_path(self._data_root, self.name, int(parent))

    def close(self, failed: bool = False) -> None:
        """Write everything buffered, record the run in the catalog (a replacement: swap it in), and release the
        writer lock. With `failed`, a replacement is discarded and a first write that produced no file leaves
        the catalog untouched; the error that made the caller fail is the one to report, so a second failure
        here (the same full disk) is swallowed."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._drain(raise_errors=not failed)  # a partition still moving in (`finish_partition(wait=False)`)
                self._flush_many(list(self._buffers), complete=not failed)
            except Exception:
                if not failed:
                    raise
                self._buffers.clear()  # the rows not written are recomputed by the next run
            geometry = not failed and self.geometry and self.spec.is_embedding
            if self._stage is not None:
                if not failed:
                    self._commit_stage(geometry)
            elif self._registered or not failed:
                try:
                    if failed and not self._touched:  # registered, then failed before its first file landed
                        write_catalog(self.store.catalog_path, self._state_at_open, self.store.path)
                    else:
                        self._record_run("failed" if failed else "done", geometry)
                except StoreWriteError:
                    if not failed:
                        raise
            if self._geometry_error is not None:  # the run is committed; its statistics could not be computed
                raise self._geometry_error
            if not failed and self._replace:  # the replaced set's ANN index (unrecorded since the swap)
                shutil.rmtree(self.store.path / "ann" / self.name, ignore_errors=True)
        finally:
            for d in [self._stage, *self._scratch]:
                if d is not None:
                    shutil.rmtree(d, ignore_errors=True)
            self._lock.release()

    def _set_geometry(self, state, data_root: Path, rows: int) -> None:
        """Put the geometry statistics of the whole set as its files under `data_root` are now (one streaming pass)
        into `state`, which the caller writes with the run's record. A damaged file drops the (stale) record and
        is raised once the run is committed, as it was when the statistics came after the commit."""
        cols = ["h3", "embedding"] + (["embedding_scale"] if self.spec.dtype == "int8" else [])

        def pieces():
            for f in partition_files(data_root, self.name).values():
                table = read_partition_table(self.store.path, self.name, f, cols)
                yield table.column("h3").to_numpy(), self.spec.decode(table)

        try:
            stats = geometry_stats(pieces(), rows)
        except BotaclipError as exc:
            stats, self._geometry_error = None, exc
        if stats is None:
            state.drop_record("feature_set_geometry", self.name)
        else:
            state.set_record("feature_set_geometry", self.name, {**stats, "computed": utcnow()})

    def __enter__(self) -> "FeatureSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    # ---- catalog -------------------------------------------------------------------------------------------

    def _scan(self, data_root: Path) -> tuple[dict[int, tuple[int, int]], dict]:
        """Rows and bytes of every partition file under `data_root`, plus the catalog's records of partitions
        this writer did not rewrite that are missing or unreadable (readers keep naming those)."""
        parts: dict[int, tuple[int, int]] = {}
        for parent, f in partition_files(data_root, self.name).items():
            try:
                parts[parent] = (pq.read_metadata(f).num_rows, f.stat().st_size)
            except (OSError, pa.ArrowException):
                if parent in self._old_parts:
                    parts[parent] = self._old_parts[parent]
        for parent, rec in self._old_parts.items():
            if parent not in parts and parent not in self._touched:
                parts[parent] = rec
        counts = {"rows": sum(r for r, _ in parts.values()), "partitions": len(parts),
                  "bytes": sum(b for _, b in parts.values())}
        return parts, counts

    def _state_with_this_set(self, data_root: Path, status: str | None, geometry: bool = False, state=None):
        state = state if state is not None else self.store.catalog()
        parts, counts = self._scan(data_root)
        state.feature_sets[self.name] = {**self._record, **counts, "updated": utcnow()}
        state.partitions[self.name] = parts
        if self._replace:  # the replaced set's records describe data that is gone
            state.drop_record("feature_set_geometry", self.name)
            state.drop_record("cross_fits", self.name)
            state.drop_record("ann_indexes", self.name)  # its files go after the swap (see close)
        runs = [r for r in state.runs if r["run_id"] == self.run_id]
        run = runs[0] if runs else dict(self._run)
        if not runs:
            state.runs.append(run)
        if status is not None:
            run.update(finished=utcnow(), status=status, rows_written=self.rows_written,
                       partitions_written=self.partitions_written)
        if geometry:
            self._set_geometry(state, data_root, counts["rows"])
        return state, counts

    def _register(self) -> None:
        """Record the set and this run ("running") in the catalog before the first partition file lands."""
        # The catalog is as this writer read it when it opened (it holds the lock since): no need to read it again.
        state, _ = self._state_with_this_set(self.store.path, None, state=self._state_at_open.copy())
        write_catalog(self.store.catalog_path, state, self.store.path)
        self._registered = True
        self._registered_state = state

    def _record_run(self, status: str, geometry: bool = False) -> None:
        self._sync_dirs()  # the catalog lists this run's partitions: their renames must be durable first
        state, _ = self._state_with_this_set(self.store.path, status, geometry)
        write_catalog(self.store.catalog_path, state, self.store.path)

    def _sync_dirs(self, whole_set: bool = False) -> None:
        """Flush, all at once, the folders partition files were renamed into since the last flush, and the
        folders above them (a new partition's folder is itself a new entry); `whole_set`: every partition folder
        of the set under the data root (a staged set, whose hard-linked partitions are new entries too)."""
        dirs = set(self._unsynced)
        if whole_set:
            dirs.update(f.parent for f in partition_files(self._data_root, self.name).values())
        if not dirs:
            return
        top = features_dir(self._data_root, self.name)
        try:
            fsync_dirs(sorted(dirs | {top, top.parent, self._data_root}))
        except OSError as exc:
            raise StoreWriteError(f"cannot write to store {self.store.path}: {root_cause(exc)}") from None
        self._unsynced.clear()

    def _commit_stage(self, geometry: bool = False) -> None:
        root = self.store.path
        if not self._replace:
            link_untouched(root, self._stage, self.name)  # an all-or-nothing append: the whole new set
        self._sync_dirs(whole_set=True)  # durable before the swap and the catalog make them the set
        state, counts = self._state_with_this_set(self._stage, "done", geometry)
        if self._replace and counts["rows"] == 0:
            raise BotaclipError(f"feature set {self.name!r} was not replaced: the new data holds no rows, so the "
                                f"old set ({self._old_rows} rows) is kept")
        try:
            swap_in(root, self._stage, self.name, self.run_id,
                    lambda: write_catalog(self.store.catalog_path, state, root))
        except OSError as exc:
            if isinstance(exc, StoreWriteError):
                raise
            raise StoreWriteError(f"cannot move feature set {self.name!r} into store {root}: {root_cause(exc)}; "
                                  "the store is unchanged") from None

    # ---- reading back --------------------------------------------------------------------------------------

    def existing_cells(self) -> np.ndarray:
        """uint64 cells of this feature set that are durably on disk now (buffered rows are not included; a
        replacement's cells are those written so far, not the old set's)."""
        self._drain()
        self._sync_dirs()
        files = partition_files(self._data_root, self.name)
        if self._stage is not None and not self._replace:
            files = {**partition_files(self.store.path, self.name), **files}
        parts = [pq.read_table(f, columns=["h3"]).column("h3").to_numpy() for f in files.values()]
        return np.sort(np.concatenate(parts).astype(np.uint64)) if parts else np.zeros(0, dtype=np.uint64)

    def scratch_dir(self, prefix: str = "scratch") -> Path:
        """A new empty directory inside the store, for partition files to be committed with `commit_file` (a Ray
        job's worker scratch stores): on the store's filesystem, so a commit is one rename, and never seen by
        readers. Removed when this writer closes (and by the next writer, if this process dies first)."""
        d = tmp_dir(self.store.path) / f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            d.mkdir()
        except OSError as exc:
            raise StoreWriteError(f"cannot write to store {self.store.path}: {root_cause(exc)}") from None
        self._scratch.append(d)
        return d

    def commit_file(self, parent: int, path: Path, rows: int) -> None:
        """Move a complete partition file written elsewhere on the same filesystem (a Ray worker's scratch
        store, in a `scratch_dir`) into this writer's place for partition `parent`, atomically: one rename (the
        file's bytes must be on disk already, as a writer leaves them; its folder is flushed with the others at the
        commit); `rows` is the number of rows it adds (counted in the run record). Only the holder of this writer
        commits, so a partition is never committed twice by two processes."""
        parent = int(parent)
        self._drain()
        if self._stage is None and not self._registered:
            self._register()
        final = self.partition_path(parent)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, final)
        except OSError as exc:
            raise StoreWriteError(f"cannot commit partition {parent:x} into store {self.store.path}: "
                                  f"{root_cause(exc)}") from None
        self._unsynced.add(final.parent)
        self._touched.add(parent)
        self.rows_written += int(rows)
        self.partitions_written += 1
        self._after_first_file()

    def _after_first_file(self) -> None:
        if self._stage is None and not self._view_has_files and self._touched:
            # The catalog view was an empty placeholder; point it at the files now so readers see them (the state
            # `_register` just wrote: reading it back would only cost time).
            state = self._registered_state if self._registered_state is not None else self.store.catalog()
            write_catalog(self.store.catalog_path, state, self.store.path)
            self._view_has_files = True

    # ---- writing -------------------------------------------------------------------------------------------

    def write(self, h3, embedding=None, valid_fraction=None, *, columns: dict | None = None, n_obs=None) -> int:
        """Buffer rows: `h3` uint64[N] cells at the store's resolution, and either `embedding` float[N, D]
        or `columns` {name: float[N]} (NaN = missing); `valid_fraction` float[N] in [0, 1] (imagery kinds),
        `n_obs` int[N] (imported / covariate kinds). A cell given twice keeps its last row. Returns N."""
        if self._closed:
            raise InvalidInputError(f"writer of {self.name!r} is closed")
        cells = self._check_cells(h3)
        n = len(cells)
        values = self._check_values(n, embedding, columns)
        extras = {"valid_fraction": self._check_extra("valid_fraction", valid_fraction, n, np.float32),
                  "n_obs": self._check_extra("n_obs", n_obs, n, np.int32)}
        if n == 0:
            return 0
        order = sort_order(cells)
        if order is not None:
            cells = cells[order]
            extras = {k: (v[order] if v is not None else None) for k, v in extras.items()}
        x, norms = self._rows_to_store(values, order)
        table = self.spec.encode(self._schema, cells, x, extras, norms=norms)
        # Cells are sorted now, and cells of one parent are contiguous in numeric order (the parent's digits
        # are the high bits), so each partition is a zero-copy slice of the one encoded table.
        parents = self.store.partition_of(cells)
        bounds = np.r_[0, np.flatnonzero(parents[1:] != parents[:-1]) + 1, n]
        for start, stop in zip(bounds[:-1], bounds[1:]):
            part = table.slice(int(start), int(stop - start))
            self._buffers.setdefault(int(parents[start]), []).append(part)
            self._buffered_bytes += part.nbytes
        if self._buffered_bytes > self.max_buffer_bytes:
            self._relieve_memory()
        return len(cells)

    def _rows_to_store(self, values: np.ndarray, order: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(values in `order` (None: as given), their L2 norms for `spec.encode` to divide by, or None when they are
        unit already or are columns). At most one copy of the matrix: reordered rows are gathered and normalised
        in cache-sized chunks straight into the one output array."""
        if not self.spec.is_embedding:
            return (values[order] if order is not None else values), None
        if order is not None:
            return unit_rows_in_order(values, order, self.name), None
        x = np.asarray(values, dtype=np.float32)
        norms = row_norms(x, self.name)
        if ((norms == 1) | (norms == 0)).all():
            return x, None  # already unit (within float32 rounding): no copy
        return x, norms

    def finish_partition(self, parent: int, *, wait: bool = True) -> int:
        """Write every buffered row of coarse cell `parent` now and mark the partition complete (atomic).

        Call it when all cells of that parent have been written, even if there were none (an empty partition
        file records that the parent is done). Returns the rows in the partition file.

        With `wait` (the default) the file is durable and in place when this returns. ``wait=False`` returns once
        the partition is handed over; its encoding, flush to disk and rename happen in two background threads
        while the caller computes the next partition, and are waited for by the next call that writes a
        partition (this one, `flush`, a `write` over the buffer limit), `existing_cells` and `close`, which also
        report a failure there. At most one
        partition is in flight: a process killed meanwhile may lose the last partition it finished (never
        leaving a torn file under its name, and the catalog never lists it), and a job that skips the cells on
        disk when rerun writes it again (`botaclip index` does). Speed: bench/store.py, docs/benchmarks.md.
        """
        parent = int(parent)
        if h3vec.get_resolution(np.array([parent], np.uint64))[0] != self.store.partition_resolution:
            raise InvalidInputError(f"{parent:x} is not a cell at the partition resolution "
                                    f"{self.store.partition_resolution}; use store.partition_of(cells)")
        if wait:
            self._drain()
            return self._flush(parent, complete=True)
        mover = self._background()
        if self.partition_path(parent) in mover.pending():
            self._settle(mover)  # the file still moving in is merged into this one: it must be in place first
        rows = self._flush(parent, complete=True, mover=mover)
        self._settle(mover, keep=1)  # the partition before this one, whose fsync overlapped this one's encoding
        return rows

    def flush(self) -> None:
        """Write all buffered rows now (partitions not finished are marked partial)."""
        self._flush_many(list(self._buffers), complete=False)

    # ---- internals -----------------------------------------------------------------------------------------

    def _check_cells(self, h3) -> np.ndarray:
        try:
            cells = h3vec.as_cells(h3)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"h3 cells for {self.name!r} are not uint64 H3 ids: {exc}") from None
        if cells.ndim != 1:
            raise InvalidInputError(f"h3 must be a 1-D array of cells, got shape {cells.shape}")
        if cells.size:
            bad = ~h3vec.is_valid_cell(cells) | (h3vec.get_resolution(cells) != self.store.resolution)
            if bad.any():
                raise InvalidInputError(
                    f"{int(bad.sum())} of {cells.size} ids written to {self.name!r} are not valid H3 cells at the "
                    f"store resolution {self.store.resolution} (first: {int(cells[bad][0]):x})")
        return cells

    def _check_values(self, n: int, embedding, columns) -> np.ndarray:
        spec = self.spec
        if spec.is_embedding:
            if embedding is None or columns is not None:
                raise InvalidInputError(f"feature set {self.name!r} holds embeddings: pass embedding=float[N, {spec.dim}]")
            x = np.asarray(embedding)
            if x.dtype.kind not in "fiub":
                x = np.asarray(x, dtype=np.float32)
            if x.shape != (n, spec.dim):
                raise InvalidInputError(f"embedding for {self.name!r} has shape {x.shape}, expected ({n}, {spec.dim})")
            return x  # normalised (and checked for NaN) in `_rows_to_store`, after the sort, in one copy
        if columns is None or embedding is not None:
            raise InvalidInputError(f"feature set {self.name!r} holds columns {list(spec.columns)}: pass columns={{...}}")
        missing = [c for c in spec.columns if c not in columns]
        extra = [c for c in columns if c not in spec.columns]
        if missing or extra:
            raise InvalidInputError(f"columns for {self.name!r} do not match its schema: missing {missing}, "
                                    f"unexpected {extra}")
        x = np.empty((n, len(spec.columns)), dtype=np.float32)
        for j, c in enumerate(spec.columns):
            v = np.asarray(columns[c], dtype=np.float32)
            if v.shape != (n,):
                raise InvalidInputError(f"column {c!r} has shape {v.shape}, expected ({n},)")
            x[:, j] = v
        return x

    def _check_extra(self, name: str, value, n: int, dtype) -> np.ndarray | None:
        if value is None:
            return None
        if name not in self.spec.extras:
            raise InvalidInputError(f"a {self.spec.kind!r} feature set has no {name!r} column")
        v = np.asarray(value, dtype=dtype)
        if v.shape != (n,):
            raise InvalidInputError(f"{name} has shape {v.shape}, expected ({n},)")
        return v

    def _relieve_memory(self) -> None:
        sizes = {p: sum(t.nbytes for t in pieces) for p, pieces in self._buffers.items()}
        chosen, left = [], self._buffered_bytes
        for parent in sorted(sizes, key=lambda p: -sizes[p]):
            if left <= self.max_buffer_bytes // 2:
                break
            chosen.append(parent)
            left -= sizes[parent]
        self._flush_many(chosen, complete=False)

    def _flush_many(self, parents: list[int], complete: bool) -> None:
        """`_flush` each of `parents`, the fsync and rename of one file overlapping the encoding of the next (see
        `mover`); returns once every file is in place, as one `_flush` after another would."""
        if len(parents) < 2 and self._mover is None:
            for parent in parents:
                self._flush(parent, complete)
            return
        mover = self._background()
        try:
            for parent in parents:
                if self.partition_path(parent) in mover.pending():
                    self._settle(mover)  # merged into the new file: in place first
                self._flush(parent, complete, mover)
                mover.throttle(keep=2)  # at most two tables waiting for the background (memory)
        except BaseException:
            self._drain(raise_errors=False)  # what was handed over lands (whole files), then this error
            raise
        self._drain()

    def _background(self) -> BackgroundMover:
        if self._mover is None:
            self._mover = BackgroundMover(self.store.path)
        return self._mover

    def _settle(self, mover: BackgroundMover, keep: int = 0) -> None:
        """`mover.settle(keep)`, its failure reported as `_kept` says; the catalog view follows a first file."""
        try:
            mover.settle(keep)
        except StoreWriteError as exc:
            self._drain(raise_errors=False)  # the files after the failed one are dropped; a later write starts afresh
            raise self._kept(exc) from None
        self._after_first_file()

    def _drain(self, raise_errors: bool = True) -> None:
        """Every file handed to the background mover in place (or dropped after a failed move), its thread gone."""
        mover, self._mover = self._mover, None
        if mover is None:
            return
        try:
            mover.finish(raise_errors)
        except StoreWriteError as exc:
            raise self._kept(exc) from None
        self._after_first_file()

    def _kept(self, exc: StoreWriteError) -> StoreWriteError:
        kept = ("nothing of this write was committed: the store is unchanged" if self._stage is not None else
                "the partitions written before are kept; run the same command again to complete")
        return StoreWriteError(f"{exc}; {kept}")

    def _landed(self, parent: int, path: Path, new_rows: int) -> None:
        """Bookkeeping of a partition file now in place."""
        self._unsynced.add(path.parent)
        self._touched.add(parent)
        self.rows_written += new_rows
        self.partitions_written += 1

    def _flush(self, parent: int, complete: bool, mover: BackgroundMover | None = None) -> int:
        pieces = self._buffers.pop(parent, [])
        self._buffered_bytes -= sum(t.nbytes for t in pieces)
        path = self.partition_path(parent)
        base = path
        if not base.exists() and self._stage is not None and not self._replace:
            base = partition_path(self.store.path, self.name, parent)  # an all-or-nothing append merges the live file
        was_complete = False
        existing = None
        if base.exists():
            was_complete = bool(read_footer(self.store.path, self.name, base).get("complete"))
            if not pieces and base == path and (was_complete or not complete):
                return pq.read_metadata(path).num_rows
            existing = read_partition_table(self.store.path, self.name, base).cast(self._schema)
        merged, new_rows = _merge_pieces(self._schema, pieces, existing)
        meta = dict(self._schema.metadata)
        info = json.loads(meta[FOOTER_KEY])
        info.update(parent=f"{parent:x}", complete=bool(complete or was_complete), rows=merged.num_rows)
        meta[FOOTER_KEY] = json.dumps(info, default=str).encode()
        if self._stage is None and not self._registered:
            self._register()
        label = f"partition {parent:x} of feature set {self.name!r}"
        table = merged.replace_schema_metadata(meta)
        if mover is not None:  # encoded, moved in and counted in the background (`_flush_many`, `finish_partition`)
            mover.submit_table(lambda: write_parquet_tmp(table, path, self.store.path, label), path, label,
                               lambda: self._landed(parent, path, new_rows))
            return merged.num_rows
        try:
            tmp = write_parquet_tmp(table, path, self.store.path, label)
            # The folder is flushed with the others before the catalog records this partition (`_sync_dirs`).
            move_into_place(tmp, path, self.store.path, label, sync_dir=False)
        except StoreWriteError as exc:
            raise self._kept(exc) from None
        self._landed(parent, path, new_rows)
        self._after_first_file()
        return merged.num_rows
