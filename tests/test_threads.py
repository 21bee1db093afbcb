"""`blas_threads`: BLAS limited inside the block and restored after, the library search done once."""

import sys
import types

import scipy.linalg  # noqa: F401  (SciPy's OpenBLAS loaded, as in the SDM code)
from threadpoolctl import threadpool_info

from botaclip import threads


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_blas_is_limited_inside_and_restored_after():
    n = len(_blas_threads())
    assert n, "no BLAS library found: numpy should have loaded one"
    # The suite runs with OMP_NUM_THREADS=1 (conftest), so widen first to see the limit do something.
    with threads.blas_threads(2):
        assert _blas_threads() == [2] * n
        with threads.blas_threads(1):
            assert _blas_threads() == [1] * n
        assert _blas_threads() == [2] * n


def test_libraries_are_looked_up_once_and_again_after_an_import():
    with threads.blas_threads(1):
        pass
    controller = threads._BLAS
    for _ in range(3):
        with threads.blas_threads(1):
            pass
    assert threads._BLAS is controller  # nothing imported in between: no new search
    sys.modules["_botaclip_test_new_module"] = types.ModuleType("new")  # any import may bring a BLAS library
    try:
        with threads.blas_threads(1):
            pass
    finally:
        del sys.modules["_botaclip_test_new_module"]
    assert threads._BLAS is not controller  # looked up again


def test_zero_or_none_leaves_blas_as_it_is():
    before = _blas_threads()
    for n in (0, None):
        with threads.blas_threads(n):
            assert _blas_threads() == before
