"""Which ANN library for the store's persistent index: faiss IVF vs faiss HNSW vs usearch HNSW, side by side on
the same clustered embeddings (a Gaussian mixture of 300 clusters, unit vectors), against exact top-10.

    pip install usearch                              # faiss-cpu comes with the `ann` extra
    python bench/ann_libraries.py --rows 200000     # the numbers in docs/benchmarks.md

Prints build seconds, p50 single-query latency and recall@10 per library and setting (2 threads for builds).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((300, d)).astype(np.float32)
    x = centres[rng.integers(0, 300, n)] + 0.35 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def p50_and_recall(search, Q: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    times, got = [], []
    for q in Q:
        t = time.perf_counter()
        got.append(search(q))
        times.append(time.perf_counter() - t)
    recall = np.mean([len(set(map(int, g)) & set(map(int, t))) / 10 for g, t in zip(got, truth)])
    return float(np.median(times)), float(recall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()
    import faiss
    from usearch.index import Index

    X = clustered(args.rows, args.dim)
    rng = np.random.default_rng(1)
    Q = X[rng.choice(len(X), 100, replace=False)] + 0.05 * rng.standard_normal((100, args.dim)).astype(np.float32)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    truth = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    faiss.omp_set_num_threads(2)
    nlist = int(2 * np.sqrt(len(X)))
    for desc in (f"IVF{nlist},Flat", f"IVF{nlist},SQ8"):
        t = time.perf_counter()
        ix = faiss.index_factory(args.dim, desc, faiss.METRIC_INNER_PRODUCT)
        ix.train(X[rng.choice(len(X), min(len(X), 50 * nlist), replace=False)])
        ix.add(X)
        build = time.perf_counter() - t
        for nprobe in (8, 16, 32):
            ix.nprobe = nprobe
            lat, rec = p50_and_recall(lambda q, ix=ix: ix.search(q[None], 10)[1][0], Q, truth)
            print(f"faiss {desc}: build {build:.1f} s, nprobe {nprobe}: p50 {lat * 1e3:.2f} ms, recall@10 {rec:.3f}",
                  flush=True)
    t = time.perf_counter()
    ix = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    ix.hnsw.efConstruction = 64
    ix.add(X)
    build = time.perf_counter() - t
    for ef in (32, 64, 128):
        ix.hnsw.efSearch = ef
        lat, rec = p50_and_recall(lambda q, ix=ix: ix.search(q[None], 10)[1][0], Q, truth)
        print(f"faiss HNSW32 (efConstruction 64): build {build:.1f} s, efSearch {ef}: p50 {lat * 1e3:.2f} ms, "
              f"recall@10 {rec:.3f}", flush=True)
    for dtype in ("f16", "i8"):
        t = time.perf_counter()
        ix = Index(ndim=args.dim, metric="cos", dtype=dtype, connectivity=16, expansion_add=64)
        ix.add(np.arange(len(X), dtype=np.uint64), X, threads=2)
        build = time.perf_counter() - t
        for ef in (32, 64, 128):
            ix.expansion_search = ef
            lat, rec = p50_and_recall(lambda q, ix=ix: ix.search(q, 10).keys, Q, truth)
            print(f"usearch HNSW {dtype} (M 16, expansion_add 64): build {build:.1f} s, ef {ef}: "
                  f"p50 {lat * 1e3:.2f} ms, recall@10 {rec:.3f}", flush=True)


if __name__ == "__main__":
    main()
