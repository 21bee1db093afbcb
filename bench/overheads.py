"""Fixed costs a pipeline run pays hundreds of times, each beside the way it was paid before, in the same run.

    .venv/bin/python bench/overheads.py                  # catalog reads and paired tests (seconds)
    .venv/bin/python bench/overheads.py --demo           # also the tests' tiny demo end to end (about a minute)
    PYTHONPATH=BASE .venv/bin/python bench/overheads.py --demo --only demo   # the demo on older code (BASE:
                                                         # `git archive <commit> botaclip | tar -x -C BASE`)

- **A catalog read** (`Store.catalog()`, behind every `spec`, `info` and feature lookup): the catalog ATTACHed to
  the one in-memory DuckDB connection kept per process, against a new in-memory database per read, as before
  (DuckDB registers every built-in function in each new database). Best of 5 rounds of 20 reads of a catalog
  of 40 feature sets.
- **A catalog write** (each finished partition, each writer's start and end): rows inserted a batch per statement
  against one statement per row, as before, on the same catalog state (40 feature sets and 60 writer runs).
- **The paired Wilcoxon p-value** of a comparison or ranking with tied per-species differences: botaclip's
  enumeration of the sign patterns against `scipy.stats.wilcoxon`, which runs its generic permutation test,
  for 6, 10 and 13 pairs; the p-values must be equal.
- **The tiny demo** (`--demo`): the options of `tests/test_demo.py` (1 km, dofa-tiny, 2 seeds, 3 folds), its
  step times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"  # tests/test_demo.py holds the tiny demo's options


def catalog_reads(folder: Path, sets: int = 40, rounds: int = 5, reads: int = 20) -> None:
    import h3.api.basic_int as h3i

    from botaclip.store import Store
    from botaclip.store.catalog import connect_read_only, load_state, read_catalog

    store = Store.create(folder / "s.store")
    cells = np.array(sorted(h3i.cell_to_children(h3i.latlng_to_cell(45.19, 5.72, 6), 10))[:50], dtype=np.uint64)
    for i in range(sets):
        with store.writer(f"set{i:02d}", kind="covariates", columns=["a"]) as w:
            w.write(cells, columns={"a": np.full(cells.size, float(i))})
    path = store.catalog_path

    def new_database_per_read():  # as read_catalog did before: a connection of its own, as user SQL still gets
        con = connect_read_only(path)
        try:
            return load_state(con, path)
        finally:
            con.close()

    assert new_database_per_read().feature_sets.keys() == read_catalog(path).feature_sets.keys()
    for label, read in (("kept connection (now)", lambda: read_catalog(path)),
                        ("new database per read (before)", new_database_per_read)):
        best = min(_timed(read, reads) for _ in range(rounds))
        print(f"catalog read, {sets} feature sets, {label}: {1000 * best:.1f} ms")
    catalog_writes(store, rounds)


def catalog_writes(store, rounds: int) -> None:
    import datetime as dt

    from botaclip.store import catalog
    from botaclip.store.catalog import read_catalog, write_catalog

    state = read_catalog(store.catalog_path)
    t0 = dt.datetime(2026, 1, 1)
    state.runs += [{"run_id": 1000 + i, "feature_set": "set00", "pid": i, "host": "h", "started": t0, "finished": t0,
                    "status": "done", "rows_written": 1, "partitions_written": 1, "botaclip_version": "0"}
                   for i in range(60 - len(state.runs))]

    def row_by_row(con, table, cols, rows):  # what catalog writes did before
        for row in rows:
            con.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row)

    batched = catalog._insert_rows
    for label, insert in (("a batch of rows per INSERT (now)", batched), ("one INSERT per row (before)", row_by_row)):
        catalog._insert_rows = insert
        try:
            best = min(_timed(lambda: write_catalog(store.catalog_path, state, store.path), 3) for _ in range(rounds))
        finally:
            catalog._insert_rows = batched
        print(f"catalog write, {len(state.feature_sets)} feature sets, {len(state.runs)} runs, {label}: "
              f"{1000 * best:.0f} ms")


def paired_tests() -> None:
    from scipy import stats

    from botaclip.sdm.signed_rank import wilcoxon_p

    rng = np.random.default_rng(0)
    for n in (6, 10, 13):
        a = rng.choice([0.2, 0.4, 0.6], n)  # few distinct scores: tied differences
        b = a - rng.choice([-0.2, 0.2, 0.4], n)
        mine, theirs = wilcoxon_p(a, b), float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
        assert mine == theirs, (n, mine, theirs)
        t_mine = _timed(lambda a=a, b=b: wilcoxon_p(a, b), 20)
        t_scipy = _timed(lambda a=a, b=b: stats.wilcoxon(a, b, zero_method="wilcox"), 1)
        print(f"paired Wilcoxon, {n} pairs with ties: botaclip {1000 * t_mine:.2f} ms, scipy {1000 * t_scipy:.0f} ms, "
              f"p = {mine:.6g} both")


def tiny_demo(folder: Path) -> None:
    import sys

    from botaclip.pipeline.demo import DemoOptions, run_demo

    sys.path.insert(0, str(TESTS))
    from test_demo import TINY

    t = time.perf_counter()
    report = run_demo(DemoOptions(out=folder / "demo", **TINY), echo=lambda line: None)
    steps = ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items() if k != "total")
    print(f"tiny demo: {time.perf_counter() - t:.1f} s in all ({steps})")
    # A fingerprint of every score and p-value of the report, to compare two versions' runs.
    scores = {task: block["scores"] for task, block in report.to_dict()["tasks"].items()}
    digest = hashlib.sha256(json.dumps(scores, sort_keys=True, default=str).encode()).hexdigest()[:16]
    print(f"tiny demo: scores and p-values sha256 {digest}")


def _timed(call, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", action="store_true", help="also run the tests' tiny demo end to end")
    ap.add_argument("--only", choices=["catalog", "paired", "demo"], action="append", help="only these parts")
    args = ap.parse_args()
    parts = args.only or ["catalog", "paired"] + (["demo"] if args.demo else [])
    with tempfile.TemporaryDirectory(prefix="botaclip_overheads_") as tmp:
        if "catalog" in parts:
            catalog_reads(Path(tmp))
        if "paired" in parts:
            paired_tests()
        if "demo" in parts:
            tiny_demo(Path(tmp))


if __name__ == "__main__":
    main()
