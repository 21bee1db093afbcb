"""A persistent approximate-nearest-neighbour index per embedding feature set: faiss IVF-Flat, inner product on
the stored unit vectors (= cosine), ids = the cells' H3 ids (they fit in int64: bit 63 of an H3 index is 0).

Why faiss IVF-Flat (measured in bench/store.py on clustered 256-d embeddings, 2 shared cores): it builds 1M
vectors in under a minute (k-means on a sample, then one assignment pass), answers in about a millisecond, and its
recall is limited only by the lists probed (no vector quantisation); faiss and usearch HNSW graphs took 2-4x
longer to build 200k vectors and, on clustered data, stayed below recall 0.90 with a beam of 128. `faiss.read_index` with
``IO_FLAG_MMAP`` maps the inverted lists from the file, so opening is instant and pages are shared between
processes.

Layout: ``STORE/ann/<name>/<build id>/index.faiss``, recorded in the catalog table ``ann_indexes`` with the
fingerprint of the set it was built from (its creation, the last writer run on it and its partitions' rows and
bytes). Any later write to the set changes the fingerprint, so the index reads as stale (searches fall back to
exact and say so) until it is built again; replacing the set (``--overwrite``) drops the record and the files.
A build holds the store's writer lock, writes aside (``.tmp``) and commits by one rename plus the catalog.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from botaclip.atomic import fsync_dir
from botaclip.errors import InvalidInputError, MissingDependencyError, StoreWriteError, param, root_cause
from botaclip.store.catalog import CatalogState, read_record, utcnow, write_catalog
from botaclip.store.lock import WriterLock

if TYPE_CHECKING:
    from botaclip.store.store import Store

ANN_DIR = "ann"
INDEX_FILE = "index.faiss"
TABLE = "ann_indexes"


def load_faiss():
    """The faiss module, or a MissingDependencyError naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise MissingDependencyError("the ANN index needs faiss: pip install 'botaclip[ann]' (faiss-cpu), or search "
                                     f"exactly with {param('exact')}") from None
    return faiss


def fingerprint(state: CatalogState, name: str) -> str:
    """What the set is now: its creation, the last writer run on it, its partitions (rows, bytes)."""
    rec = state.feature_sets[name]
    last_run = max((r["run_id"] for r in state.runs if r["feature_set"] == name), default=0)
    parts = sorted((int(p), int(r), int(b)) for p, (r, b) in state.partitions.get(name, {}).items())
    text = json.dumps([str(rec.get("created")), last_run, parts])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def default_nlist(rows: int) -> int:
    """Inverted lists: about 2 sqrt(N), with at least 39 training points per list (faiss's k-means floor)."""
    return int(max(1, min(round(2 * np.sqrt(rows)), rows // 39)))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: recall@10 >= 0.95 on the clustered bench sets (see docs/benchmarks.md)."""
    return int(min(nlist, max(8, nlist // 32)))


def index_dir(store: "Store", name: str) -> Path:
    return store.path / ANN_DIR / name


def status(store: "Store", name: str) -> dict | None:
    """The catalog record of `name`'s index plus ``fresh`` (built from the set as it is now) and ``path``, or
    None when no index was built."""
    rec = read_record(store.catalog_path, TABLE, name)  # before the set's state: a race reads as stale, not fresh
    state = store.catalog()
    if name not in state.feature_sets:
        store.spec(name)  # the clear error for an unknown set
    if rec is None:
        return None
    out = dict(rec)
    out["path"] = store.path / rec["dir"] / INDEX_FILE
    out["fresh"] = rec["source_fingerprint"] == fingerprint(state, name) and state.spec(name).dim == rec["dim"]
    return out


def build(store: "Store", name: str, *, nlist: int | None = None, nprobe: int | None = None,
          threads: int | None = None, seed: int = 0) -> dict:
    """Build (or rebuild) the ANN index of embedding set `name` and record it; returns its catalog record.

    Holds the writer lock for the build (writers wait; readers do not). Memory: the set as float32 (N x D x 4
    bytes) plus the index of the same size. `nlist`/`nprobe`: inverted lists and lists probed per query (defaults
    from the number of rows); `threads`: faiss threads (default: all cores)."""
    faiss = load_faiss()
    if store.read_only:
        raise InvalidInputError(f"store {store.path} was opened read-only; open it with read_only=False to build")
    spec = store.spec(name)
    if not spec.is_embedding:
        raise InvalidInputError(f"feature set {name!r} holds columns, not embeddings; an ANN index needs embeddings")
    with WriterLock(store.path):
        state = store.catalog()
        ids, X = _read_all(store, name, spec.dim)
        if len(ids) == 0:
            raise InvalidInputError(f"feature set {name!r} holds no rows; write some before building an index")
        nlist = int(nlist or default_nlist(len(ids)))
        if not 1 <= nlist <= len(ids):
            raise InvalidInputError(f"{param('nlist')} must be between 1 and the {len(ids)} rows, got {nlist}")
        nprobe = int(min(nlist, nprobe or default_nprobe(nlist)))
        if threads:
            faiss.omp_set_num_threads(int(threads))
        t0 = time.perf_counter()
        index = _train_and_add(faiss, X, ids, nlist, seed)
        seconds = time.perf_counter() - t0
        build_id = f"{utcnow():%Y%m%dT%H%M%S}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        rel = Path(ANN_DIR) / name / build_id
        rec = {"library": "faiss", "library_version": getattr(faiss, "__version__", "?"),
               "index_type": f"IVF{nlist},Flat", "metric": "inner_product", "dir": str(rel), "rows": int(len(ids)),
               "dim": int(spec.dim), "nlist": nlist, "nprobe": nprobe, "source_fingerprint": fingerprint(state, name),
               "build_seconds": float(seconds), "built": utcnow()}
        _commit(store, faiss, index, rel, state, name, rec)
    return {**rec, "name": name}


def _read_all(store: "Store", name: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    hs, xs = [], []
    for _, h, X in store.iter_partitions(name):
        hs.append(h)
        xs.append(X)
    if not hs:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate(hs).astype(np.int64), np.ascontiguousarray(np.concatenate(xs), dtype=np.float32)


def _train_and_add(faiss, X: np.ndarray, ids: np.ndarray, nlist: int, seed: int):
    quantizer = faiss.IndexFlatIP(X.shape[1])
    index = faiss.IndexIVFFlat(quantizer, X.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    sample = min(len(X), 50 * nlist)  # k-means on 50 points per list: enough for the centroids, and fast
    rng = np.random.default_rng(seed)
    train = X if sample == len(X) else X[np.sort(rng.choice(len(X), sample, replace=False))]
    index.train(train)
    index.add_with_ids(X, ids)
    return index


def _commit(store: "Store", faiss, index, rel: Path, state: CatalogState, name: str, rec: dict) -> None:
    """Write the index aside, move it into place, record it; on failure nothing changes but a leftover dir."""
    tmp = store.path / ".tmp" / f"ann-{name}-{os.getpid()}-{time.monotonic_ns()}"
    final = store.path / rel
    try:
        tmp.mkdir(parents=True)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        with open(tmp / INDEX_FILE, "rb") as fh:
            os.fsync(fh.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except (OSError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreWriteError(f"cannot write the ANN index of {name!r} in store {store.path}: {root_cause(exc)}; "
                              "the store is unchanged") from None
    state.set_record(TABLE, name, rec)
    try:
        write_catalog(store.catalog_path, state, store.path)
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    for old in final.parent.iterdir():  # earlier builds: no longer referenced
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def drop(store: "Store", name: str) -> bool:
    """Remove `name`'s index (record and files); False when there was none."""
    store.spec(name)
    with WriterLock(store.path):
        if read_record(store.catalog_path, TABLE, name) is None:
            return False
        state = store.catalog()
        state.drop_record(TABLE, name)
        write_catalog(store.catalog_path, state, store.path)
    shutil.rmtree(index_dir(store, name), ignore_errors=True)
    return True


class AnnIndex:
    """An opened (memory-mapped) index: `search(q, k)` -> (h3 uint64[<=k], cosine float32[<=k]), best first."""

    def __init__(self, store: "Store", name: str, record: dict) -> None:
        faiss = load_faiss()
        path = record["path"]
        if not Path(path).is_file():
            raise InvalidInputError(f"the ANN index file {path} of {name!r} is missing; rebuild it with "
                                    f"`botaclip store ann build {store.path} --feature-set {name}`")
        self.index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        self.nprobe = int(record["nprobe"])
        self.index.nprobe = self.nprobe
        self.rows = int(self.index.ntotal)
        self.description = f"faiss {record['index_type']}, nprobe {self.nprobe}"

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = int(min(k, self.rows))
        D, I = self.index.search(np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1), k)
        ok = I[0] >= 0
        return I[0][ok].astype(np.uint64), D[0][ok].astype(np.float32)
