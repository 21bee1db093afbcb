"""Readers during a write, a writer killed with SIGKILL, resume after the kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import h3
import numpy as np
import pytest

from botaclip.errors import BotaclipError, StoreBusyError
from botaclip.store import Store

# 12 resolution-6 parents around Grenoble; each holds 2401 resolution-10 cells.
PARENTS = sorted(h3.api.basic_int.grid_disk(h3.str_to_int(h3.latlng_to_cell(45.19, 5.72, 6)), 2))[:12]

JOB = textwrap.dedent("""
    import sys, time, numpy as np, h3
    from botaclip.store import Store
    store = Store.open(sys.argv[1])
    parents = [int(p) for p in sys.argv[2].split(",")]
    pause = float(sys.argv[3])
    with store.writer("emb", kind="backbone", dim=8, provenance={"model": "toy"}) as w:
        done = set(w.existing_cells().tolist())
        for parent in parents:
            cells = np.array(sorted(h3.api.basic_int.cell_to_children(parent, 10)), dtype=np.uint64)
            todo = np.array([c for c in cells if int(c) not in done], dtype=np.uint64)
            for chunk in np.array_split(todo, 4):      # several batches per partition
                if len(chunk):
                    emb = np.stack([np.cos(chunk % 97 + i) for i in range(8)], axis=1).astype(np.float32)
                    w.write(chunk, emb, valid_fraction=np.ones(len(chunk)))
                time.sleep(pause)
            w.finish_partition(parent)
            sys.stdout.write("partition\\n")  # one write per line (a mover thread may print between two)
            sys.stdout.flush()
""")


def _expected(cells: np.ndarray) -> np.ndarray:
    e = np.stack([np.cos(cells % 97 + i) for i in range(8)], axis=1).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def _start(store_path, parents, pause) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", JOB, str(store_path), ",".join(map(str, parents)), str(pause)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_reader_during_write_sees_whole_partitions(tmp_path):
    store = Store.create(tmp_path / "s.store")
    with store.writer("emb", kind="backbone", dim=8, provenance={"model": "toy"}):
        pass  # the set exists before the job starts
    proc = _start(store.path, PARENTS[:6], 0.02)
    reader = Store.open(store.path, read_only=True)
    seen = []
    while proc.poll() is None:
        con = reader.connect()
        n = con.execute("SELECT count(*) FROM emb").fetchone()[0]
        con.close()
        h, X, _ = reader.features_numpy("emb")
        # Each check on its own, with what was seen: a failure under load must say which read saw what.
        files = sorted(p.parent.name for p in (store.path / "features" / "emb").glob("parent=*/data.parquet"))
        assert n % 2401 == 0, f"SQL saw part of a partition: {n} rows; files now {files}"
        assert len(h) % 2401 == 0, f"features_numpy saw part of a partition: {len(h)} rows; files now {files}"
        assert np.allclose(X, _expected(h), atol=1e-6), "features_numpy returned rows that were never written"
        seen.append(n)
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read()
    assert seen == sorted(seen), f"a later read saw fewer rows: {seen}"
    assert reader.info("emb")["rows"] == 6 * 2401
    assert reader.verify().ok


def test_writer_killed_then_resumed_is_exact(tmp_path):
    store = Store.create(tmp_path / "s.store")
    proc = _start(store.path, PARENTS, 0.03)
    # Kill it mid-batch: after a few partitions were finished, while the next one is being buffered/written.
    for _ in range(3):
        assert proc.stdout.readline().strip() == "partition"
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    store = Store.open(store.path)
    rep = store.verify()
    assert rep.ok, rep.problems
    assert store.runs()[-1]["status"] == "running"  # the catalog shows the interrupted run
    partial = store.existing_cells("emb")
    assert 3 * 2401 <= len(partial) < 12 * 2401
    assert len(np.unique(partial)) == len(partial)
    # Rerun the same job: it skips what is on disk and completes.
    proc = _start(store.path, PARENTS, 0.0)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    h, X, _ = store.features_numpy("emb")
    expect = np.sort(np.concatenate([np.array(h3.api.basic_int.cell_to_children(p, 10), np.uint64)
                                     for p in PARENTS]))
    assert np.array_equal(np.sort(h), expect)  # no missing, no duplicate
    order = np.argsort(h)
    assert np.allclose(X[order], _expected(h[order]), atol=1e-6)
    assert store.partitions("emb") == set(PARENTS)
    rep = store.verify()
    assert rep.ok and not rep.warnings
    assert store.info("emb")["rows"] == len(expect)


# The job above with `finish_partition(parent, wait=False)` (as `botaclip index` writes), whose background move of
# the third partition's file stops before the rename until the process is killed: the window in which a partition
# that finish_partition returned for is not in place yet.
JOB_IN_FLIGHT = JOB.replace("w.finish_partition(parent)", "w.finish_partition(parent, wait=False)").replace(
    "from botaclip.store import Store", textwrap.dedent("""
    from botaclip.store import Store
    import botaclip.store.mover as mover
    real_move, moves = mover.move_into_place, []
    def move(tmp, final, *args, **kwargs):
        moves.append(final)
        if len(moves) == 3 and sys.argv[4] == "stop":
            # One write per line: the main thread prints too, and print() writes the text and its newline apart.
            sys.stdout.write("moving\\n")
            sys.stdout.flush()
            time.sleep(600)
        return real_move(tmp, final, *args, **kwargs)
    mover.move_into_place = move
    """))


def test_writer_killed_while_a_finished_partition_moves_in_loses_only_that_one(tmp_path):
    store = Store.create(tmp_path / "s.store")

    def start(stop: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", JOB_IN_FLIGHT, str(store.path), ",".join(map(str, PARENTS[:6])),
                                 "0", stop], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})

    proc = start("stop")
    lines = []
    while lines.count("partition") < 3 or "moving" not in lines:
        line = proc.stdout.readline()
        if not line or line.strip() not in ("partition", "moving"):
            proc.kill()  # before reading its stderr, which would wait for the held move
            pytest.fail(f"unexpected output {line!r} after {lines}: {proc.communicate()[1][-2000:]}")
        lines.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)  # finish_partition returned for 3 partitions; the third is still moving
    proc.wait()
    store = Store.open(store.path)
    files = sorted((store.path / "features" / "emb").glob("parent=*/data.parquet"))
    assert [f.parent.name for f in files] == sorted(f"parent={p:x}" for p in PARENTS[:2])  # only the third is lost
    assert any((store.path / ".tmp").iterdir())  # its whole temporary file, never under its final name
    rep = store.verify()
    assert rep.ok, rep.problems
    assert store.partitions("emb") == set(PARENTS[:2])
    assert np.array_equal(store.existing_cells("emb"), np.sort(np.concatenate(
        [np.array(h3.api.basic_int.cell_to_children(p, 10), np.uint64) for p in PARENTS[:2]])))
    assert store.runs()[-1]["status"] == "running"
    # The rerun skips the cells on disk and writes the lost partition again.
    proc = start("go")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    h, X, _ = store.features_numpy("emb")
    expect = np.sort(np.concatenate([np.array(h3.api.basic_int.cell_to_children(p, 10), np.uint64)
                                     for p in PARENTS[:6]]))
    assert np.array_equal(np.sort(h), expect)  # no missing, no duplicate
    order = np.argsort(h)
    assert np.allclose(X[order], _expected(h[order]), atol=1e-6)
    assert store.partitions("emb") == set(PARENTS[:6])
    rep = store.verify()
    assert rep.ok and not rep.warnings
    assert not any((store.path / ".tmp").iterdir())


HOLD = textwrap.dedent("""
    import sys
    from botaclip.store import Store
    with Store.open(sys.argv[1]).writer("held", kind="covariates", columns=["a"]):
        print("holding", flush=True)
        sys.stdin.readline()
""")


def test_busy_store_raises_store_busy_error(tmp_path):
    """A second writer (another process) is refused with StoreBusyError, a BlockingIOError naming the holder;
    index's shard mode waits on exactly this type."""
    store = Store.create(tmp_path / "s.store", resolution=10)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store.path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(StoreBusyError) as info:
            store.writer("other", kind="covariates", columns=["a"])
        assert isinstance(info.value, BotaclipError) and isinstance(info.value, BlockingIOError)
        assert f"PID {holder.pid}" in str(info.value)
        with pytest.raises(StoreBusyError):
            store.record_cross_fit("held", ["a", "b"], 6, [PARENTS[0]], [0], [])
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=60) == 0
    with store.writer("other", kind="covariates", columns=["a"]):  # free again once the holder is done
        pass


def _feature_sets_in_child(path, queue):
    queue.put(Store.open(path, read_only=True).feature_sets())


def test_forked_child_reads_the_catalog_its_parent_was_reading(two_sets):
    """Catalog reads share one DuckDB connection per process; a child forked while the parent holds it (torch's
    DataLoader workers, multiprocessing's default on Linux) must still open the catalog, not hang."""
    import multiprocessing

    store, _ = two_sets
    assert store.feature_sets() == ["cov", "emb"]  # the parent has read the catalog
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_feature_sets_in_child, args=(str(store.path), queue))
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        pytest.fail("a forked child hung reading the catalog")
    assert child.exitcode == 0 and queue.get(timeout=5) == ["cov", "emb"]
    assert store.feature_sets() == ["cov", "emb"]  # and the parent reads on


def test_catalog_replaced_by_another_process_is_read_fresh(two_sets):
    """The connection kept for catalog reads ATTACHes the file anew for each read: a set another process adds
    is seen at once, and a catalog that is not one is a one-line error that leaves later reads working."""
    store, cells = two_sets
    assert store.feature_sets() == ["cov", "emb"]
    job = textwrap.dedent("""
        import sys, numpy as np
        from botaclip.store import Store
        store = Store.open(sys.argv[1])
        cells = np.array([int(c) for c in sys.argv[2].split(",")], dtype=np.uint64)
        with store.writer("more", kind="covariates", columns=["b"]) as w:
            w.write(cells, columns={"b": np.ones(len(cells))})
    """)
    subprocess.run([sys.executable, "-c", job, str(store.path), ",".join(map(str, cells[:10]))], check=True)
    assert store.feature_sets() == ["cov", "emb", "more"]
    broken = store.path.parent / "broken.store"
    broken.mkdir()
    (broken / "catalog.duckdb").write_text("not a database")
    with pytest.raises(BotaclipError, match="not a readable botaclip catalog"):
        Store.open(broken, read_only=True)
    assert store.info("more")["rows"] == 10


def test_read_interrupted_just_after_attach_leaves_later_reads_working(two_sets, monkeypatch):
    """A Ctrl-C that lands once the catalog is attached to the kept connection, before its read starts, must not
    leave it attached for good (every later ATTACH would fail)."""
    from botaclip.store import catalog

    store, _ = two_sets
    attach = catalog.attach_read_only

    def attach_then_interrupt(con, path, alias):
        attach(con, path, alias)
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "attach_read_only", attach_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.feature_sets()
    monkeypatch.setattr(catalog, "attach_read_only", attach)
    assert store.feature_sets() == ["cov", "emb"] and store.info("emb")["rows"] == 200


def test_read_while_another_holds_the_kept_connection_takes_its_own(two_sets):
    """Reads never wait for each other: one that finds the kept connection busy (another thread's read, or a
    signal handler inside a read) attaches the catalog to a connection of its own."""
    from botaclip.store import catalog

    store, _ = two_sets
    with catalog._attached(store.catalog_path) as outer:
        assert store.feature_sets() == ["cov", "emb"]  # the kept connection is busy: a connection of its own
        assert outer.execute("SELECT count(*) FROM store_catalog.main.feature_sets").fetchone()[0] == 2
    assert store.feature_sets() == ["cov", "emb"]
