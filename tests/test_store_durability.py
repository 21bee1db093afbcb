"""The writer's durability protocol: every folder a partition file was renamed into is flushed before the catalog
records it, the catalog is replaced once at close, and a batch of partitions moved in by the background mover
lands whole and in order, or stops at the first failure with nothing half-done."""

from __future__ import annotations

import errno
import os
import threading

import h3
import numpy as np
import pytest

import botaclip.atomic as atomic
import botaclip.store.catalog as catalog
import botaclip.store.layout as layout
import botaclip.store.writer as writer_mod
from botaclip.errors import StoreWriteError
from botaclip.store import Store
from botaclip.store.layout import features_dir

CENTRE = h3.str_to_int(h3.latlng_to_cell(45.19, 5.72, 6))
PARENTS = sorted(h3.api.basic_int.grid_disk(CENTRE, 1))  # 7 resolution-6 parents


def cells_of(parent: int, n: int = 50) -> np.ndarray:
    return np.array(sorted(h3.api.basic_int.cell_to_children(parent, 10)), dtype=np.uint64)[:n]


def emb(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "s.store", resolution=10)


@pytest.fixture
def journal(monkeypatch):
    """Every folder flush and catalog replacement, in order: ("sync", path) and ("catalog", None)."""
    events: list[tuple[str, str | None]] = []
    real_sync, real_write = atomic.fsync_dir, catalog.write_catalog

    def sync(d):
        events.append(("sync", os.fspath(d)))
        real_sync(d)

    def write(path, state, root):
        events.append(("catalog", None))
        real_write(path, state, root)

    monkeypatch.setattr(atomic, "fsync_dir", sync)
    monkeypatch.setattr(layout, "fsync_dir", sync)  # a per-file folder flush would show here
    monkeypatch.setattr(writer_mod, "write_catalog", write)
    return events


def _synced_before_last_catalog(events) -> set[str]:
    last = max(i for i, (kind, _) in enumerate(events) if kind == "catalog")
    return {p for kind, p in events[:last] if kind == "sync"}


@pytest.mark.parametrize("atomic_write", [False, True])
def test_every_partition_folder_is_flushed_before_the_catalog_records_it(store, journal, atomic_write):
    with store.writer("e", kind="backbone", dim=8) as w:  # a first commit, for the all-or-nothing append below
        w.write(cells_of(PARENTS[0]), emb(50))
    journal.clear()
    with store.writer("e", kind="backbone", dim=8, atomic=atomic_write) as w:
        for i, parent in enumerate(PARENTS[1:4]):
            w.write(cells_of(parent), emb(50, i))
            w.finish_partition(parent)
        w.write(cells_of(PARENTS[4]), emb(50, 9))  # flushed by close
    synced = _synced_before_last_catalog(journal)
    live = features_dir(store.path, "e")
    if atomic_write:  # built aside: its folders (hard links of the untouched partition too) before the swap
        assert sum(1 for p in synced if "/stage-" in p and "/parent=" in p) == 5
        assert any(p.endswith("/features/e") and "/stage-" in p for p in synced)
    else:
        for parent in PARENTS[1:5]:
            assert str(live / f"parent={parent:x}") in synced
        assert str(live) in synced and str(live.parent) in synced
    assert store.partitions("e") == set(PARENTS[:5])
    assert len(store.existing_cells("e")) == 5 * 50
    assert store.verify().ok


def test_folders_are_flushed_once_per_commit_not_once_per_file(store, journal):
    with store.writer("e", kind="backbone", dim=8) as w:
        for i, parent in enumerate(PARENTS):
            w.write(cells_of(parent), emb(50, i))
            w.finish_partition(parent)
    partition_syncs = [p for kind, p in journal if kind == "sync" and "/parent=" in p]
    assert sorted(partition_syncs) == sorted({str(features_dir(store.path, "e") / f"parent={p:x}") for p in PARENTS})


def test_close_replaces_the_catalog_once_with_run_and_geometry(store, journal):
    with store.writer("e", kind="backbone", dim=8) as w:
        for i, parent in enumerate(PARENTS[:3]):
            w.write(cells_of(parent), emb(50, i))
            w.finish_partition(parent)
        journal.clear()
    assert [k for k, _ in journal].count("catalog") == 1
    geo = store.geometry("e")
    assert geo is not None and geo["rows"] == 150
    assert store.runs()[-1]["status"] == "done"
    # an append to a set that has files: no catalog write before close, one at close
    journal.clear()
    with store.writer("e", kind="backbone", dim=8) as w:
        w.write(cells_of(PARENTS[3]), emb(50, 5))
        w.finish_partition(PARENTS[3])
    assert [k for k, _ in journal].count("catalog") == 2  # the run registered before its first file, then close
    assert store.geometry("e")["rows"] == 200


def test_one_flush_of_many_partitions_lands_them_all(store):
    threads = threading.active_count()
    cells = np.concatenate([cells_of(p, 100) for p in PARENTS])
    x = emb(len(cells))
    perm = np.random.default_rng(3).permutation(len(cells))
    with store.writer("e", kind="backbone", dim=8) as w:
        w.write(cells[perm], x[perm])
        w.flush()
        assert np.array_equal(w.existing_cells(), np.sort(cells))  # on disk when flush returns
        assert w.partitions_written == len(PARENTS) and w.rows_written == len(cells)
    assert threading.active_count() == threads  # the mover's thread is gone
    h, X, _ = store.features_numpy("e")
    order = np.argsort(cells)
    assert np.array_equal(h, cells[order])
    assert np.allclose(X, x[order] / np.linalg.norm(x[order], axis=1, keepdims=True), atol=1e-6)
    assert store.verify().ok


def test_large_gather_in_two_threads_equals_one_thread(monkeypatch):
    """Above PARALLEL_GATHER_ROWS a reordered write is gathered and normalised by two threads: the same floats as
    one thread, and a NaN in the second half is still refused with the set's name."""
    n = writer_mod.PARALLEL_GATHER_ROWS + 5_000
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[7] = 0  # a zero row stays zero
    order = rng.permutation(n)
    two = writer_mod.unit_rows_in_order(x, order, "e")
    monkeypatch.setattr(writer_mod, "PARALLEL_GATHER_ROWS", n + 1)
    one = writer_mod.unit_rows_in_order(x, order, "e")
    assert np.array_equal(two, one)
    ref = x[order] / np.maximum(np.linalg.norm(x[order], axis=1, keepdims=True), 1e-30)
    assert np.allclose(two, ref, atol=1e-6) and not two[np.flatnonzero(order == 7)[0]].any()
    monkeypatch.setattr(writer_mod, "PARALLEL_GATHER_ROWS", 1_000)
    x[order[-1], 2] = np.nan  # the last row of the output: the second thread's
    with pytest.raises(ValueError, match="embedding for 'e' contains NaN"):
        writer_mod.unit_rows_in_order(x, order, "e")


def test_a_failed_move_stops_the_batch_and_keeps_what_landed(store, monkeypatch):
    """The third file's rename fails (a full disk): the two before it are in place and counted, none after it
    is, no temporary file is left, one error names the partition, and the next run completes."""
    real_replace, calls = layout.os.replace, []

    def failing(src, dst):
        if str(dst).endswith("data.parquet"):
            calls.append(dst)
        if str(dst).endswith("data.parquet") and len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    cells = np.concatenate([cells_of(p, 40) for p in PARENTS])
    monkeypatch.setattr(layout.os, "replace", failing)
    with pytest.raises(StoreWriteError, match="cannot write partition .* No space left on device; the partitions "
                                              "written before are kept"):
        with store.writer("e", kind="backbone", dim=8) as w:
            w.write(cells, emb(len(cells)))
            w.flush()
    monkeypatch.undo()
    assert not any((store.path / ".tmp").iterdir())
    landed = store.existing_cells("e")
    first_two = np.sort(np.concatenate([cells_of(p, 40) for p in sorted(PARENTS)[:2]]))
    assert np.array_equal(landed, first_two)  # a prefix of the batch, in order: nothing after the failure
    assert store.verify().ok
    with store.writer("e", kind="backbone", dim=8) as w:
        todo = np.setdiff1d(cells, w.existing_cells())
        w.write(todo, emb(len(todo), 1))
    assert np.array_equal(store.existing_cells("e"), np.sort(cells))


# ---- finish_partition(wait=False): each file's flush and rename overlap the next partition's encoding ----------


def test_finish_without_wait_keeps_at_most_one_partition_in_flight(store):
    threads = threading.active_count()
    live = features_dir(store.path, "e")
    with store.writer("e", kind="backbone", dim=8) as w:
        for i, parent in enumerate(PARENTS):
            w.write(cells_of(parent), emb(50, i))
            assert w.finish_partition(parent, wait=False) == 50
            for before in PARENTS[:i]:  # every partition before the last one is in place when the call returns
                assert (live / f"parent={before:x}" / "data.parquet").is_file(), (i, f"{before:x}")
            assert w.partitions_written >= i
        assert len(w.existing_cells()) == len(PARENTS) * 50  # waits for the last one
        assert w.partitions_written == len(PARENTS) and w.rows_written == len(PARENTS) * 50
    assert threading.active_count() == threads  # the mover's thread is gone
    assert store.partitions("e") == set(PARENTS)
    assert store.info("e")["rows"] == len(PARENTS) * 50
    rep = store.verify()
    assert rep.ok and not rep.warnings, rep.problems


def test_finish_without_wait_then_the_same_partition_again_merges_both(store):
    """The second file of a partition is merged with the first, which must be in place before it is read."""
    cells = cells_of(PARENTS[0], 100)
    x = emb(100)
    with store.writer("e", kind="backbone", dim=8) as w:
        w.write(cells[:60], x[:60])
        w.finish_partition(PARENTS[0], wait=False)
        w.write(cells[60:], x[60:])
        assert w.finish_partition(PARENTS[0], wait=False) == 100
        w.write(cells_of(PARENTS[1]), emb(50, 1))
        w.flush()  # a partial partition after the finished one: the mover's queue is drained first
    h, X, _ = store.features_numpy("e")
    assert len(h) == 150 and set(cells.tolist()) <= set(h.tolist())
    rows = {int(c): v for c, v in zip(h, X)}
    assert np.allclose(np.stack([rows[int(c)] for c in cells]), x / np.linalg.norm(x, axis=1, keepdims=True),
                       atol=1e-6)
    assert store.partitions("e") == {PARENTS[0]}  # the flushed one is partial (never finished)
    assert store.verify().ok


def test_a_failed_background_move_is_reported_by_the_next_call(store, monkeypatch):
    """The second partition's rename fails: the third finish_partition reports it (naming the second
    partition); the first stays, nothing after the failure lands, no temporary file is left, the run is
    recorded as failed, and the next run completes."""
    real_replace, calls = layout.os.replace, []

    def failing(src, dst):
        if str(dst).endswith("data.parquet"):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(layout.os, "replace", failing)
    with pytest.raises(StoreWriteError, match=f"partition {PARENTS[1]:x} .* No space left on device; the "
                                              "partitions written before are kept"):
        with store.writer("e", kind="backbone", dim=8) as w:
            for i, parent in enumerate(PARENTS[:4]):
                w.write(cells_of(parent), emb(50, i))
                w.finish_partition(parent, wait=False)
    monkeypatch.undo()
    assert not any((store.path / ".tmp").iterdir())
    assert np.array_equal(store.existing_cells("e"), cells_of(PARENTS[0]))
    assert store.runs()[-1]["status"] == "failed"
    assert store.verify().ok
    with store.writer("e", kind="backbone", dim=8) as w:
        for i, parent in enumerate(PARENTS[:4]):
            todo = np.setdiff1d(cells_of(parent), w.existing_cells())
            w.write(todo, emb(len(todo), i))
            w.finish_partition(parent, wait=False)
    assert len(store.existing_cells("e")) == 4 * 50
    assert store.partitions("e") == set(PARENTS[:4])
    assert store.verify().ok


def test_tables_are_encoded_off_the_caller_thread_in_order_and_throttled(tmp_path):
    """`submit_table`: each file is written by the encoding thread, moved in submission order, `throttle(2)`
    leaves at most two to move, and a failed write fails its job; nothing after it is written or moved."""
    from botaclip.store.mover import BackgroundMover

    (tmp_path / ".tmp").mkdir()
    mover, written, landed = BackgroundMover(tmp_path), [], []

    def writer_of(i: int, fail: bool = False):
        def write():
            if fail:
                raise OSError(errno.ENOSPC, "No space left on device")
            written.append((i, threading.current_thread().name))
            tmp = tmp_path / ".tmp" / f"{i}.parquet"
            tmp.write_bytes(b"x" * 10)
            return tmp
        return write

    for i in range(5):
        final = tmp_path / f"p{i}" / "data.parquet"
        mover.submit_table(writer_of(i, fail=(i == 3)), final, f"partition {i}", lambda i=i: landed.append(i))
        mover.throttle(keep=2)
        assert sum(not f.done() for f, _, _ in mover._jobs) <= 2
    with pytest.raises(StoreWriteError, match="No space left on device"):
        mover.finish()
    assert [i for i, _ in written] == [0, 1, 2] and all(name.startswith("botaclip-encoder") for _, name in written)
    assert landed == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.glob("p*")) == ["p0", "p1", "p2"]
    assert not any((tmp_path / ".tmp").iterdir())
