"""Feature-store benchmarks: write throughput, bytes per cell, point join, similarity search, H3 SQL speed.

    python bench/store.py                    # 1M cells (the numbers in docs/benchmarks.md)
    python bench/store.py --cells 50000      # quick run
    PYTHONPATH=/path/to/duckdb-1.5.5-with-vss python bench/store.py --only similarity   # HNSW too

Streams in partitions of 2401 cells (resolution-10 children of resolution-6 parents) so memory stays bounded.
Prints one line per number; JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import h3.api.basic_int as h3i
import numpy as np

from botaclip.store import Store, register_h3_functions
from botaclip.store.similarity import SimilaritySearch, load_vss

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


def fill(store: Store, name: str, n_cells: int, dim: int, dtype: str, seed: int = 0) -> tuple[float, int]:
    """Write n_cells random unit embeddings; returns (seconds spent in the writer, rows)."""
    rng = np.random.default_rng(seed)
    spent, rows = 0.0, 0
    with store.writer(name, kind="backbone", dim=dim, dtype=dtype, provenance={"model": "bench"}) as w:
        for parent in parents_for(n_cells):
            cells = cells_of(parent)[: n_cells - rows]
            emb = rng.standard_normal((len(cells), dim), dtype=np.float32)
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


def bench_write(root: Path, n: int, out: dict) -> None:
    for dtype in ("float32", "float16", "int8"):
        store = Store.create(root / f"w_{dtype}.store")
        secs, rows = fill(store, "emb", n, 768, dtype)
        size = store.info("emb")["bytes"]
        out[f"write_768d_{dtype}_rows_per_s"] = rows / secs
        out[f"bytes_per_cell_768d_{dtype}"] = size / rows
        print(f"write {rows} x 768 {dtype}: {secs:.1f} s, {rows / secs:,.0f} rows/s, "
              f"{size / rows:,.0f} bytes/cell on disk", flush=True)
        if dtype != "float32":
            shutil.rmtree(store.path)


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


def exact_top(store: Store, name: str, queries: np.ndarray, k: int) -> list[list[int]]:
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_h = np.zeros((len(queries), k), dtype=np.uint64)
    for _, h, X in store.iter_partitions(name):
        s = queries @ X.T
        allh = np.concatenate([best_h, np.broadcast_to(h, (len(queries), len(h)))], axis=1)
        alls = np.concatenate([best_s, s], axis=1)
        idx = np.argsort(-alls, axis=1)[:, :k]
        best_h = np.take_along_axis(allh, idx, axis=1)
        best_s = np.take_along_axis(alls, idx, axis=1)
    return [row.tolist() for row in best_h]


def bench_similarity(root: Path, n: int, out: dict, n_queries: int = 5) -> None:
    path = root / "sim.store"
    if not path.exists():
        store = Store.create(path)
        secs, _ = fill(store, "emb256", n, 256, "float32", seed=1)
        print(f"(wrote {n:,} x 256 float32 in {secs:.1f} s)", flush=True)
    store = Store.open(path)
    rng = np.random.default_rng(2)
    h_all = store.existing_cells("emb256")
    qcells = rng.choice(h_all, n_queries, replace=False)
    Q = store.features_numpy("emb256", cells=qcells).X
    truth = exact_top(store, "emb256", Q, 10)
    methods = ["brute"] + (["hnsw"] if load_vss(duckdb.connect()) else [])
    if "hnsw" not in methods:
        print(f"HNSW: not available (duckdb {duckdb.__version__} has no vss extension here; "
              "install botaclip[ann] = duckdb 1.5.5 + duckdb-extension-vss)", flush=True)
        out["hnsw"] = "unavailable"
    variants = [("brute", False), ("brute", True)] + [(m, True) for m in methods if m != "brute"]
    for method, in_memory in variants:
        label = method + ("_in_memory" if in_memory and method == "brute" else "")
        t = time.perf_counter()
        search = SimilaritySearch(store, "emb256", method=method, in_memory=in_memory)
        build = time.perf_counter() - t
        lat, recall = [], []
        for q, tr in zip(Q, truth):
            t = time.perf_counter()
            h, _ = search.query_vector(q, k=10)
            lat.append(time.perf_counter() - t)
            recall.append(len(set(h.tolist()) & set(tr)) / 10)
        search.close()
        out[f"similarity_{label}_latency_s"] = float(np.median(lat))
        out[f"similarity_{label}_recall_at_10"] = float(np.mean(recall))
        out[f"similarity_{label}_build_s"] = build
        print(f"top-10 over {n:,} x 256 ({label}, duckdb {duckdb.__version__}): median latency "
              f"{np.median(lat):.3f} s, recall@10 {np.mean(recall):.3f}, index build {build:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells per feature set (default 1M)")
    ap.add_argument("--only", choices=["write", "h3sql", "join", "similarity"], action="append",
                    help="run only these parts (repeatable)")
    ap.add_argument("--dir", help="working directory (default: a temporary one, removed at the end)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON at the end")
    args = ap.parse_args()
    parts = args.only or ["write", "h3sql", "join", "similarity"]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="botaclip-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    out: dict = {"cells": args.cells, "duckdb": duckdb.__version__, "cpus": os.cpu_count()}
    try:
        if "write" in parts:
            bench_write(root, args.cells, out)
        if "h3sql" in parts:
            bench_h3sql(args.cells, out)
        if "join" in parts:
            if not (root / "w_float32.store").exists():
                fill(Store.create(root / "w_float32.store"), "emb", args.cells, 768, "float32")
            bench_join(root, args.cells, out)
        if "similarity" in parts:
            bench_similarity(root, args.cells, out)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
