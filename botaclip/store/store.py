"""`Store`: an H3-keyed feature store in a directory (Parquet feature sets + a DuckDB catalog).

See docs/store.md for the layout, the schema of a feature set, and the concurrency rules.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, StoreDamagedError, StoreWriteError
from botaclip.store import h3vec
from botaclip.store.catalog import (
    CATALOG_NAME,
    CatalogState,
    connect_read_only,
    create_view,
    load_state,
    read_catalog,
    read_record,
    utcnow,
    write_catalog,
)
from botaclip.store.damage import missing_error, missing_partitions, read_footer, read_partition_table
from botaclip.store.h3sql import register_h3_functions
from botaclip.store.layout import partition_path
from botaclip.store.lock import WriterLock
from botaclip.store.schema import SCHEMA_VERSION, FeatureSetSpec
from botaclip.store.writer import FeatureSetWriter

STORE_FORMAT = "botaclip-store"


@dataclass(frozen=True)
class WriterOptions:
    """The rarely used flags of :meth:`Store.writer`, given to it as keywords."""

    atomic: bool = False  # an addition to a set is all or nothing
    max_buffer_bytes: int | None = None  # rows buffered before a flush (None: the writer's default)
    geometry: bool = True  # recompute an embedding set's geometry statistics on close


class FeatureMatrix(tuple):
    """`(h3, X, columns)` as returned by `Store.features_numpy`, plus `found` (bool mask of rows that exist)."""

    def __new__(cls, h3: np.ndarray, X: np.ndarray, columns: list[str], found: np.ndarray):
        obj = super().__new__(cls, (h3, X, columns))
        obj.found = found
        return obj

    h3 = property(lambda self: self[0])
    X = property(lambda self: self[1])
    columns = property(lambda self: self[2])


class Store:
    """A feature store directory. Create with `Store.create`, open with `Store.open`."""

    def __init__(self, path: Path, meta: dict, read_only: bool) -> None:
        self.path = Path(path).resolve()
        self.read_only = read_only
        self.resolution = int(meta["resolution"])
        self.partition_resolution = int(meta["partition_resolution"])
        self.schema_version = int(meta["schema_version"])

    # ---- creation and opening ------------------------------------------------------------------------------

    @property
    def catalog_path(self) -> Path:
        return self.path / CATALOG_NAME

    @classmethod
    def create(cls, path: str | os.PathLike, resolution: int = 10, partition_resolution: int | None = None) -> "Store":
        """Create an empty store at `path` (a new or empty directory) keyed by H3 cells at `resolution` (0-15),
        partitioned by parent cells at `partition_resolution` (default: resolution - 4, at least 0)."""
        path = Path(path)
        if not isinstance(resolution, int) or not 0 <= resolution <= 15:
            raise InvalidInputError(f"H3 resolution must be an integer 0-15, got {resolution!r}")
        if partition_resolution is None:
            partition_resolution = max(0, resolution - 4)
        if not 0 <= int(partition_resolution) <= resolution:
            raise InvalidInputError(f"partition resolution must be between 0 and the resolution {resolution}, "
                                    f"got {partition_resolution}")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInputError(f"{path} already exists and is not an empty directory; "
                                    "choose a new path (or open the existing store)")
        if any(ch in str(path.resolve()) for ch in "*?[]{}"):
            raise InvalidInputError(f"store path {path} contains glob characters (*?[]{{}}); choose a plain path")
        from botaclip.store.outputs import check_output_path, store_containing

        outer = store_containing(path)
        if outer is None or not path.resolve().is_relative_to(outer / ".tmp"):  # a writer's scratch store is fine
            check_output_path(path, what="new store", is_dir=True)
        try:
            (path / "features").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreWriteError(f"cannot create store directory {path}: {exc.strerror}") from None
        meta = {"format": STORE_FORMAT, "schema_version": SCHEMA_VERSION, "resolution": resolution,
                "partition_resolution": int(partition_resolution), "created": utcnow().isoformat(),
                "root": str(path.resolve())}
        with WriterLock(path):
            write_catalog(path / CATALOG_NAME, CatalogState(meta={k: str(v) for k, v in meta.items()}), path)
        return cls(path, meta, read_only=False)

    @classmethod
    def open(cls, path: str | os.PathLike, read_only: bool = False) -> "Store":
        """Open an existing store; a clear error if `path` is not a store or was written by a newer botaclip."""
        path = Path(path)
        if not path.is_dir():
            error = InvalidInputError if path.exists() else MissingFileError
            raise error(f"{path} is not a directory; create a store with `botaclip store create {path}`")
        if not (path / CATALOG_NAME).is_file():
            raise InvalidInputError(f"{path} is not a botaclip store (no {CATALOG_NAME}); "
                                    f"create one with `botaclip store create {path}`")
        if (path / "features").exists() and not (path / "features").is_dir():
            raise StoreDamagedError(f"{path / 'features'} is a file, but it must be the store's directory of "
                                    "feature sets; move that file away (the store cannot be read or written)")
        state = read_catalog(path / CATALOG_NAME)
        meta = state.meta
        if meta.get("format") != STORE_FORMAT:
            raise InvalidInputError(f"{path} is not a botaclip store (catalog format {meta.get('format')!r})")
        version = int(meta.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise BotaclipError(f"store {path} has schema version {version}, newer than this botaclip supports "
                                f"({SCHEMA_VERSION}); upgrade botaclip to read it")
        store = cls(path, meta, read_only=read_only)
        if not read_only and meta.get("root") != str(store.path):
            store._refresh_catalog_paths(state)
        return store

    def _refresh_catalog_paths(self, state: CatalogState) -> None:
        """The store moved: rewrite the views' absolute paths (skipped if a writer is busy; it will do it)."""
        lock = WriterLock(self.path)
        try:
            lock.acquire()
        except BotaclipError:
            return
        try:
            state = self.catalog()
            state.meta["root"] = str(self.path)
            write_catalog(self.catalog_path, state, self.path)
        finally:
            lock.release()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, resolution={self.resolution}, " \
               f"partition_resolution={self.partition_resolution})"

    # ---- catalog -------------------------------------------------------------------------------------------

    def catalog(self) -> CatalogState:
        """The catalog as it is now: ``meta`` (store settings), ``feature_sets`` (name -> record: kind, dim or
        columns, dtype, provenance, rows, partitions, bytes, created, updated), ``partitions`` (name -> {parent:
        (rows, bytes)} of every committed file) and ``runs`` (writer runs, oldest first).

        A snapshot read fresh on each call: changing it changes nothing in the store. Only a writer holding the
        store's writer lock (`FeatureSetWriter`, `verify(repair=True)`, `record_cross_fit`) rewrites the catalog.
        """
        return read_catalog(self.catalog_path)

    def feature_sets(self) -> list[str]:
        """Names of the feature sets in the store, sorted."""
        return sorted(self.catalog().feature_sets)

    def spec(self, name: str) -> FeatureSetSpec:
        """The spec (kind, dim or columns, dtype, provenance) of feature set `name`."""
        return self._spec(self.catalog(), name)

    def _spec(self, state: CatalogState, name: str) -> FeatureSetSpec:
        if name not in state.feature_sets:
            known = ", ".join(sorted(state.feature_sets)) or "none"
            raise InvalidInputError(f"no feature set {name!r} in store {self.path} (feature sets: {known})")
        return state.spec(name)

    def _files(self, name: str) -> tuple[FeatureSetSpec, dict[int, Path]]:
        """The spec of `name` and its partition files, after checking that every partition the catalog lists is
        there (a StoreDamagedError names a missing one instead of answering with fewer cells)."""
        for attempt in range(2):
            state = self.catalog()
            spec = self._spec(state, name)
            files, missing = missing_partitions(self.path, name, state.partitions.get(name))
            if not missing:
                return spec, files
            if attempt == 0:  # a writer may be swapping a replacement in right now: look once more
                time.sleep(0.05)
        raise missing_error(self.path, name, missing)

    def _live_counts(self, name: str, state: CatalogState) -> dict:
        """Rows, partitions and bytes counted from the files now; `damaged` and `missing` list the relative paths
        of unreadable partition files and of catalogued ones that are gone (not counted)."""
        files, missing = missing_partitions(self.path, name, state.partitions.get(name))
        rows = size = 0
        damaged = []
        for path in files.values():
            try:
                rows += pq.read_metadata(path).num_rows
                size += path.stat().st_size
            except (OSError, pa.ArrowException):
                damaged.append(str(path.relative_to(self.path)))
        return {"rows": rows, "partitions": len(files) - len(damaged), "bytes": size, "damaged": damaged,
                "missing": [str(partition_path(Path("."), name, p)) for p in missing]}

    def info(self, name: str) -> dict:
        """kind, dim or columns, dtype, rows, partitions, bytes on disk, provenance, created/updated of `name`
        (rows and bytes are counted from the files now, so they include a running writer's partitions), and
        `damaged` / `missing`: partition files that cannot be read or have disappeared (see `store verify`)."""
        state = self.catalog()
        spec = self._spec(state, name)
        rec = state.feature_sets[name]
        out = {"name": name, "kind": spec.kind, "dtype": spec.dtype, "extras": list(spec.extras),
               "provenance": spec.provenance, "created": str(rec["created"]), "updated": str(rec["updated"])}
        out.update({"dim": spec.dim} if spec.is_embedding else {"columns": list(spec.columns)})
        out.update(self._live_counts(name, state))
        return out

    def runs(self) -> list[dict]:
        """Writer runs recorded in the catalog (oldest first)."""
        return self.catalog().runs

    # ---- geometry and cross-fitting records ----------------------------------------------------------------

    def geometry(self, name: str) -> dict | None:
        """Geometry statistics of embedding set `name`, computed when it was last written (None for column sets
        and sets written before botaclip kept them).

        Keys: rows, sample_rows (rows behind the spectrum), dim, mean (float64 [D], of the unit embeddings),
        mean_norm, mean_cosine (over pairs of distinct rows), eigenvalues (float64 [D], PCA spectrum, largest
        first), explained_variance_ratio [D], effective_dim (participation ratio (sum l)^2 / sum l^2), axes
        (float64 [q, D], the first principal axes), computed (UTC timestamp). See `botaclip.store.geometry`.
        """
        self.spec(name)
        rec = read_record(self.catalog_path, "feature_set_geometry", name)
        if rec is None:
            return None
        out = dict(rec)
        for key in ("mean", "eigenvalues", "explained_variance_ratio"):
            out[key] = np.asarray(rec[key], dtype=np.float64)
        out["axes"] = np.asarray(rec["axes"], dtype=np.float64).reshape(-1, int(rec["dim"]))
        return out

    def cross_fit(self, name: str) -> dict | None:
        """The cross-fit of adapted set `name`, or None when it was not made with a cross-fitted adapter.

        Returns {"fold_sets": [K names; fold k's adapter never saw relevés of blocks in fold k],
        "block_res": int (H3 resolution of the blocks), "blocks": uint64 [B] (H3 cells at block_res holding
        training relevés), "folds": int64 [B] (fold of each block, 0..K-1), "releve_cells": uint64 [R] (cells of
        the training relevés at the store resolution, sorted, unique)}.
        """
        self.spec(name)
        rec = read_record(self.catalog_path, "cross_fits", name)
        if rec is None:
            return None
        return {"fold_sets": list(rec["fold_sets"]), "block_res": int(rec["block_res"]),
                "blocks": np.asarray(rec["blocks"], dtype=np.uint64),
                "folds": np.asarray(rec["folds"], dtype=np.int64),
                "releve_cells": np.asarray(rec["releve_cells"], dtype=np.uint64)}

    def record_cross_fit(self, name: str, fold_sets: list[str], block_res: int, blocks, folds, releve_cells,
                         adapter_sha256: str | None = None) -> None:
        """Record that adapted set `name` comes with companion sets `fold_sets` (fold k's adapter never saw the
        relevés of the blocks whose fold is k); arguments as returned by `cross_fit`. Takes the writer lock."""
        if self.read_only:
            raise InvalidInputError(f"store {self.path} was opened read-only; open it with read_only=False to write")
        blocks = h3vec.as_cells(blocks)
        folds = np.asarray(folds, dtype=np.int64)
        cells = np.unique(h3vec.as_cells(releve_cells))
        k = len(fold_sets)
        if k < 2 or len(set(fold_sets)) != k or name in fold_sets:
            raise InvalidInputError(f"cross-fit of {name!r} needs at least two distinct fold sets, got {fold_sets}")
        if blocks.shape != folds.shape or blocks.size == 0:
            raise InvalidInputError(f"cross-fit of {name!r}: {blocks.size} blocks but {folds.size} fold numbers")
        if folds.min() < 0 or folds.max() >= k or len(np.unique(blocks)) != blocks.size:
            raise InvalidInputError(f"cross-fit of {name!r}: fold numbers must be 0..{k - 1}, one per distinct block")
        if not (h3vec.is_valid_cell(blocks).all() and (h3vec.get_resolution(blocks) == int(block_res)).all()):
            raise InvalidInputError(f"cross-fit of {name!r}: blocks are not H3 cells at resolution {block_res}")
        if cells.size and (h3vec.get_resolution(cells) != self.resolution).any():
            raise InvalidInputError(f"cross-fit of {name!r}: relevé cells are not at the store resolution "
                                    f"{self.resolution}")
        with WriterLock(self.path):
            state = self.catalog()
            missing = [n for n in [name, *fold_sets] if n not in state.feature_sets]
            if missing:
                raise InvalidInputError(f"cannot record the cross-fit of {name!r}: no feature set {missing[0]!r}")
            state.set_record("cross_fits", name, {
                "fold_sets": list(fold_sets), "block_res": int(block_res), "blocks": [int(b) for b in blocks],
                "folds": [int(f) for f in folds], "releve_cells": [int(c) for c in cells],
                "adapter_sha256": adapter_sha256, "created": utcnow()})
            write_catalog(self.catalog_path, state, self.path)

    # ---- writing -------------------------------------------------------------------------------------------

    def writer(self, name: str, kind: str, *, dim: int | None = None, columns: list[str] | None = None,
               dtype: str = "float32", provenance: dict | None = None, overwrite: bool = False,
               **options) -> FeatureSetWriter:
        """A streaming writer for feature set `name` (takes the store's writer lock until closed).

        kind: backbone | botaclip | covariates | imported | predictions | location. Give `dim` for embeddings or
        `columns` for named numeric features; `dtype` is the on-disk precision (float32, float16, int8 = embeddings only).
        An existing set with a different kind/dim/columns/dtype/model is refused unless `overwrite`, which builds
        the new set aside and swaps it in when the writer closes without error (a failed or empty replacement
        keeps the old set). `options` are the fields of :class:`WriterOptions`: `atomic=True` does the same for
        an addition to a set (all of it or nothing); `geometry`: recompute an embedding set's geometry statistics
        on close (see `Store.geometry`); `max_buffer_bytes`: rows buffered before a flush.
        """
        opts = WriterOptions(**options)
        spec = FeatureSetSpec(name=name, kind=kind, dtype=dtype, dim=dim,
                              columns=tuple(columns) if columns is not None else None, provenance=provenance or {})
        kw = {} if opts.max_buffer_bytes is None else {"max_buffer_bytes": opts.max_buffer_bytes}
        return FeatureSetWriter(self, spec, overwrite=overwrite, atomic=opts.atomic, geometry=opts.geometry, **kw)

    # ---- partitions ----------------------------------------------------------------------------------------

    def partition_of(self, h3) -> np.ndarray:
        """Coarse parent (at `partition_resolution`) of each uint64 cell: the partition key."""
        cells = h3vec.as_cells(h3)
        return h3vec.cell_to_parent(cells, self.partition_resolution)

    def partitions(self, name: str) -> set[int]:
        """Partitions of `name` marked complete: finished with `finish_partition`, or written when a writer closed
        normally. A partition flushed early (memory bound) or by a failed run is listed only once finished."""
        _, files = self._files(name)
        return {p for p, f in files.items() if read_footer(self.path, name, f).get("complete")}

    def partition_table(self, name: str, parent: int, columns: list[str] | None = None) -> pa.Table | None:
        """The rows of partition `parent` of `name` as stored (sorted by cell, embeddings as written: int8 with
        their scale, float16 ...; decode them with ``spec(name).decode``), or None when it has no file.

        Reads that one file (only `columns` if given) without a catalog round trip: cheap enough to call once per
        partition while a writer is busy. A StoreDamagedError names a file that cannot be read.
        """
        path = partition_path(self.path, name, int(parent))
        if not path.is_file():
            return None
        return read_partition_table(self.path, name, path, columns)

    def partition_cells(self, name: str, parent: int) -> np.ndarray:
        """uint64 cells that partition `parent` of `name` holds on disk now, sorted (empty when it has no file).

        One small read and no catalog round trip (see `partition_table`); `existing_cells(name, parent)` gives the
        same cells after checking the catalog (it reports a catalogued partition whose file is gone)."""
        table = self.partition_table(name, parent, ["h3"])
        if table is None:
            return np.zeros(0, dtype=np.uint64)
        return np.sort(table.column("h3").to_numpy().astype(np.uint64))

    def existing_cells(self, name: str, parent: int | None = None) -> np.ndarray:
        """uint64 cells of `name` on disk now, sorted (only partition `parent`'s if given: one small read)."""
        _, files = self._files(name)
        if parent is not None:
            files = {int(parent): files[int(parent)]} if int(parent) in files else {}
        if not files:
            return np.zeros(0, dtype=np.uint64)
        parts = [read_partition_table(self.path, name, f, ["h3"]).column("h3").to_numpy() for f in files.values()]
        return np.sort(np.concatenate(parts).astype(np.uint64))

    # ---- reading -------------------------------------------------------------------------------------------

    def iter_partitions(self, name: str, columns: list[str] | None = None
                        ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (parent, h3 uint64[n], X float32[n, F]) one partition at a time (memory bounded).

        `columns` selects named columns of a covariate set (default all); ignored for embeddings.
        """
        spec, files = self._files(name)
        cols = self._check_columns(spec, columns)
        for parent, path in files.items():
            table = self._read_file(path, spec, cols)
            yield parent, table.column("h3").to_numpy().astype(np.uint64), spec.decode(table, cols)

    def _check_columns(self, spec: FeatureSetSpec, columns: list[str] | None) -> list[str] | None:
        if columns is None or spec.is_embedding:
            return None
        unknown = [c for c in columns if c not in spec.columns]
        if unknown:
            raise InvalidInputError(f"feature set {spec.name!r} has no columns {unknown} (columns: {list(spec.columns)})")
        return list(columns)

    def _read_file(self, path: Path, spec: FeatureSetSpec, cols: list[str] | None = None,
                   with_extras: bool = False) -> pa.Table:
        if spec.is_embedding:
            need = ["h3", "embedding"] + (["embedding_scale"] if spec.dtype == "int8" else [])
        else:
            need = ["h3"] + (cols or list(spec.columns))
        if with_extras:
            need += list(spec.extras)
        return read_partition_table(self.path, spec.name, path, need)

    def _lookup(self, name: str, cells: np.ndarray):
        """Rows for `cells` in their order: (found bool[n], X float32[n, F] with NaN where missing, extras)."""
        spec, files = self._files(name)
        names = spec.feature_names()
        n = len(cells)
        X = np.full((n, len(names)), np.nan, dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        extras = {e: np.full(n, np.nan) for e in spec.extras}  # float64, NaN = null
        parents = self.partition_of(cells)
        for parent in np.unique(parents):
            path = files.get(int(parent))
            if path is None:
                continue
            idx = np.flatnonzero(parents == parent)
            table = self._read_file(path, spec, with_extras=True)
            fh3 = table.column("h3").to_numpy().astype(np.uint64)  # sorted on disk
            pos = np.clip(np.searchsorted(fh3, cells[idx]), 0, max(len(fh3) - 1, 0))
            hit = (fh3[pos] == cells[idx]) if len(fh3) else np.zeros(len(idx), bool)
            if not hit.any():
                continue
            rows = pos[hit]
            sub = table.take(pa.array(rows))
            X[idx[hit]] = spec.decode(sub)
            found[idx[hit]] = True
            for e in spec.extras:
                extras[e][idx[hit]] = sub.column(e).cast(pa.float64()).to_numpy(zero_copy_only=False)
        return spec, found, X, extras

    def features_numpy(self, name: str, cells=None) -> FeatureMatrix:
        """(h3 uint64[N], X float32[N, F], column_names) for models; `.found` marks rows that exist.

        With `cells`, rows follow that order and cells not in the store get NaN rows (found = False); without,
        every row of the feature set, sorted by partition then cell. Embedding columns are named e0..e{D-1}.
        """
        spec = self.spec(name)
        if cells is None:
            hs, xs = [], []
            for _, h, x in self.iter_partitions(name):
                hs.append(h)
                xs.append(x)
            F = len(spec.feature_names())
            h = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
            X = np.concatenate(xs) if xs else np.zeros((0, F), np.float32)
            return FeatureMatrix(h, X, spec.feature_names(), np.ones(len(h), dtype=bool))
        cells = self._as_cells(cells)
        _, found, X, _ = self._lookup(name, cells)
        return FeatureMatrix(cells, X, spec.feature_names(), found)

    def features(self, name: str, cells=None, points=None) -> pa.Table:
        """Features as an Arrow table: h3, then `embedding` (fixed-size list of float32) or float32 columns, then
        the kind's extras.

        - no argument: the whole feature set;
        - `cells`: the rows of those cells that exist, in the order given;
        - `points=(lat, lng)` (degrees): one row per point (lat, lng, h3 of the containing cell, features;
          null features where that cell is not stored).
        """
        spec = self.spec(name)
        if cells is not None and points is not None:
            raise InvalidInputError("give cells or points, not both")
        if points is not None:
            lat, lng = (np.asarray(a, dtype=np.float64) for a in points)
            if lat.shape != lng.shape or lat.ndim != 1:
                raise InvalidInputError("points must be two 1-D arrays (lat, lng) of the same length, in degrees")
            cells, ok = h3vec.latlng_to_cell(lat, lng, self.resolution)
            if not ok.all():
                raise InvalidInputError(f"{int((~ok).sum())} points have non-finite coordinates")
            _, found, X, extras = self._lookup(name, cells)
            return self._to_table(spec, cells, X, extras, found,
                                  prefix={"lat": pa.array(lat), "lng": pa.array(lng)})
        if cells is None:
            fm = self.features_numpy(name)
            h, X, found = fm.h3, fm.X, fm.found
            _, _, _, extras = self._lookup(name, h) if spec.extras else (None, None, None, {})
        else:
            cells = self._as_cells(cells)
            _, found, X, extras = self._lookup(name, cells)
            h, X = cells[found], X[found]
            extras = {k: v[found] for k, v in extras.items()}
            found = np.ones(len(h), dtype=bool)
        return self._to_table(spec, h, X, extras, found)

    @staticmethod
    def _to_table(spec: FeatureSetSpec, h3: np.ndarray, X: np.ndarray, extras: dict, found: np.ndarray,
                  prefix: dict | None = None) -> pa.Table:
        cols = dict(prefix or {})
        cols["h3"] = pa.array(h3, pa.uint64())
        missing = ~found
        if spec.is_embedding:
            emb = pa.FixedSizeListArray.from_arrays(pa.array(np.nan_to_num(X).ravel(), pa.float32()), spec.dim)
            if missing.any():
                emb = pa.array(emb.to_pylist(), pa.list_(pa.float32(), spec.dim), mask=missing)
            cols["embedding"] = emb
        else:
            for j, c in enumerate(spec.columns):
                cols[c] = pa.array(X[:, j], pa.float32(), mask=np.isnan(X[:, j]))
        for e, v in extras.items():
            null = missing | np.isnan(v)
            if e == "valid_fraction":
                cols[e] = pa.array(v.astype(np.float32), pa.float32(), mask=null)
            else:
                cols[e] = pa.array(np.where(null, 0, v).astype(np.int32), pa.int32(), mask=null)
        return pa.table(cols)

    def _as_cells(self, cells) -> np.ndarray:
        try:
            out = h3vec.as_cells(cells)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"cells must be uint64 H3 ids or hex strings: {exc}") from None
        return np.atleast_1d(out)

    # ---- SQL -----------------------------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection on the catalog (read-only) with every feature-set view and the H3 functions.

        Views are re-created as TEMP views pointing at this store's current location and files, so they work
        even if the store was moved or a writer has added a feature set's first partition since the catalog
        was written. The connection sees the catalog tables as of when it was opened.
        """
        con = connect_read_only(self.catalog_path)
        try:
            con.execute("SET enable_progress_bar = false")  # it would interleave with CLI output
            register_h3_functions(con)
            state = load_state(con, self.catalog_path)
            for name in state.feature_sets:
                _, missing = missing_partitions(self.path, name, state.partitions.get(name))
                damaged = str(missing_error(self.path, name, missing)) if missing else None
                create_view(con, "OR REPLACE TEMP VIEW", state.spec(name), self.path, damaged)
        except BaseException:
            con.close()
            raise
        return con

    def verify(self, repair: bool = False):
        """Check every file, the catalog counts and cell uniqueness; with `repair`, set damaged partitions aside
        and update the catalog so that the rest stays usable. See `botaclip.store.verify`."""
        from botaclip.store.verify import repair_store, verify_store

        if repair:
            if self.read_only:
                raise InvalidInputError(f"store {self.path} was opened read-only; open it with read_only=False to repair")
            return repair_store(self)
        return verify_store(self)
