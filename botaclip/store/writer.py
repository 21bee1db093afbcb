"""Streaming writer of one feature set: buffers rows per coarse partition, writes each partition as one sorted
Parquet file (temp file, fsync, rename), and records the run in the catalog.

Guarantees:
- a partition file is replaced atomically, merged with what was there (new rows win on the same cell), so
  writing is idempotent per partition and readers never see a partial file;
- what `existing_cells()` returns is exactly what is on disk, so a job killed at any moment (even SIGKILL) and
  rerun on the cells that are not there completes with no duplicate and no missing cell;
- buffers are bounded (`max_buffer_bytes`): when exceeded, the largest partitions are written early as
  "partial" (merged again later), so memory does not grow with the size of the job.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.errors import BotaclipError
from botaclip.store import h3vec
from botaclip.store.catalog import utcnow, write_catalog
from botaclip.store.geometry import geometry_stats
from botaclip.store.layout import footer_meta, partition_files, partition_path, tmp_dir, write_parquet_atomic
from botaclip.store.lock import WriterLock
from botaclip.store.schema import FOOTER_KEY, FeatureSetSpec

if TYPE_CHECKING:
    from botaclip.store.store import Store

DEFAULT_MAX_BUFFER_BYTES = 512 * 1024**2


def _code_version() -> str:
    try:
        from botaclip import __version__
        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


class FeatureSetWriter:
    """Appends rows to one feature set; use `with store.writer(...) as w:` (commit on exit).

    Embeddings passed to `write` are unit-normalised here (L2), so callers may pass raw or normalised vectors;
    an all-zero vector stays zero. Non-finite values are refused.

    On a normal close, an embedding set's geometry statistics (`botaclip.store.geometry`: mean vector, PCA
    spectrum and axes, effective dimensionality) are recomputed from its files and kept in the catalog;
    ``geometry=False`` skips that (for intermediate commits of a longer job, which pass it on the last one).
    """

    def __init__(self, store: "Store", spec: FeatureSetSpec, *, overwrite: bool = False,
                 max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES, geometry: bool = True) -> None:
        if store.read_only:
            raise BotaclipError(f"store {store.path} was opened read-only; open it with read_only=False to write")
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
        self._lock = WriterLock(store.path).acquire()
        try:
            self._open(overwrite)
        except BaseException:
            self._lock.release()
            raise

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def _open(self, overwrite: bool) -> None:
        root = self.store.path
        shutil.rmtree(root / ".tmp", ignore_errors=True)  # leftovers of killed writers: we hold the lock
        state = self.store._read_catalog()
        self.spec.provenance.setdefault("resolution", self.store.resolution)
        self.spec.provenance.setdefault("code_version", _code_version())
        old = state.feature_sets.get(self.name)
        if old is not None:
            why = state.spec(self.name).conflicts_with(self.spec)
            if why and not overwrite:
                raise BotaclipError(f"feature set {self.name!r} already exists with a different {why}; "
                                    "pass overwrite=True (CLI: --overwrite) to replace it, or choose another name")
            if overwrite:
                self._remove_files()
                old = None
                # The replaced set's records describe data that is gone.
                state.drop_record("feature_set_geometry", self.name)
                state.drop_record("cross_fits", self.name)
        now = utcnow()
        if old is None:
            self.spec.provenance.setdefault("created", now.isoformat())
            provenance = self.spec.provenance
            created = now
        else:
            provenance = {**old["provenance"], **{k: v for k, v in self.spec.provenance.items()
                                                  if k not in ("created",)}}
            created = old["created"]
        self.spec.provenance = provenance
        self._schema = self.spec.arrow_schema(self.store.resolution, self.store.partition_resolution)
        counts = self.store._live_counts(self.name)
        state.feature_sets[self.name] = {**self.spec.to_record(), "extras": list(self.spec.extras),
                                         "created": created, "updated": now, **counts}
        self.run_id = max([r["run_id"] for r in state.runs], default=0) + 1
        state.runs.append({"run_id": self.run_id, "feature_set": self.name, "pid": os.getpid(),
                           "host": socket.gethostname(), "started": now, "finished": None, "status": "running",
                           "rows_written": 0, "partitions_written": 0, "botaclip_version": _code_version()})
        write_catalog(self.store.catalog_path, state, root)
        self._view_has_files = counts["partitions"] > 0

    def _remove_files(self) -> None:
        d = self.store.path / "features" / self.name
        if d.exists():
            trash = tmp_dir(self.store.path) / f"trash-{self.name}-{time.monotonic_ns()}"
            os.replace(d, trash)  # one rename: readers see the old set or none, never half of it
            shutil.rmtree(trash, ignore_errors=True)

    def close(self, failed: bool = False) -> None:
        """Write everything buffered, record the run in the catalog, and release the writer lock."""
        if self._closed:
            return
        self._closed = True
        try:
            for parent in list(self._buffers):
                self._flush(parent, complete=not failed)
            state = self.store._read_catalog()
            rec = state.feature_sets.get(self.name)
            if rec is not None:
                rec.update(self.store._live_counts(self.name), updated=utcnow())
                if not failed and self.geometry and self.spec.is_embedding:
                    self._record_geometry(state, rec["rows"])
            for run in state.runs:
                if run["run_id"] == self.run_id:
                    run.update(finished=utcnow(), status="failed" if failed else "done",
                               rows_written=self.rows_written, partitions_written=self.partitions_written)
            write_catalog(self.store.catalog_path, state, self.store.path)
        finally:
            self._lock.release()

    def _record_geometry(self, state, rows: int) -> None:
        """Geometry statistics of the whole set as it is on disk now (one streaming pass over its files)."""
        stats = geometry_stats(((h, X) for _, h, X in self.store.iter_partitions(self.name)), rows)
        if stats is None:
            state.drop_record("feature_set_geometry", self.name)
        else:
            state.set_record("feature_set_geometry", self.name, {**stats, "computed": utcnow()})

    def __enter__(self) -> "FeatureSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    # ---- reading back --------------------------------------------------------------------------------------

    def existing_cells(self) -> np.ndarray:
        """uint64 cells of this feature set that are durably on disk now (buffered rows are not included)."""
        return self.store.existing_cells(self.name)

    # ---- writing -------------------------------------------------------------------------------------------

    def write(self, h3, embedding=None, valid_fraction=None, *, columns: dict | None = None, n_obs=None) -> int:
        """Buffer rows: `h3` uint64[N] cells at the store's resolution, and either `embedding` float[N, D]
        or `columns` {name: float[N]} (NaN = missing); `valid_fraction` float[N] in [0, 1] (imagery kinds),
        `n_obs` int[N] (imported / covariate kinds). A cell given twice keeps its last row. Returns N."""
        if self._closed:
            raise BotaclipError(f"writer of {self.name!r} is closed")
        cells = self._check_cells(h3)
        n = len(cells)
        values = self._check_values(n, embedding, columns)
        extras = {"valid_fraction": self._check_extra("valid_fraction", valid_fraction, n, np.float32),
                  "n_obs": self._check_extra("n_obs", n_obs, n, np.int32)}
        if n == 0:
            return 0
        # A cell given twice in one batch keeps its last row.
        _, last = np.unique(cells[::-1], return_index=True)
        if len(last) != n:
            keep = np.sort(n - 1 - last)
            cells, values = cells[keep], values[keep]
            extras = {k: (v[keep] if v is not None else None) for k, v in extras.items()}
        table = self.spec.encode(self._schema, cells, values, extras)
        parents = self.store.partition_of(cells)
        order = np.argsort(parents, kind="stable")
        sorted_parents = parents[order]
        bounds = np.flatnonzero(np.diff(sorted_parents)) + 1
        for idx in np.split(order, bounds):
            part = table.take(pa.array(idx))
            self._buffers.setdefault(int(parents[idx[0]]), []).append(part)
            self._buffered_bytes += part.nbytes
        if self._buffered_bytes > self.max_buffer_bytes:
            self._relieve_memory()
        return len(cells)

    def finish_partition(self, parent: int) -> int:
        """Write every buffered row of coarse cell `parent` now and mark the partition complete (atomic).

        Call it when all cells of that parent have been written, even if there were none (an empty partition
        file records that the parent is done). Returns the rows in the partition file.
        """
        parent = int(parent)
        if h3vec.get_resolution(np.array([parent], np.uint64))[0] != self.store.partition_resolution:
            raise BotaclipError(f"{parent:x} is not a cell at the partition resolution "
                                f"{self.store.partition_resolution}; use store.partition_of(cells)")
        return self._flush(parent, complete=True)

    def flush(self) -> None:
        """Write all buffered rows now (partitions not finished are marked partial)."""
        for parent in list(self._buffers):
            self._flush(parent, complete=False)

    # ---- internals -----------------------------------------------------------------------------------------

    def _check_cells(self, h3) -> np.ndarray:
        try:
            cells = h3vec.as_cells(h3)
        except (ValueError, TypeError) as exc:
            raise BotaclipError(f"h3 cells for {self.name!r} are not uint64 H3 ids: {exc}") from None
        if cells.ndim != 1:
            raise BotaclipError(f"h3 must be a 1-D array of cells, got shape {cells.shape}")
        if cells.size:
            bad = ~h3vec.is_valid_cell(cells) | (h3vec.get_resolution(cells) != self.store.resolution)
            if bad.any():
                raise BotaclipError(
                    f"{int(bad.sum())} of {cells.size} ids written to {self.name!r} are not valid H3 cells at the "
                    f"store resolution {self.store.resolution} (first: {int(cells[bad][0]):x})")
        return cells

    def _check_values(self, n: int, embedding, columns) -> np.ndarray:
        spec = self.spec
        if spec.is_embedding:
            if embedding is None or columns is not None:
                raise BotaclipError(f"feature set {self.name!r} holds embeddings: pass embedding=float[N, {spec.dim}]")
            x = np.asarray(embedding, dtype=np.float32)
            if x.shape != (n, spec.dim):
                raise BotaclipError(f"embedding for {self.name!r} has shape {x.shape}, expected ({n}, {spec.dim})")
            if not np.isfinite(x).all():
                raise BotaclipError(f"embedding for {self.name!r} contains NaN or infinite values")
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            return x / np.where(norms > 0, norms, 1.0)
        if columns is None or embedding is not None:
            raise BotaclipError(f"feature set {self.name!r} holds columns {list(spec.columns)}: pass columns={{...}}")
        missing = [c for c in spec.columns if c not in columns]
        extra = [c for c in columns if c not in spec.columns]
        if missing or extra:
            raise BotaclipError(f"columns for {self.name!r} do not match its schema: missing {missing}, "
                                f"unexpected {extra}")
        x = np.empty((n, len(spec.columns)), dtype=np.float32)
        for j, c in enumerate(spec.columns):
            v = np.asarray(columns[c], dtype=np.float32)
            if v.shape != (n,):
                raise BotaclipError(f"column {c!r} has shape {v.shape}, expected ({n},)")
            x[:, j] = v
        return x

    def _check_extra(self, name: str, value, n: int, dtype) -> np.ndarray | None:
        if value is None:
            return None
        if name not in self.spec.extras:
            raise BotaclipError(f"a {self.spec.kind!r} feature set has no {name!r} column")
        v = np.asarray(value, dtype=dtype)
        if v.shape != (n,):
            raise BotaclipError(f"{name} has shape {v.shape}, expected ({n},)")
        return v

    def _relieve_memory(self) -> None:
        by_size = sorted(self._buffers, key=lambda p: -sum(t.nbytes for t in self._buffers[p]))
        for parent in by_size:
            if self._buffered_bytes <= self.max_buffer_bytes // 2:
                break
            self._flush(parent, complete=False)

    def _flush(self, parent: int, complete: bool) -> int:
        pieces = self._buffers.pop(parent, [])
        self._buffered_bytes -= sum(t.nbytes for t in pieces)
        path = partition_path(self.store.path, self.name, parent)
        was_complete = False
        existing = None
        if path.exists():
            was_complete = bool(footer_meta(path).get("complete"))
            if not pieces and (was_complete or not complete):
                return pq.read_metadata(path).num_rows
            existing = pq.read_table(path).cast(self._schema)
        new = pa.concat_tables(pieces) if pieces else self._schema.empty_table()
        new_h3 = new.column("h3").to_numpy()
        if existing is not None and existing.num_rows:
            keep = ~np.isin(existing.column("h3").to_numpy(), new_h3)
            merged = pa.concat_tables([existing.filter(pa.array(keep)), new])
        else:
            merged = new
        if len(pieces) > 1:  # a cell written in two batches before this flush: keep its last row
            h = merged.column("h3").to_numpy()
            _, last = np.unique(h[::-1], return_index=True)
            merged = merged.take(pa.array(np.sort(len(h) - 1 - last)))
        merged = merged.take(pa.array(np.argsort(merged.column("h3").to_numpy(), kind="stable")))
        meta = dict(self._schema.metadata)
        info = json.loads(meta[FOOTER_KEY])
        info.update(parent=f"{parent:x}", complete=bool(complete or was_complete), rows=merged.num_rows)
        meta[FOOTER_KEY] = json.dumps(info, default=str).encode()
        write_parquet_atomic(merged.replace_schema_metadata(meta), path, self.store.path)
        self.rows_written += new.num_rows
        self.partitions_written += 1
        if not self._view_has_files:
            # The catalog view was an empty placeholder; point it at the files now so readers see them.
            state = self.store._read_catalog()
            write_catalog(self.store.catalog_path, state, self.store.path)
            self._view_has_files = True
        return merged.num_rows

