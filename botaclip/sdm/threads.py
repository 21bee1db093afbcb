"""How many threads BLAS (NumPy's and SciPy's linear algebra) may use inside the SDM code."""

from __future__ import annotations

_BLAS = None  # threadpoolctl's view of the loaded BLAS libraries, found once (a search takes ~50 ms)


def blas_threads(n_jobs: int | None):
    """A context in which BLAS (NumPy's and SciPy's linear algebra) uses ``n_jobs`` threads (0 or None: as many
    as it likes).

    Why: a fit on a few thousand rows is a string of small products; OpenBLAS threads that wait for a core on a
    busy machine (or in each of several worker processes) spin instead, costing up to 10x the CPU of one thread
    (docs/benchmarks.md, "SDM speed")."""
    global _BLAS
    if _BLAS is None:
        import scipy.linalg  # noqa: F401  (SciPy's own OpenBLAS, which the logistic solver uses, is then loaded)
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=n_jobs or None, user_api="blas")
