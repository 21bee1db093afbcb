"""Feature-store benchmarks, each side by side with the best alternative in the same run: writes vs
`pyarrow.parquet.write_table` (identical options), exact search vs numpy and faiss on the same matrix, the ANN
index vs exact truth, `botaclip store similar` vs Python's start-up, plus bytes per cell, point joins, H3 SQL.

    python bench/store.py                                  # 1M cells (docs/benchmarks.md)
    python bench/store.py --cells 200000 --only write      # quick run of one part
    python bench/store.py --cells 200000 --only finish     # finish_partition waiting or not, adjacent pairs
    python bench/store.py --cells 200000 --only search --only ann --only cli

Embeddings have structure (a Gaussian mixture of 300 clusters, seeded), not random unit vectors, on which every
ANN index looks broken. Cells: resolution-10 children of resolution-6 parents (2,401 per Parquet file).
Prints one line per number; JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import h3.api.basic_int as h3i
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from botaclip.store import Store, register_h3_functions
from botaclip.store.layout import parquet_write_options
from botaclip.store.similarity import SimilaritySearch

REPEATS = 3  # search: best of 3
WRITE_REPEATS = 5  # writes: median of 5, every side in each repetition
ORIGIN = (45.0, 6.0)  # parents are taken around here (the Alps), resolution 6


def parents_for(n_cells: int) -> list[int]:
    need = -(-n_cells // 2401)
    origin = h3i.latlng_to_cell(*ORIGIN, 6)
    k = 0
    while True:
        disk = sorted(h3i.grid_disk(origin, k))
        if len(disk) >= need:
            return disk[:need]
        k += 1


def cells_of(parent: int) -> np.ndarray:
    return np.array(sorted(h3i.cell_to_children(parent, 10)), dtype=np.uint64)


def mixture(rng: np.random.Generator, n: int, dim: int, clusters: int = 300, seed: int = 0) -> np.ndarray:
    """n rows of a Gaussian mixture (`clusters` centres fixed by `seed`, noise 0.35 of a centre's norm)."""
    centres = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x += 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    return x


def fill(store: Store, name: str, n_cells: int, dim: int, dtype: str, seed: int = 0) -> tuple[float, int]:
    """Write n_cells clustered embeddings one partition at a time; returns (seconds in the writer, rows)."""
    rng = np.random.default_rng(seed)
    spent, rows = 0.0, 0
    with store.writer(name, kind="backbone", dim=dim, dtype=dtype, provenance={"model": "bench"}) as w:
        for parent in parents_for(n_cells):
            cells = cells_of(parent)[: n_cells - rows]
            emb = mixture(rng, len(cells), dim)
            t = time.perf_counter()
            w.write(cells, emb, valid_fraction=np.ones(len(cells), np.float32))
            w.finish_partition(parent)
            spent += time.perf_counter() - t
            rows += len(cells)
            if rows >= n_cells:
                break
        t = time.perf_counter()
    spent += time.perf_counter() - t  # commit
    return spent, rows


def _write_data(n: int, dim: int) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    parents, cells, embs = [], [], []
    rows = 0
    for parent in parents_for(n):
        c = cells_of(parent)[: n - rows]
        parents.append(parent)
        cells.append(c)
        embs.append(mixture(rng, len(c), dim))
        rows += len(c)
    return parents, cells, embs


def bench_write(root: Path, n: int, out: dict, dim: int = 768,
                dtypes: tuple[str, ...] = ("float32", "float16", "int8")) -> None:
    """botaclip's writer vs pyarrow.parquet.write_table on the same rows, options and files (one per partition).

    The pyarrow baseline gets each partition ready-made as an Arrow table of unit vectors (sorted), which is the
    writer's output, and writes it with the store's Parquet options (`parquet_write_options`: zstd level 1, one
    row group, BYTE_STREAM_SPLIT floats, dictionary only for int8 codes, statistics on h3 only; same columns) and
    no fsync. The writer gets raw float32 vectors and checks them, normalises, sorts, splits, encodes, and makes
    each file durable (its bytes flushed to disk before the rename: what the "pyarrow + fsync + rename" baseline
    adds to write_table). Every repetition runs all sides one after the other (the machine is shared: ratios
    within a repetition, median over WRITE_REPEATS). The writer runs with geometry=False: the geometry statistics'
    pass over the files is timed on its own (an empty writer's close over the finished set)."""
    parents, cells, embs = _write_data(n, dim)
    rows = sum(len(c) for c in cells)
    warm = Store.create(root / "warm.store")  # first-use imports (h3ronpy, pandas) are not the writer's cost
    with warm.writer("emb", kind="backbone", dim=dim) as w:
        w.write(cells[0][:10], embs[0][:10])
    shutil.rmtree(warm.path)
    for dtype in dtypes:
        r: dict[str, list[float]] = {}
        for rep in range(WRITE_REPEATS):
            for key, secs in _one_repetition(root / f"{dtype}_{rep}", parents, cells, embs, dtype).items():
                r.setdefault(key, []).append(secs)
        _report_write(r, rows, dim, dtype, out)


def _one_repetition(root: Path, parents: list, cells: list, embs: list, dtype: str) -> dict[str, float]:
    """Seconds of each side once: botaclip one partition at a time as `botaclip index` writes
    (`finish_partition(parent, wait=False)`, then `flush()`, which waits for the last file to be in place; commit;
    then geometry), pyarrow, pyarrow made durable, and (float32) botaclip with `finish_partition(parent)` (each file
    in place before it returns) and botaclip's one write() of every row in random order."""
    root.mkdir(parents=True)
    dim = embs[0].shape[1]
    t: dict[str, float] = {}
    store = Store.create(root / "w.store")
    kw = dict(kind="backbone", dim=dim, dtype=dtype, provenance={"model": "bench"})
    with store.writer("emb", geometry=False, **kw) as w:
        spec = w.spec
        schema = spec.arrow_schema(store.resolution, store.partition_resolution)
        t0 = time.perf_counter()
        for parent, c, x in zip(parents, cells, embs):
            w.write(c, x, valid_fraction=np.ones(len(c), np.float32))
            w.finish_partition(parent, wait=False)
        w.flush()  # every file in place, as when finish_partition waits
        t["write"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    t["commit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with store.writer("emb", **kw):
        pass  # a commit that recomputes the geometry statistics of the set
    t["geometry"] = time.perf_counter() - t0
    t["bytes"] = store.info("emb")["bytes"]
    shutil.rmtree(store.path)
    t["pyarrow"] = _time_pyarrow(root / "pa", spec, schema, cells, embs)
    t["durable"] = _time_pyarrow_durable(root / "pad", spec, schema, cells, embs)
    if dtype == "float32":
        t["one_write"], t["one_commit"] = _time_one_write(root / "one.store", cells, embs)
        t["wait_write"] = _time_waiting(root / "wait.store", parents, cells, embs)
    shutil.rmtree(root)
    return t


def _report_write(r: dict[str, list[float]], rows: int, dim: int, dtype: str, out: dict) -> None:
    med = {k: float(np.median(v)) for k, v in r.items()}
    ratio = {k: float(np.median(np.array(r[k]) / np.array(r["pyarrow"]))) for k in ("write", "one_write", "wait_write")
             if k in r}
    total = float(np.median((np.array(r["write"]) + np.array(r["commit"])) / np.array(r["pyarrow"])))
    durable = float(np.median(np.array(r["write"]) / np.array(r["durable"])))
    label = f"write {rows:,} x {dim} {dtype}"
    key = f"write_{dim}d_{dtype}"
    out.update({f"{key}_per_partition_rows_per_s": rows / med["write"], f"{key}_pyarrow_rows_per_s": rows / med["pyarrow"],
                f"{key}_pyarrow_durable_rows_per_s": rows / med["durable"], f"{key}_commit_s": med["commit"],
                f"{key}_geometry_commit_s": med["geometry"], f"{key}_ratio": ratio["write"],
                f"{key}_ratio_with_commit": total, f"{key}_ratio_vs_durable": durable,
                f"bytes_per_cell_{dim}d_{dtype}": med["bytes"] / rows})
    print(f"{label}, one partition at a time (finish_partition(wait=False), as index): botaclip {med['write']:.2f} s ({rows / med['write']:,.0f} rows/s) vs "
          f"pyarrow write_table {med['pyarrow']:.2f} s: {ratio['write']:.2f}x (with the commit, {med['commit']:.2f} s:"
          f" {total:.2f}x); vs pyarrow + fsync + rename {med['durable']:.2f} s: {durable:.2f}x; a commit with "
          f"geometry statistics {med['geometry']:.2f} s; {med['bytes'] / rows:,.0f} bytes/cell (median of "
          f"{WRITE_REPEATS}: {_spread(r['write'], r['pyarrow'])})", flush=True)
    if "wait_write" in r:
        wait_durable = float(np.median(np.array(r["wait_write"]) / np.array(r["durable"])))
        out.update({f"{key}_finish_waiting_rows_per_s": rows / med["wait_write"],
                    f"{key}_finish_waiting_ratio": ratio["wait_write"],
                    f"{key}_finish_waiting_ratio_vs_durable": wait_durable})
        print(f"{label}, one partition at a time with finish_partition(parent) (each file in place before it "
              f"returns): botaclip {med['wait_write']:.2f} s vs pyarrow {med['pyarrow']:.2f} s: "
              f"{ratio['wait_write']:.2f}x; vs pyarrow + fsync + rename: {wait_durable:.2f}x (median of "
              f"{WRITE_REPEATS}: {_spread(r['wait_write'], r['pyarrow'])})", flush=True)
    if "one_write" in r:
        one = float(np.median((np.array(r["one_write"]) + np.array(r["one_commit"])) / np.array(r["pyarrow"])))
        out.update({f"{key}_one_write_rows_per_s": rows / med["one_write"], f"{key}_one_write_ratio": ratio["one_write"],
                    f"{key}_one_write_ratio_with_commit": one})
        print(f"{label}, one write() of all rows in random order + flush: botaclip {med['one_write']:.2f} s "
              f"({rows / med['one_write']:,.0f} rows/s) vs pyarrow {med['pyarrow']:.2f} s: {ratio['one_write']:.2f}x "
              f"(with the commit, {med['one_commit']:.2f} s: {one:.2f}x) (median of {WRITE_REPEATS}: "
              f"{_spread(r['one_write'], r['pyarrow'])})", flush=True)


def _spread(ours: list[float], base: list[float]) -> str:
    """Each repetition's ratio, to show how much the shared machine moved it."""
    return "ratios " + " ".join(f"{a / b:.2f}" for a, b in zip(ours, base))


def _encoded_tables(spec, schema, cells: list, embs: list) -> list:
    """The partitions as ready Arrow tables of the stored (unit-length, encoded) values."""
    tables = []
    for c, x in zip(cells, embs):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        tables.append(spec.encode(schema, c, unit, {"valid_fraction": np.ones(len(c), np.float32)}))
    return tables


def _time_pyarrow(base_dir: Path, spec, schema, cells: list, embs: list) -> float:
    """Seconds pyarrow takes to write the partitions, given as ready Arrow tables of the stored values."""
    tables = _encoded_tables(spec, schema, cells, embs)
    base_dir.mkdir(exist_ok=True)
    t = time.perf_counter()
    for i, table in enumerate(tables):
        _pyarrow_write(table, base_dir / f"{i}.parquet")
    secs = time.perf_counter() - t
    shutil.rmtree(base_dir)
    return secs


def _time_pyarrow_durable(base_dir: Path, spec, schema, cells: list, embs: list) -> float:
    """The same, each file made durable the classic way: temp file, fsync, rename into its own directory, fsync
    of that directory. (The store's writer flushes the directories once, together, at its commit.)"""
    from botaclip.atomic import fsync_dir

    tables = _encoded_tables(spec, schema, cells, embs)
    base_dir.mkdir(exist_ok=True)
    t = time.perf_counter()
    for i, table in enumerate(tables):
        tmp, final = base_dir / f"{i}.tmp", base_dir / f"p{i}" / "data.parquet"
        _pyarrow_write(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final.parent.mkdir()
        os.replace(tmp, final)
        fsync_dir(final.parent)
    secs = time.perf_counter() - t
    shutil.rmtree(base_dir)
    return secs


def _pyarrow_write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, **parquet_write_options(table))


def _time_waiting(path: Path, parents: list, cells: list, embs: list) -> float:
    """Seconds of the partition-at-a-time writes with `finish_partition(parent)`: every file flushed to disk and
    renamed into place before the call returns (nothing overlaps)."""
    store = Store.create(path)
    with store.writer("emb", kind="backbone", dim=embs[0].shape[1], provenance={"model": "bench"},
                      geometry=False) as w:
        t = time.perf_counter()
        for parent, c, x in zip(parents, cells, embs):
            w.write(c, x, valid_fraction=np.ones(len(c), np.float32))
            w.finish_partition(parent)
        secs = time.perf_counter() - t
    shutil.rmtree(store.path)
    return secs


def _time_one_write(path: Path, cells: list, embs: list) -> tuple[float, float]:
    """(write() + flush(), commit) seconds of one `write()` of every row, in a random order (the writer sorts
    and splits)."""
    rng = np.random.default_rng(1)
    allc = np.concatenate(cells)
    perm = rng.permutation(len(allc))
    allc, allx = allc[perm], np.concatenate(embs)[perm]
    store = Store.create(path)
    with store.writer("emb", kind="backbone", dim=allx.shape[1], provenance={"model": "bench"}, geometry=False,
                      max_buffer_bytes=4 * allx.nbytes) as w:
        t = time.perf_counter()
        w.write(allc, allx, valid_fraction=np.ones(len(allc), np.float32))
        w.flush()
        secs = time.perf_counter() - t
        t = time.perf_counter()
    commit = time.perf_counter() - t
    shutil.rmtree(store.path)
    return secs, commit


def bench_finish(root: Path, n: int, out: dict, pairs: int = 6, dim: int = 768) -> None:
    """`finish_partition(parent)` against `finish_partition(parent, wait=False)`, float32, in adjacent runs (the
    two orders alternating), so the shared machine's load moves both alike: the ratio of each pair, and the
    seconds spent in fsync of the files (the calls are timed; most of what waiting adds)."""
    import botaclip.store.layout as layout

    parents, cells, embs = _write_data(n, dim)
    spent, real = [0.0], layout.os.fsync

    def fsync(fd: int) -> None:
        t = time.perf_counter()
        real(fd)
        spent[0] += time.perf_counter() - t

    def run(wait: bool, path: Path) -> tuple[float, float, float]:
        store = Store.create(path)
        with store.writer("emb", kind="backbone", dim=dim, geometry=False) as w:
            w.write(cells[0][:5], embs[0][:5])  # the run registered and the view made before the clock starts
            spent[0] = 0.0
            t, c = time.perf_counter(), time.process_time()
            for parent, cc, x in zip(parents[1:], cells[1:], embs[1:]):
                w.write(cc, x, valid_fraction=np.ones(len(cc), np.float32))
                w.finish_partition(parent, wait=wait)
            w.flush()
            secs = (time.perf_counter() - t, time.process_time() - c, spent[0])
        shutil.rmtree(store.path)
        return secs

    layout.os.fsync = fsync
    try:
        res: dict[bool, list] = {True: [], False: []}
        for k in range(pairs):
            for wait in ((True, False) if k % 2 == 0 else (False, True)):
                res[wait].append(run(wait, root / f"finish_{k}_{wait}.store"))
    finally:
        layout.os.fsync = real
    ratios = [b[0] / a[0] for a, b in zip(res[True], res[False])]
    med = {w: np.median(np.array(res[w]), axis=0) for w in res}
    out.update(finish_no_wait_over_wait=float(np.median(ratios)), finish_wait_s=float(med[True][0]),
               finish_no_wait_s=float(med[False][0]), finish_wait_fsync_s=float(med[True][2]))
    print(f"finish_partition over {len(parents) - 1} partitions x {dim} float32: waiting {med[True][0]:.2f} s wall "
          f"({med[True][1]:.2f} CPU-s, {med[True][2]:.2f} s in fsync), wait=False {med[False][0]:.2f} s wall "
          f"({med[False][1]:.2f} CPU-s): {float(np.median(ratios)):.2f}x (median of {pairs} adjacent pairs: "
          + " ".join(f"{r:.2f}" for r in ratios) + f"; load average {os.getloadavg()[0]:.1f})", flush=True)


def bench_h3sql(n: int, out: dict) -> None:
    con = duckdb.connect()
    register_h3_functions(con)
    con.execute(f"CREATE TABLE p AS SELECT random() * 180 - 90 AS lat, random() * 360 - 180 AS lng FROM range({n})")
    t, c = time.perf_counter(), time.process_time()
    con.execute("SELECT count(h3_latlng_to_cell(lat, lng, 10)) FROM p").fetchone()
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    out["h3_latlng_to_cell_s"] = secs
    out["h3_latlng_to_cell_cpu_s"] = cpu
    # CPU time is the steadier number on a shared machine (wall time grows with other jobs' load).
    print(f"h3_latlng_to_cell over {n:,} rows: {secs:.2f} s wall, {cpu:.2f} s CPU", flush=True)


def bench_join(root: Path, n: int, out: dict) -> None:
    store = Store.open(root / "w_float32.store")
    con = store.connect()
    lat0, lng0 = ORIGIN
    lats, lngs = [], []
    for p in parents_for(n):  # random points over the indexed area (most fall in a stored cell)
        la, ln = h3i.cell_to_latlng(p)
        lats.append(la)
        lngs.append(ln)
    span_lat = (min(lats) - 0.05, max(lats) + 0.05)
    span_lng = (min(lngs) - 0.05, max(lngs) + 0.05)
    con.execute(f"CREATE TABLE memory.main.pts AS SELECT {span_lat[0]} + random() * {span_lat[1] - span_lat[0]} AS lat,"
                f" {span_lng[0]} + random() * {span_lng[1] - span_lng[0]} AS lng FROM range({n})")
    t = time.perf_counter()
    hits, vf = con.execute("SELECT count(*), avg(f.valid_fraction) FROM memory.main.pts p "
                           "JOIN emb f ON f.h3 = h3_latlng_to_cell(p.lat, p.lng, 10)").fetchone()
    secs = time.perf_counter() - t
    out["join_points_s"] = secs
    out["join_points_hits"] = hits
    print(f"join {n:,} random points to {n:,} cells (768-d float32 set) by h3_latlng_to_cell: {secs:.2f} s, "
          f"{hits:,} points matched", flush=True)
    con.close()


def _p50(fn, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _recall(got: list, truth: list) -> float:
    return float(np.mean([len(set(map(int, g)) & set(map(int, t))) / len(t) for g, t in zip(got, truth)]))


def _search_store(root: Path, n: int, dtype: str) -> Store:
    path = root / f"search_{dtype}.store"
    if not path.exists():
        secs, _ = fill(Store.create(path), "emb", n, 256, dtype, seed=1)
        print(f"(wrote {n:,} x 256 {dtype} in {secs:.1f} s)", flush=True)
    return Store.open(path)


def _numpy_top10(X: np.ndarray, h: np.ndarray, q: np.ndarray) -> np.ndarray:
    s = X @ q
    idx = np.argpartition(-s, 10)[:10]
    return h[idx[np.argsort(-s[idx])]]


def bench_search(root: Path, n: int, out: dict, n_queries: int = 20) -> None:
    """Exact top-10: botaclip (in memory, and streamed from Parquet) vs numpy and faiss IndexFlatIP on the same
    float32 matrix, per storage dtype; recall of float16/int8 storage against float32 truth."""
    import faiss

    base = _search_store(root, n, "float32")
    h, X = base.features_numpy("emb")[:2]
    rng = np.random.default_rng(2)
    qi = rng.choice(len(h), n_queries, replace=False)
    Q = X[qi] + 0.05 * rng.standard_normal((n_queries, X.shape[1]), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    truth = [_numpy_top10(X, h, q) for q in Q]
    t_np = _p50(lambda q: _numpy_top10(X, h, q), Q)
    flat = faiss.IndexFlatIP(X.shape[1])
    flat.add(X)
    t_faiss = _p50(lambda q: flat.search(q[None], 10), Q)
    out.update(search_numpy_s=t_np, search_faiss_flat_s=t_faiss)
    print(f"top-10 over {len(h):,} x 256 in memory: numpy matmul+argpartition {t_np * 1e3:.1f} ms, faiss "
          f"IndexFlatIP {t_faiss * 1e3:.1f} ms (p50 of {n_queries})", flush=True)
    flat.reset()
    for dtype in ("float32", "float16", "int8"):
        store = base if dtype == "float32" else _search_store(root, n, dtype)
        t = time.perf_counter()
        search = SimilaritySearch(store, "emb", method="exact", in_memory=True)
        load = time.perf_counter() - t
        got = [search.query_vector(q, k=10)[0] for q in Q]
        t_ours = _p50(lambda q, s=search: s.query_vector(q, k=10), Q)
        search.close()
        rec = _recall(got, truth)
        out[f"search_{dtype}_in_memory_s"] = t_ours
        out[f"search_{dtype}_recall_at_10"] = rec
        print(f"  botaclip exact in memory, {dtype} storage: {t_ours * 1e3:.1f} ms p50 ({t_ours / t_np:.2f}x numpy), "
              f"load {load:.1f} s, recall@10 vs float32 truth {rec:.3f}", flush=True)
        stream = SimilaritySearch(store, "emb", method="exact")
        streams, reads = [], []
        for q in Q[:REPEATS]:  # interleaved, best of REPEATS (the page cache and the other jobs vary)
            reads.append(_read_column_s(store))
            t = time.perf_counter()
            stream.query_vector(q, k=10)
            streams.append(time.perf_counter() - t)
        t_stream, t_read = min(streams), min(reads)
        out[f"search_{dtype}_parquet_s"] = t_stream
        out[f"read_column_{dtype}_s"] = t_read
        print(f"  botaclip exact from Parquet, {dtype}: {t_stream:.3f} s vs reading the column with pyarrow "
              f"(+ to numpy) {t_read:.3f} s: {t_stream / t_read:.2f}x (best of {REPEATS})", flush=True)


def _read_column_s(store: Store) -> float:
    """Seconds to read every partition file's h3 and embedding columns into numpy, nothing else."""
    files = sorted((store.path / "features" / "emb").glob("parent=*/data.parquet"))
    spec = store.spec("emb")
    cols = ["h3", "embedding"] + (["embedding_scale"] if spec.dtype == "int8" else [])
    t = time.perf_counter()
    for f in files:
        table = pq.read_table(f, columns=cols)
        table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return time.perf_counter() - t


def bench_ann(root: Path, n: int, out: dict, n_queries: int = 100) -> None:
    """The persistent ANN index: build time, p50 query through `SimilaritySearch` (and raw faiss on the same
    mapped index), recall@10 against exact top-10."""
    from botaclip.store import ann

    store = _search_store(root, n, "float32")
    h, X = store.features_numpy("emb")[:2]
    rng = np.random.default_rng(3)
    qi = rng.choice(len(h), n_queries, replace=False)
    Q = X[qi] + 0.05 * rng.standard_normal((n_queries, X.shape[1]), dtype=np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    truth = [_numpy_top10(X, h, q) for q in Q]
    del X
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    rec = ann.build(Store.open(store.path), "emb")
    build = time.perf_counter() - t
    t = time.perf_counter()
    search = SimilaritySearch(store, "emb", method="ann")
    opened = time.perf_counter() - t
    got = [search.query_vector(q, k=10)[0] for q in Q]
    t_ours = _p50(lambda q: search.query_vector(q, k=10), Q)
    t_raw = _p50(lambda q: search.ann.index.search(q[None], 10), Q)
    r = _recall(got, truth)
    out.update(ann_build_s=build, ann_query_s=t_ours, ann_raw_faiss_s=t_raw, ann_recall_at_10=r,
               ann_index=rec["index_type"], ann_nprobe=rec["nprobe"], ann_open_s=opened)
    print(f"ANN {rec['index_type']} nprobe {rec['nprobe']} over {len(h):,} x 256: build {build:.1f} s (load average "
          f"{load0:.1f} -> {os.getloadavg()[0]:.1f}), open {opened * 1e3:.0f} ms (memory-mapped), p50 query "
          f"{t_ours * 1e3:.2f} ms (raw faiss {t_raw * 1e3:.2f} ms), recall@10 {r:.3f}", flush=True)


def bench_cli(root: Path, n: int, out: dict) -> None:
    """`botaclip store similar` as a whole command (process start to exit) vs `python -c pass`."""
    store = _search_store(root, n, "float32")
    cell = format(int(store.existing_cells("emb")[0]), "x")
    exe = [sys.executable, "-c", "from botaclip.cli import main; main()"]
    env = dict(os.environ)

    def run(args: list[str]) -> str:
        """Best of 3: wall seconds and the child's CPU seconds (steadier than wall time on a loaded machine)."""
        import resource

        walls, cpus = [], []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True, env=env)
            walls.append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        out[f"cli_{len(out)}"] = [min(walls), min(cpus)]
        return f"{min(walls):.2f} s wall / {min(cpus):.2f} s CPU"

    line = (f"`botaclip store similar` over {n:,} x 256 (best of 3): python start {run([sys.executable, '-c', 'pass'])}"
            f", `botaclip --help` {run(exe + ['--help'])}, exact from Parquet "
            f"{run(exe + ['store', 'similar', str(store.path), '--feature-set', 'emb', '--cell', cell, '--exact'])}")
    from botaclip.store import ann

    if ann.status(store, "emb") is not None:
        line += (", with the ANN index "
                 f"{run(exe + ['store', 'similar', str(store.path), '--feature-set', 'emb', '--cell', cell])}")
    print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells per feature set (default 1M)")
    ap.add_argument("--only", choices=["write", "finish", "h3sql", "join", "search", "ann", "cli"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--dir", help="working directory (default: a temporary one, removed at the end)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON at the end")
    ap.add_argument("--dtype", choices=["float32", "float16", "int8"], action="append",
                    help="write: only these storage dtypes (repeatable; default all three)")
    ap.add_argument("--without-torch", action="store_true",
                    help="do not load torch first: float16 is then converted by numpy (as in a process that never "
                         "loaded torch), not by torch (as in `botaclip index`)")
    args = ap.parse_args()
    if not args.without_torch:
        import torch  # noqa: F401  (loaded, as in `botaclip index`: the writer's float16 conversion uses it)
    parts = args.only or ["write", "finish", "h3sql", "join", "search", "ann", "cli"]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="botaclip-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    out: dict = {"cells": args.cells, "duckdb": duckdb.__version__, "cpus": os.cpu_count(), "torch": not args.without_torch,
                 "load_average_start": os.getloadavg()}
    print(f"{args.cells:,} cells, {os.cpu_count()} CPUs, load average {os.getloadavg()}, torch "
          f"{'not loaded (numpy converts float16)' if args.without_torch else 'loaded (it converts float16)'}",
          flush=True)
    try:
        if "write" in parts:
            bench_write(root, args.cells, out, dtypes=tuple(args.dtype or ("float32", "float16", "int8")))
        if "finish" in parts:
            bench_finish(root, args.cells, out)
        if "h3sql" in parts:
            bench_h3sql(args.cells, out)
        if "join" in parts:
            if not (root / "w_float32.store").exists():
                fill(Store.create(root / "w_float32.store"), "emb", args.cells, 768, "float32")
            bench_join(root, args.cells, out)
        for part, fn in (("search", bench_search), ("ann", bench_ann), ("cli", bench_cli)):
            if part in parts:
                fn(root, args.cells, out)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    out["load_average_end"] = os.getloadavg()
    print(f"load average at the end {os.getloadavg()}", flush=True)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
