"""`verify_store`: read every partition file and check it against the catalog; `repair_store`: set damaged
partitions aside so that the rest of the store stays usable.

Problems (the store is not valid): an unreadable file, a schema that differs from the catalog, a cell outside its
partition or at the wrong resolution, a duplicate cell, a missing view, feature data the catalog does not know, a
partition the catalog lists whose file is gone, a replacement interrupted between its renames, or a row count
that differs from the catalog after a run that finished. A count that lags after a run that was interrupted
(killed) is only a warning: the files are the truth and the next write to that set refreshes it.

Repair (under the writer lock) finishes or undoes an interrupted replacement, moves every damaged partition file
(and data of no catalogued set) to ``STORE/quarantine/`` (nothing is deleted), and rewrites the catalog from the
files that remain: the partitions set aside and the missing ones are dropped from it, so reads work again on
everything else, and the next `botaclip index` run recomputes the cells that were lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.errors import StoreWriteError, root_cause
from botaclip.store import h3vec
from botaclip.store.catalog import CATALOG_ALIAS, connect_read_only, utcnow, write_catalog
from botaclip.store.layout import footer_meta, partition_files, partition_path
from botaclip.store.lock import WriterLock
from botaclip.store.staging import pending_swaps, recover_swaps

if TYPE_CHECKING:
    from botaclip.store.store import Store

QUARANTINE = "quarantine"


@dataclass
class VerifyReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    # what a repair acts on: damaged partition files (absolute paths), missing partitions, orphan directories
    damaged: dict[str, list[Path]] = field(default_factory=dict)
    missing: dict[str, list[int]] = field(default_factory=dict)
    orphans: list[Path] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

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


def _check_file(store: "Store", name: str, parent: int, path: Path, expected: pa.Schema) -> tuple[str | None, int]:
    """(what is wrong with one partition file or None, its rows)."""
    try:
        table = pq.read_table(path)
        meta = footer_meta(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return f"unreadable ({root_cause(exc)})", 0
    if not table.schema.remove_metadata().equals(expected):
        return "schema differs from the catalog's layout", 0
    if meta.get("feature_set") != name or meta.get("parent") != f"{parent:x}":
        return "footer metadata names another feature set or partition", 0
    h = table.column("h3").to_numpy().astype(np.uint64)
    if len(np.unique(h)) != len(h):
        return "duplicate cells", 0
    if len(h) > 1 and not np.all(h[1:] > h[:-1]):
        return "rows not sorted by cell", 0
    if len(h) and (h3vec.get_resolution(h) != store.resolution).any():
        return f"cells not at the store resolution {store.resolution}", 0
    if len(h) and (store.partition_of(h) != parent).any():
        return f"cells outside partition {parent:x}", 0
    return None, len(h)


def verify_store(store: "Store") -> VerifyReport:
    """Check a store; returns a report (never raises for a damaged store)."""
    rep = VerifyReport()
    state = store.catalog()
    con = connect_read_only(store.catalog_path)
    try:
        views = {r[0] for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = ?", [CATALOG_ALIAS]).fetchall()}
    finally:
        con.close()
    for name in pending_swaps(store.path):
        rep.problem(f"{name}: a replacement was interrupted between its renames (run `botaclip store verify "
                    f"{store.path} --repair` or any write to the store to finish or undo it)")
    features_root = store.path / "features"
    on_disk = {d.name for d in features_root.iterdir() if d.is_dir()} if features_root.is_dir() else set()
    for orphan in sorted(on_disk - set(state.feature_sets)):
        rep.problem(f"features/{orphan} holds data of no catalogued feature set")
        rep.orphans.append(features_root / orphan)
    active = _writer_active(store)
    for name, rec in state.feature_sets.items():
        spec = state.spec(name)
        if name not in views:
            rep.problem(f"{name}: catalog has no view")
        expected = spec.arrow_schema(store.resolution, store.partition_resolution).remove_metadata()
        files = partition_files(store.path, name)
        missing = sorted(set(state.partitions.get(name, {})) - set(files))
        for parent in missing:
            rep.problem(f"{partition_path(Path('.'), name, parent)}: missing (the catalog lists it)")
        if missing:
            rep.missing[name] = missing
        rows = 0
        for parent, path in files.items():
            rep.files += 1
            why, n = _check_file(store, name, parent, path, expected)
            if why is not None:
                rep.problem(f"{path.relative_to(store.path)}: {why}")
                rep.damaged.setdefault(name, []).append(path)
            rows += n
        rep.rows += rows
        if rows != rec["rows"] and not missing and name not in rep.damaged:
            runs = [r for r in state.runs if r["feature_set"] == name]
            last = runs[-1] if runs else None
            if active or (last is not None and last["status"] == "running"):
                why = "a writer is running" if active else f"run {last['run_id']} was interrupted"
                rep.warnings.append(f"{name}: catalog says {rec['rows']} rows, files hold {rows} ({why}; "
                                    "the next write to it refreshes the count)")
            else:
                rep.problem(f"{name}: catalog says {rec['rows']} rows but the files hold {rows}")
    return rep


def repair_store(store: "Store") -> VerifyReport:
    """Repair what `verify_store` finds (see the module docstring) and return the report of the store after
    the repair, with `repairs` listing what was done. Takes the writer lock (fails if a writer is running)."""
    lock = WriterLock(store.path).acquire()
    try:
        state = store.catalog()
        repairs = recover_swaps(store.path, {r["run_id"] for r in state.runs if r["status"] == "done"})
        before = verify_store(store)
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        quarantine = store.path / QUARANTINE / stamp
        try:
            for name, paths in before.damaged.items():
                for path in paths:
                    dest = quarantine / name / f"{path.parent.name}.parquet"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, dest)
                    path.parent.rmdir()
                    repairs.append(f"moved damaged {path.relative_to(store.path)} to "
                                   f"{dest.relative_to(store.path)}")
            for orphan in before.orphans:
                dest = quarantine / "unknown" / orphan.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(orphan, dest)
                repairs.append(f"moved features/{orphan.name} (no catalogued feature set) to "
                               f"{dest.relative_to(store.path)}")
            for name, parents in before.missing.items():
                repairs.append(f"dropped {len(parents)} missing partition(s) of {name!r} from the catalog")
            if repairs or not before.ok:
                state = store.catalog()
                for name in state.feature_sets:
                    parts = {}
                    for parent, path in partition_files(store.path, name).items():
                        parts[parent] = (pq.read_metadata(path).num_rows, path.stat().st_size)
                    state.partitions[name] = parts
                    state.feature_sets[name].update(rows=sum(r for r, _ in parts.values()), partitions=len(parts),
                                                    bytes=sum(b for _, b in parts.values()), updated=utcnow())
                write_catalog(store.catalog_path, state, store.path)
        except OSError as exc:
            if isinstance(exc, StoreWriteError):
                raise
            raise StoreWriteError(f"cannot repair store {store.path}: {root_cause(exc)}") from None
    finally:
        lock.release()
    after = verify_store(store)
    after.repairs = repairs
    return after
