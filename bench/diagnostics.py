"""Time and peak memory of `diagnose` on a store larger than its sample.

Builds a store (in a temp dir unless --store) with two embedding feature sets over a disk of res-10 cells: a
"backbone" (habitat prototypes + a smooth spatial field + noise) and an "adapted" one (a random linear map of it
that sharpens habitats), plus a labels Parquet file, written in chunks. Then runs `diagnose` in a fresh process
and prints wall time and peak resident memory of that process.

    OMP_NUM_THREADS=2 .venv/bin/python bench/diagnostics.py --cells 100000 --dim 768 --sample 20000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h3.api.basic_int as h3i
import numpy as np
import pandas as pd

RUN = """
import json, resource, sys, time
from botaclip.store import Store
from botaclip.diagnostics import diagnose
store_path, labels, sample, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
report = diagnose(Store.open(store_path, read_only=True), ["backbone", "adapted"], labels=labels,
                  sample=sample, seed=0, out_dir=out)
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
                  "results": report.to_dict()["results"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--store", type=Path, default=None, help="reuse or create the store here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-diag-"))
    store_path = args.store or work / "bench.store"
    labels_path = store_path.parent / (store_path.name + ".labels.parquet")
    if not store_path.exists():
        t0 = time.perf_counter()
        n = write_store(store_path, labels_path, args.cells, args.dim)
        print(f"built store: {n} cells x {args.dim} dims, 2 feature sets, in {time.perf_counter() - t0:.1f} s")
    run = subprocess.run([sys.executable, "-c", RUN, str(store_path), str(labels_path), str(args.sample),
                          str(work / "out")], capture_output=True, text=True, check=True)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"diagnose: sample {args.sample}, 2 feature sets: {result['wall_s']:.1f} s wall, "
          f"{result['cpu_s']:.1f} s CPU (process incl. imports), peak RSS {result['peak_rss_mb']:.0f} MB")
    for name, values in result["results"].items():
        shown = {k: round(v, 3) for k, v in values.items() if isinstance(v, float)}
        print(f"  {name}: {shown}")


def write_store(store_path: Path, labels_path: Path, n_cells: int, dim: int, chunk: int = 20_000) -> int:
    """Write the two feature sets and the labels file chunk by chunk (never all features in memory)."""
    from botaclip.store import Store

    radius = int(np.ceil((np.sqrt(12 * n_cells - 3) - 3) / 6))  # a disk of radius r has 3r(r+1)+1 cells
    cells = np.array(sorted(h3i.grid_disk(h3i.latlng_to_cell(45.19, 5.72, 10), radius)), dtype=np.uint64)[:n_cells]
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(4, dim)).astype(np.float32)
    field_dirs = rng.normal(size=(2, dim)).astype(np.float32)
    adapter = (np.eye(dim) + rng.normal(size=(dim, dim)) / np.sqrt(dim)).astype(np.float32)
    store = Store.create(store_path, resolution=10)
    labels = []
    with store.writer("backbone", kind="backbone", dim=dim) as wb:
        adapted_chunks = []
        for start in range(0, len(cells), chunk):
            part = cells[start:start + chunk]
            latlng = np.array([h3i.cell_to_latlng(c) for c in part.tolist()])
            u = (latlng[:, 0] - 45.19) * 80
            v = (latlng[:, 1] - 5.72) * 60
            habitat = (np.sin(u) > 0).astype(int) * 2 + (np.cos(v) > 0).astype(int)
            X = (prototypes[habitat] + np.outer(np.sin(0.5 * u + v), field_dirs[0])
                 + np.outer(np.cos(u - 0.3 * v), field_dirs[1]) + 1.5 * rng.normal(size=(len(part), dim)))
            X = X.astype(np.float32)
            wb.write(h3=part, embedding=X / np.linalg.norm(X, axis=1, keepdims=True))
            A = X @ adapter + 1.5 * prototypes[habitat]
            adapted_chunks.append((part, (A / np.linalg.norm(A, axis=1, keepdims=True)).astype(np.float16)))
            labels.append(pd.DataFrame({"h3": part, "habitat": np.array(["scree", "meadow", "forest", "wetland"])
                                        [habitat]}))
    with store.writer("adapted", kind="botaclip", dim=dim) as wa:
        for part, A in adapted_chunks:
            wa.write(h3=part, embedding=A.astype(np.float32))
    pd.concat(labels).to_parquet(labels_path)
    return len(cells)


if __name__ == "__main__":
    main()
