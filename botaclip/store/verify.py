"""`verify_store`: read every partition file and check it against the catalog.

Problems (the store is not valid): an unreadable file, a schema that differs from the catalog, a cell outside its
partition or at the wrong resolution, a duplicate cell, a missing view, feature data the catalog does not know, or
a row count that differs from the catalog after a run that finished. A count that lags after a run that was
interrupted (killed) is only a warning: the files are the truth and the next write to that set refreshes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.store import h3vec
from botaclip.store.catalog import CATALOG_ALIAS, connect_read_only
from botaclip.store.layout import footer_meta, partition_files
from botaclip.store.lock import WriterLock

if TYPE_CHECKING:
    from botaclip.store.store import Store


@dataclass
class VerifyReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0

    def problem(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)


def _writer_active(store: "Store") -> bool:
    lock = WriterLock(store.path)
    try:
        lock.acquire()
    except Exception:
        return True
    lock.release()
    return False


def verify_store(store: "Store") -> VerifyReport:
    """Check a store; returns a report (never raises for a damaged store)."""
    rep = VerifyReport()
    state = store._read_catalog()
    con = connect_read_only(store.catalog_path)
    try:
        views = {r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = ?", [CATALOG_ALIAS]).fetchall()}
    finally:
        con.close()
    features_root = store.path / "features"
    on_disk = {d.name for d in features_root.iterdir() if d.is_dir()} if features_root.is_dir() else set()
    for orphan in sorted(on_disk - set(state.feature_sets)):
        rep.problem(f"features/{orphan} holds data of no catalogued feature set")
    active = _writer_active(store)
    for name, rec in state.feature_sets.items():
        spec = state.spec(name)
        if name not in views:
            rep.problem(f"{name}: catalog has no view")
        expected = spec.arrow_schema(store.resolution, store.partition_resolution).remove_metadata()
        rows = 0
        for parent, path in partition_files(store.path, name).items():
            rep.files += 1
            rel = path.relative_to(store.path)
            try:
                table = pq.read_table(path)
                meta = footer_meta(path)
            except (OSError, pa.ArrowException, ValueError) as exc:
                rep.problem(f"{rel}: unreadable ({exc})")
                continue
            if not table.schema.remove_metadata().equals(expected):
                rep.problem(f"{rel}: schema differs from the catalog's {spec.kind}/{spec.dtype} layout")
                continue
            if meta.get("feature_set") != name or meta.get("parent") != f"{parent:x}":
                rep.problem(f"{rel}: footer metadata names another feature set or partition")
            h = table.column("h3").to_numpy().astype(np.uint64)
            rows += len(h)
            if len(np.unique(h)) != len(h):
                rep.problem(f"{rel}: duplicate cells")
            elif len(h) > 1 and not np.all(h[1:] > h[:-1]):
                rep.problem(f"{rel}: rows not sorted by cell")
            if len(h) and (h3vec.get_resolution(h) != store.resolution).any():
                rep.problem(f"{rel}: cells not at the store resolution {store.resolution}")
            if len(h) and (store.partition_of(h) != parent).any():
                rep.problem(f"{rel}: cells outside partition {parent:x}")
        rep.rows += rows
        if rows != rec["rows"]:
            runs = [r for r in state.runs if r["feature_set"] == name]
            last = runs[-1] if runs else None
            if active or (last is not None and last["status"] == "running"):
                why = "a writer is running" if active else f"run {last['run_id']} was interrupted"
                rep.warnings.append(f"{name}: catalog says {rec['rows']} rows, files hold {rows} ({why}; "
                                    "the next write to it refreshes the count)")
            else:
                rep.problem(f"{name}: catalog says {rec['rows']} rows but the files hold {rows}")
    return rep
