"""How many threads BLAS (NumPy's and SciPy's linear algebra) may use for a block of code."""

from __future__ import annotations

import sys

_BLAS = None  # threadpoolctl's view of the loaded BLAS libraries (a search takes 50-90 ms)
_MODULES = -1  # len(sys.modules) when _BLAS was made


def blas_threads(n_jobs: int | None):
    """A context in which BLAS (NumPy's and SciPy's linear algebra) uses ``n_jobs`` threads (0 or None: as many
    as it likes).

    Why: a product of a few thousand rows (an SDM fit, one partition of a similarity scan) is too small for
    threads; OpenBLAS threads that wait for a core on a busy machine (or in each of several worker processes)
    spin instead, costing up to 10x the CPU of one thread, or 100x the wall time (docs/benchmarks.md, "SDM
    speed" and "Feature store"). The libraries are looked up again only when modules were imported since the last
    call (a new BLAS library comes with an import: SciPy, torch, faiss each bring their own), so a loop of
    calls does not pay threadpoolctl's search each time."""
    global _BLAS, _MODULES
    if _BLAS is None or len(sys.modules) != _MODULES:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
        _MODULES = len(sys.modules)  # after the import of threadpoolctl itself
    return _BLAS.limit(limits=n_jobs or None, user_api="blas")
