"""The catalog: a small DuckDB database file in the store (tables `store_meta`, `feature_sets`, `partitions`,
`runs`, `feature_set_geometry` (see `geometry.py`), `cross_fits` (cross-fitted adapted sets, see
`Store.cross_fit`), `ann_indexes` (see `ann.py`), and one view per feature set over its Parquet files). Catalogs written before the last two
tables existed read as having none.

DuckDB lets no other process open a database file while one holds it read-write. So nothing ever opens the live
catalog read-write: readers open it read-only (retrying briefly if someone else holds a lock), and the writer (who
holds the store's writer lock) builds a complete new catalog file next to it and renames it over the old one.
Readers that already have the old file open keep a consistent snapshot; new readers see the new one.

`partitions` lists every committed partition file with its rows and bytes, so readers notice a file deleted
behind the store's back (catalogs written before it existed have no such table: their sets are simply not
checked until the next write records them).

Views use absolute paths (DuckDB resolves relative paths against the current directory, not the database file);
they are rewritten with the store's current location whenever a writer rebuilds the catalog, and library
connections shadow them with TEMP views if the store has moved since (see `Store.connect`).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import duckdb
import pyarrow as pa

from botaclip.atomic import fsync_dir
from botaclip.errors import BotaclipError, InvalidInputError, StoreWriteError, root_cause
from botaclip.store.schema import FeatureSetSpec

CATALOG_NAME = "catalog.duckdb"

_TABLES = """
CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE feature_sets (
    name VARCHAR PRIMARY KEY, kind VARCHAR, dtype VARCHAR, dim INTEGER, columns VARCHAR[], extras VARCHAR[],
    provenance VARCHAR, rows BIGINT, partitions BIGINT, bytes BIGINT, created TIMESTAMP, updated TIMESTAMP);
CREATE TABLE partitions (feature_set VARCHAR, parent UBIGINT, rows BIGINT, bytes BIGINT);
CREATE TABLE runs (
    run_id BIGINT, feature_set VARCHAR, pid INTEGER, host VARCHAR, started TIMESTAMP, finished TIMESTAMP,
    status VARCHAR, rows_written BIGINT, partitions_written BIGINT, botaclip_version VARCHAR);
CREATE TABLE feature_set_geometry (
    name VARCHAR PRIMARY KEY, rows BIGINT, sample_rows BIGINT, dim INTEGER, effective_dim DOUBLE, mean_norm DOUBLE,
    mean_cosine DOUBLE, mean DOUBLE[], eigenvalues DOUBLE[], explained_variance_ratio DOUBLE[], axes DOUBLE[][],
    computed TIMESTAMP);
CREATE TABLE cross_fits (
    name VARCHAR PRIMARY KEY, fold_sets VARCHAR[], block_res INTEGER, blocks UBIGINT[], folds BIGINT[],
    releve_cells UBIGINT[], adapter_sha256 VARCHAR, created TIMESTAMP);
CREATE TABLE ann_indexes (
    name VARCHAR PRIMARY KEY, library VARCHAR, library_version VARCHAR, index_type VARCHAR, metric VARCHAR,
    dir VARCHAR, rows BIGINT, dim INTEGER, nlist INTEGER, nprobe INTEGER, source_fingerprint VARCHAR,
    build_seconds DOUBLE, built TIMESTAMP);
"""
_FS_COLS = ("name", "kind", "dtype", "dim", "columns", "extras", "provenance", "rows", "partitions", "bytes",
            "created", "updated")
_RUN_COLS = ("run_id", "feature_set", "pid", "host", "started", "finished", "status", "rows_written",
             "partitions_written", "botaclip_version")
_GEOMETRY_COLS = ("name", "rows", "sample_rows", "dim", "effective_dim", "mean_norm", "mean_cosine", "mean",
                  "eigenvalues", "explained_variance_ratio", "axes", "computed")
_CROSS_FIT_COLS = ("name", "fold_sets", "block_res", "blocks", "folds", "releve_cells", "adapter_sha256", "created")
_ANN_COLS = ("name", "library", "library_version", "index_type", "metric", "dir", "rows", "dim", "nlist", "nprobe",
             "source_fingerprint", "build_seconds", "built")
# Tables added after the first release, with their columns: optional when reading an older catalog.
_OPTIONAL_TABLES = {"feature_set_geometry": _GEOMETRY_COLS, "cross_fits": _CROSS_FIT_COLS, "ann_indexes": _ANN_COLS}


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None, microsecond=0)


@dataclass
class CatalogState:
    """In-memory copy of the catalog tables."""

    meta: dict[str, str] = field(default_factory=dict)
    feature_sets: dict[str, dict] = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    # feature set -> {parent: (rows, bytes)}; a set absent here is not checked (written before this table existed)
    partitions: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    # The geometry and cross-fit tables hold arrays (thousands of numbers per set) that no listing needs, so they
    # are not read into this state: it carries only records to write (``set_record``) or to drop
    # (``drop_record``), and `write_catalog` copies every other record from the catalog it replaces.
    records: dict[str, dict[str, dict]] = field(default_factory=dict)  # table -> name -> new record
    dropped: dict[str, set[str]] = field(default_factory=dict)  # table -> names whose record goes

    def set_record(self, table: str, name: str, record: dict) -> None:
        """Write ``record`` as feature set ``name``'s row of ``table`` (feature_set_geometry or cross_fits)."""
        self.records.setdefault(table, {})[name] = {**record, "name": name}
        self.dropped.get(table, set()).discard(name)

    def copy(self) -> "CatalogState":
        """A copy whose containers can be changed without changing this one (the records in them are shared)."""
        return CatalogState(dict(self.meta), dict(self.feature_sets), list(self.runs), dict(self.partitions),
                            {t: dict(r) for t, r in self.records.items()}, {t: set(d) for t, d in self.dropped.items()})

    def drop_record(self, table: str, name: str) -> None:
        """Remove feature set ``name``'s row of ``table`` (if any) when the catalog is next written."""
        self.records.get(table, {}).pop(name, None)
        self.dropped.setdefault(table, set()).add(name)

    def spec(self, name: str) -> FeatureSetSpec:
        return FeatureSetSpec.from_record(self.feature_sets[name])


def sql_string_literal(text: str) -> str:
    """Quote a string for the few DDL statements DuckDB cannot parameterise (view bodies, LOAD paths).

    Only used for paths the library computes; control characters are refused rather than escaped.
    """
    if any(ord(ch) < 32 for ch in text):
        raise InvalidInputError(f"path {text!r} contains control characters; move the store to a plain path")
    return "'" + text.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """Quote an already-validated identifier."""
    return '"' + name.replace('"', '""') + '"'


def parquet_glob(root: Path, name: str) -> str:
    return str(Path(root).resolve() / "features" / name / "parent=*" / "*.parquet")


def view_select(spec: FeatureSetSpec, root: Path, has_files: bool) -> str:
    """SELECT presenting a feature set as float32 to SQL (dequantising int8 / widening float16)."""
    cols = ["h3"]
    if spec.is_embedding:
        if spec.dtype == "int8":
            cols.append(f"CAST(list_transform(embedding, lambda q: q * embedding_scale) AS FLOAT[{spec.dim}]) "
                        "AS embedding")
        else:
            cols.append(f"CAST(embedding AS FLOAT[{spec.dim}]) AS embedding")
    else:
        cols += [f"CAST({quote_ident(c)} AS FLOAT) AS {quote_ident(c)}" for c in spec.columns]
    cols += list(spec.extras)
    if has_files:
        src = f"read_parquet({sql_string_literal(parquet_glob(root, spec.name))}, hive_partitioning = false)"
        return f"SELECT {', '.join(cols)} FROM {src}"
    # No partition yet: a typed empty relation (a glob that matches nothing is an error in DuckDB).
    return f"SELECT {', '.join(_typed_columns(spec, 'NULL'))} LIMIT 0"


def _typed_columns(spec: FeatureSetSpec, value: str) -> list[str]:
    """`CAST(value AS <type>) AS <column>` for every column the view of `spec` has."""
    types = [("h3", "UBIGINT")]
    if spec.is_embedding:
        types.append(("embedding", f"FLOAT[{spec.dim}]"))
    else:
        types += [(quote_ident(c), "FLOAT") for c in spec.columns]
    types += [(e, "FLOAT" if e == "valid_fraction" else "INTEGER") for e in spec.extras]
    return [f"CAST({value} AS {t}) AS {c}" for c, t in types]


def has_partition_files(root: Path, name: str) -> bool:
    d = Path(root) / "features" / name
    return d.is_dir() and any(d.glob("parent=*/*.parquet"))


CATALOG_ALIAS = "store_catalog"
ERROR_VIEW_PREFIX = "botaclip: "  # starts the message of a damaged set's view, so callers can recognise it


def attach_read_only(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    """ATTACH the database file ``path`` read-only as ``alias`` (an identifier the library chose)."""
    try:
        con.execute(f"ATTACH ? AS {alias} (READ_ONLY)", [str(path)])
    except duckdb.ParserException:  # duckdb < 2 cannot parameterise ATTACH
        con.execute(f"ATTACH {sql_string_literal(str(path))} AS {alias} (READ_ONLY)")


def connect_read_only(path: Path, timeout_s: float = 15.0) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog ATTACHed read-only as `store_catalog` (and USEd).

    ATTACH from a fresh in-memory database, not `duckdb.connect(path)`: the Python client caches database
    instances by path, which would hand back a stale catalog after a writer replaced the file. Retries while
    another process holds a conflicting (read-write) lock.
    """
    con = duckdb.connect()
    try:
        _attach_retrying(con, path, timeout_s)
        con.execute(f"USE {CATALOG_ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


def _attach_retrying(con: duckdb.DuckDBPyConnection, path: Path, timeout_s: float) -> None:
    """ATTACH the catalog ``path`` read-only as `store_catalog` on ``con``, retrying while another process holds
    a conflicting (read-write) lock; a BotaclipError once it gives up or when the file is no catalog."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while not _attach_once(con, path):
        if time.monotonic() >= deadline:
            raise BotaclipError(f"catalog {path} is held read-write by another process (a duckdb session?); "
                                "close it or open it with `duckdb -readonly`, then retry")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _attach_once(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
    """ATTACH the catalog ``path`` read-only as `store_catalog` on ``con``: True once attached, False while
    another process holds a conflicting (read-write) lock; a BotaclipError when the file is no catalog."""
    try:
        attach_read_only(con, path, CATALOG_ALIAS)
        return True
    except duckdb.Error as exc:
        msg = str(exc)
        if "lock" in msg.lower():
            return False
        first = msg.splitlines()[0] if msg else type(exc).__name__
        raise BotaclipError(f"{path} is not a readable botaclip catalog: {first}") from None


class _KeptConnection:
    """One in-memory DuckDB connection per process that brief catalog reads ATTACH the catalog file to, one read
    at a time. Making an in-memory DuckDB database costs some 40 ms (it registers every built-in function), an
    ATTACH and DETACH some 4 ms, and a pipeline run reads its store's catalog hundreds of times.

    A read that cannot use it at once takes a connection of its own instead (:func:`_attached`), so that no read
    waits for another. Closed before the process forks (a child that opens a database file while its parent
    holds a live DuckDB instance can hang), and never used by a child: the child makes its own."""

    def __init__(self):
        self.lock = threading.Lock()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.pid = os.getpid()
        self._held_for_fork = False

    def attach(self, path: Path) -> duckdb.DuckDBPyConnection | None:
        """The kept connection with ``path`` attached, held for this read until :meth:`release`; None (and not
        held) while another read holds it or another process holds the catalog read-write."""
        if not self.lock.acquire(blocking=False):
            return None
        try:
            if self.con is None or self.pid != os.getpid():
                self.con, self.pid = duckdb.connect(), os.getpid()
            self.con.execute(f"DETACH DATABASE IF EXISTS {CATALOG_ALIAS}")  # left by an interrupted read
            if _attach_once(self.con, path):
                return self.con
        except BotaclipError:
            self.lock.release()
            raise
        except BaseException:  # interrupted or broken: the next read starts from a new connection
            self._drop()
            self.lock.release()
            raise
        self.lock.release()
        return None

    def release(self) -> None:
        try:
            self.con.execute(f"DETACH DATABASE IF EXISTS {CATALOG_ALIAS}")
        except BaseException:
            self._drop()
            raise
        finally:
            self.lock.release()

    def _drop(self) -> None:
        try:
            if self.con is not None and self.pid == os.getpid():
                self.con.close()
        finally:
            self.con = None

    def before_fork(self) -> None:
        # A read takes milliseconds; a lock still held after seconds was left by a read interrupted between two
        # bytecodes, and the fork goes on without closing the connection rather than wait for ever.
        self._held_for_fork = self.lock.acquire(timeout=FORK_WAIT_S)
        if self._held_for_fork:
            self._drop()

    def after_fork_in_parent(self) -> None:
        if self._held_for_fork:
            self.lock.release()

    def after_fork_in_child(self) -> None:
        self.lock = threading.Lock()
        self.con = None


#: The longest a fork waits for a catalog read in another thread to finish (seconds).
FORK_WAIT_S = 5.0
_KEPT = _KeptConnection()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_KEPT.before_fork, after_in_parent=_KEPT.after_fork_in_parent,
                        after_in_child=_KEPT.after_fork_in_child)


@contextmanager
def _attached(path: Path, timeout_s: float = 15.0):
    """The catalog ``path`` ATTACHed read-only as `store_catalog` for the ``with`` block, then DETACHed: each
    read opens the file as it is then, so a replaced catalog is never served stale. On the connection kept for
    such reads (see :class:`_KeptConnection`), or, while another read holds it or another process holds the
    catalog read-write (the wait of up to ``timeout_s`` seconds), on a connection of its own."""
    con = _KEPT.attach(path)
    if con is None:
        con = connect_read_only(path, timeout_s)
        try:
            yield con
        finally:
            con.close()
        return
    try:
        yield con
    finally:
        _KEPT.release()


def load_state(con: duckdb.DuckDBPyConnection, path: Path) -> CatalogState:
    """Read the catalog tables from an open connection on the catalog file."""
    state = CatalogState()
    try:
        state.meta = dict(con.execute(f"SELECT key, value FROM {CATALOG_ALIAS}.main.store_meta").fetchall())
        fs_sql = f"SELECT {', '.join(_FS_COLS)} FROM {CATALOG_ALIAS}.main.feature_sets ORDER BY name"
        for row in con.execute(fs_sql).fetchall():
            rec = dict(zip(_FS_COLS, row))
            rec["provenance"] = json.loads(rec["provenance"] or "{}")
            state.feature_sets[rec["name"]] = rec
        runs_sql = f"SELECT {', '.join(_RUN_COLS)} FROM {CATALOG_ALIAS}.main.runs ORDER BY run_id"
        for row in con.execute(runs_sql).fetchall():
            state.runs.append(dict(zip(_RUN_COLS, row)))
        has_partitions = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'partitions'",
            [CATALOG_ALIAS]).fetchall()[0][0]
        if has_partitions:  # through Arrow: a large store lists tens of thousands of partitions
            t = con.sql(f"SELECT feature_set, parent, rows, bytes FROM {CATALOG_ALIAS}.main.partitions").arrow()
            t = t.read_all() if hasattr(t, "read_all") else t  # duckdb 2 returns a RecordBatchReader
            for name, parent, rows, size in zip(*(t.column(i).to_pylist() for i in range(4))):
                state.partitions.setdefault(name, {})[parent] = (rows, size)
    except duckdb.Error as exc:
        raise BotaclipError(f"{path} is not a botaclip catalog ({str(exc).splitlines()[0]})") from None
    return state


def read_record(path: Path, table: str, name: str) -> dict | None:
    """Feature set ``name``'s row of ``table`` (feature_set_geometry or cross_fits), None if it has none (or the
    catalog predates the table)."""
    cols = _OPTIONAL_TABLES[table]
    with _attached(path) as con:
        try:
            present = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                                  [CATALOG_ALIAS, table]).fetchone()[0]
            if not present:
                return None
            row = con.execute(f"SELECT {', '.join(cols)} FROM {CATALOG_ALIAS}.main.{table} WHERE name = ?",
                              [name]).fetchone()
        except duckdb.Error as exc:
            raise BotaclipError(f"{path} is not a botaclip catalog ({str(exc).splitlines()[0]})") from None
    return None if row is None else dict(zip(cols, row))


def read_catalog(path: Path) -> CatalogState:
    """Load the catalog tables (read-only, briefly)."""
    with _attached(path) as con:
        return load_state(con, path)


def write_catalog(path: Path, state: CatalogState, root: Path) -> None:
    """Write `state` as a fresh catalog file and atomically replace `path` with it (caller holds the writer lock).

    On any failure (a full disk, a read-only directory) the old catalog stays in place, no temporary file is
    left behind, and a :class:`StoreWriteError` says why.
    """
    tmp_dir = Path(root) / ".tmp"
    tmp = tmp_dir / f"catalog-{os.getpid()}-{time.monotonic_ns()}.duckdb"
    try:
        tmp_dir.mkdir(exist_ok=True)
        _build_catalog(tmp, state, root)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, duckdb.Error) as exc:
        raise StoreWriteError(f"cannot write the catalog of store {root}: {root_cause(exc)} (the catalog was not "
                              "changed)") from None
    finally:
        for leftover in (tmp, Path(str(tmp) + ".wal")):
            if leftover.exists():
                leftover.unlink()
    stale_wal = Path(str(path) + ".wal")
    if stale_wal.exists():  # a WAL left by a crashed read-write session belongs to the old file
        stale_wal.unlink()
    fsync_dir(Path(path).parent)


def _build_catalog(tmp: Path, state: CatalogState, root: Path) -> None:
    con = duckdb.connect(str(tmp))
    try:
        con.execute(_TABLES)
        _insert_rows(con, "store_meta", ("key", "value"), [[k, str(v)] for k, v in state.meta.items()])
        rows = []
        for rec in state.feature_sets.values():
            row = dict(rec)
            row["provenance"] = json.dumps(rec.get("provenance") or {}, default=str, sort_keys=True)
            rows.append([row.get(c) for c in _FS_COLS])
        _insert_rows(con, "feature_sets", _FS_COLS, rows)
        parts = [(name, parent, rows, size) for name, recs in state.partitions.items() if name in state.feature_sets
                 for parent, (rows, size) in sorted(recs.items())]
        if parts:  # one Arrow insert: a large store lists tens of thousands of partitions
            names, parents, rows, sizes = zip(*parts)
            con.register("_partitions", pa.table({"feature_set": pa.array(names, pa.string()),
                                                  "parent": pa.array(parents, pa.uint64()),
                                                  "rows": pa.array(rows, pa.int64()),
                                                  "bytes": pa.array(sizes, pa.int64())}))
            con.execute("INSERT INTO partitions SELECT * FROM _partitions")
            con.unregister("_partitions")
        _insert_rows(con, "runs", _RUN_COLS, [[r.get(c) for c in _RUN_COLS] for r in state.runs])
        _write_records(con, state, Path(root) / CATALOG_NAME)  # records kept from the catalog replaced
        for name in state.feature_sets:
            create_view(con, "VIEW", state.spec(name), root)
        con.execute("CHECKPOINT")
    finally:
        con.close()


#: Rows per INSERT statement of a catalog table: one statement per row costs DuckDB 2-4 ms each (most of a
#: catalog write of a store with tens of feature sets and runs), one per batch about as much in all.
_INSERT_BATCH = 200


def _insert_rows(con: duckdb.DuckDBPyConnection, table: str, cols: Sequence[str], rows: list[list]) -> None:
    """INSERT ``rows`` (each a list of values in the order of ``cols``) into ``table``, as parameters, a batch
    of rows per statement."""
    one = f"({', '.join('?' * len(cols))})"
    for start in range(0, len(rows), _INSERT_BATCH):
        batch = rows[start:start + _INSERT_BATCH]
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES {', '.join([one] * len(batch))}",
                    [value for row in batch for value in row])


def create_view(con: duckdb.DuckDBPyConnection, kind: str, spec: FeatureSetSpec, root: Path,
                damaged: str | None = None) -> None:
    """CREATE (`kind` = "VIEW" or "OR REPLACE TEMP VIEW") the view of one feature set.

    DuckDB reads a Parquet file's schema when a view is created, so a damaged file would make the whole catalog
    unwritable; such a set (or one whose partitions are known to be missing: `damaged` says why) gets a view of
    the same columns that raises that one-line reason whenever it is queried, and the other sets stay usable.
    """
    name = quote_ident(spec.name)
    if damaged is None:
        try:
            con.execute(f"CREATE {kind} {name} AS {view_select(spec, root, has_partition_files(root, spec.name))}")
            return
        except duckdb.Error as exc:
            damaged = (f"feature set {spec.name!r} has a damaged partition file ({root_cause(exc)}); run "
                       f"`botaclip store verify {root} --repair`")
    con.execute(f"CREATE {kind} {name} AS {error_select(spec, damaged)}")


def error_select(spec: FeatureSetSpec, message: str) -> str:
    """A SELECT with the feature set's columns that raises `message` as soon as any row or column is read."""
    fail = f"error({sql_string_literal(ERROR_VIEW_PREFIX + ' '.join(message.split()))})"
    # Every column and the filter call error(), so no projection or predicate lets the optimiser skip it.
    return f"SELECT {', '.join(_typed_columns(spec, fail))} FROM range(1) WHERE {fail} IS NULL"


def _write_records(con: duckdb.DuckDBPyConnection, state: CatalogState, old_catalog: Path) -> None:
    """Fill the geometry and cross-fit tables of a new catalog: the state's new records, and every other record of
    the catalog being replaced (copied in SQL, arrays never through Python) unless dropped; records of sets no
    longer in the catalog go with them."""
    names = list(state.feature_sets)
    if old_catalog.is_file():
        attach_read_only(con, old_catalog, "old_catalog")
        try:
            present = {r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'old_catalog'").fetchall()}
            for table, cols in _OPTIONAL_TABLES.items():
                if table not in present:
                    continue
                keep = [n for n in names if n not in state.records.get(table, {})
                        and n not in state.dropped.get(table, set())]
                if keep:
                    con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM "
                                f"old_catalog.main.{table} WHERE list_contains(?, name)", [keep])
        finally:
            con.execute("DETACH old_catalog")
    for table, records in state.records.items():
        cols = _OPTIONAL_TABLES[table]
        # a record of a set that is gone goes with it
        _insert_rows(con, table, cols, [[rec.get(c) for c in cols] for name, rec in records.items()
                                        if name in state.feature_sets])

