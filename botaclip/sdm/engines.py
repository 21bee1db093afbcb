"""Where the species of `sdm compare` run: in this process, in worker processes on this machine, or on a Ray
cluster. Every engine runs the same function on the same inputs (each species' labelled cells, folds and the
feature tables) and returns the same rows in species order, so the report does not depend on the engine.

Memory: the feature tables are read once by the driver. Local workers map them from one temporary ``.npy``
file each (``np.load(mmap_mode='r')``), so they share the page cache instead of holding copies; Ray workers read
them from the object store (zero-copy for NumPy arrays). What a process derives from the tables for all its
species (LightGBM's binned matrices) is kept with them (:meth:`FeatureTables.once`), once per process; what the
driver derived before the workers start and can write to a file (an object with ``save(path) -> dict`` and
``load(path, **that dict)``) travels to local workers as one temporary file each instead of being made again.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.ray_cluster import import_ray, ray_init

ENGINES = ("local", "ray")


class FeatureTables(dict):
    """name -> (X float32 [n, d], column names): the feature tables that every task of a run reads, and what a
    process derives from them once for all the tasks it runs (:meth:`once`). Derived objects are never sent to
    another process: each one makes its own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._derived: dict = {}

    def once(self, key, make: Callable):
        """``make()``, computed on the first call with ``key`` in this process and reused after."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def __reduce__(self):
        return FeatureTables, (dict(self),)

    def save_derived(self, folder: Path) -> list:
        """Write what was derived here and can be written (see the module's docstring) into ``folder``; returns
        what :meth:`load_derived` takes in another process."""
        out = []
        for i, (key, value) in enumerate(self._derived.items()):
            if hasattr(value, "save") and hasattr(type(value), "load"):
                path = Path(folder) / f"derived{i}"
                out.append((key, type(value), str(path), value.save(path)))
        return out

    def load_derived(self, saved: list) -> None:
        """What :meth:`save_derived` wrote, loaded as if derived here."""
        for key, kind, path, meta in saved:
            self._derived[key] = kind.load(path, **meta)


#: The feature tables of a worker process, and the folder they were loaded from (once per process and run).
_WORKER_TABLES: FeatureTables | None = None
_WORKER_SOURCE: str | None = None


def worker_count(jobs: int | None, n_tasks: int) -> int:
    """Worker processes for ``n_tasks`` tasks: ``jobs`` (None: the machine's cores), at most one per task."""
    available = os.cpu_count() or 1
    return max(1, min(jobs or available, n_tasks))


class LocalWorkers:
    """``n`` worker processes on this machine, started at once: each imports ``modules`` (the tasks' code)
    while the caller is still preparing the tasks. Starting a worker costs about 3 CPU-s of imports (LightGBM
    brings scikit-learn, SciPy and pandas); a comparison's driver reads and bins the feature tables meanwhile.

    A context manager: leaving it normally waits for the workers to finish; leaving it on an exception (bad
    input found while preparing, a failed task, Ctrl-C) stops them at once."""

    def __init__(self, n: int, modules: Sequence[str] = ()):
        import multiprocessing

        # spawn, not fork: a forked child of a process that has run OpenMP (LightGBM, BLAS) can deadlock.
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(n, mp_context=context, initializer=_start_worker, initargs=(tuple(modules),))
        for _ in range(n):  # the pool starts one process per submission that finds none idle
            self.pool.submit(int)

    def __enter__(self) -> "LocalWorkers":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=exc_type is not None)


def run_tasks(task: Callable, inputs: list, tables: dict, *, jobs: int | None, engine: str = "local",
              ray_address: str | None = None, workers: LocalWorkers | None = None,
              on_result: Callable[[int, object], None] | None = None) -> list:
    """``task(input, tables)`` for every input, results in input order.

    ``tables``: name -> (X float32 [n, d], column names), the same for every task; each task gets them as
    :class:`FeatureTables` (the caller's own object when the tasks run in this process). ``jobs``: worker processes
    (local) or concurrent tasks (Ray); 1 runs everything in this process. ``workers``: local worker processes
    already started (:class:`LocalWorkers`), used instead of starting ``jobs`` of them. ``on_result(i, result)``:
    called as each task finishes, in the order they finish."""
    if engine not in ENGINES:
        raise InvalidInputError(f"unknown {param('engine')} {engine!r}; choose from {', '.join(ENGINES)}")
    if not isinstance(tables, FeatureTables):
        tables = FeatureTables(tables)
    on_result = on_result or (lambda i, result: None)
    if engine == "ray":
        return _run_ray(task, inputs, tables, ray_address, on_result)
    if workers is not None:
        return _run_processes(task, inputs, tables, workers, on_result)
    n = worker_count(jobs, len(inputs))
    if n == 1:
        out = []
        for i, item in enumerate(inputs):
            out.append(task(item, tables))
            on_result(i, out[-1])
        return out
    with LocalWorkers(n) as started:
        return _run_processes(task, inputs, tables, started, on_result)


def _run_processes(task, inputs, tables, workers: LocalWorkers, on_result) -> list:
    with tempfile.TemporaryDirectory(prefix="botaclip_sdm_") as tmp:
        paths = {}
        for i, (name, (X, cols)) in enumerate(tables.items()):
            path = Path(tmp) / f"t{i}.npy"
            np.save(path, np.ascontiguousarray(X, dtype=np.float32))
            paths[name] = (str(path), list(cols))
        shared = (tmp, paths, tables.save_derived(Path(tmp)))
        results: list = [None] * len(inputs)
        futures = {workers.pool.submit(_run_in_worker, task, item, shared): i for i, item in enumerate(inputs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            on_result(futures[future], results[futures[future]])
        return results


def _start_worker(modules: tuple[str, ...]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for module in modules:
        importlib.import_module(module)
    from threadpoolctl import threadpool_limits

    # The variable above comes after NumPy loaded its BLAS in this process: limit the pools already loaded too
    # (each worker is one core's worth of fits; spinning BLAS threads cost up to 10x, docs/benchmarks.md).
    threadpool_limits(limits=1)


def _run_in_worker(task, item, shared: tuple[str, dict, list]):
    """``task(item, tables)`` with the tables :func:`_run_processes` wrote to a folder, mapped once per process
    (a pool started before the tables existed learns where they are from its first task)."""
    global _WORKER_TABLES, _WORKER_SOURCE
    folder, paths, derived = shared
    if _WORKER_SOURCE != folder:
        _WORKER_TABLES = FeatureTables({name: (np.load(path, mmap_mode="r"), cols)
                                        for name, (path, cols) in paths.items()})
        _WORKER_TABLES.load_derived(derived)
        _WORKER_SOURCE = folder
    return task(item, _WORKER_TABLES)


def _run_ray(task, inputs, tables, address: str | None, on_result) -> list:
    ray = import_ray()
    started = ray_init(ray, address)
    try:
        tables_ref = ray.put(tables)
        remote = ray.remote(num_cpus=1)(_run_on_ray)
        refs = [remote.remote(task, item, tables_ref) for item in inputs]
        results: list = [None] * len(refs)
        pending = dict(zip(refs, range(len(refs))))
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            results[i] = ray.get(done[0])
            on_result(i, results[i])
        return results
    finally:
        if started:
            ray.shutdown()


def _run_on_ray(task, item, tables):
    return task(item, tables)
