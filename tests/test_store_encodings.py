"""Compact embedding encodings. float16: torch's vectorised conversion (used when torch is loaded) and numpy's give the same bits, so
a store's bytes do not depend on which one ran."""

from __future__ import annotations

import sys

import h3
import numpy as np
import torch

from botaclip.store import Store
from botaclip.store.float16 import to_float16


def _patterns() -> np.ndarray:
    """float32 values from a sweep of bit patterns (every sign, exponent, and mantissas around float16's rounding
    boundaries: ties, float16 subnormals, overflow to infinity), NaN left out (its payload is not data)."""
    u = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    ties = (np.arange(0, 2**19, dtype=np.uint32) << 13) | np.uint32(0x1000)  # exactly half a float16 step
    x = np.concatenate([u, ties, ties - 1, ties + 1]).view(np.float32)
    return x[~np.isnan(x)]


def test_torch_and_numpy_round_to_the_same_float16_bits():
    assert "torch" in sys.modules
    x = _patterns()
    with np.errstate(over="ignore"):  # values beyond float16's range become infinities, in both
        ref = x.astype(np.float16)
        got = to_float16(x, np.empty(x.shape, np.float16))
        frozen = x.copy()
        frozen.flags.writeable = False  # torch cannot wrap it: numpy converts
        slow = to_float16(frozen, np.empty(x.shape, np.float16))
    assert np.isinf(ref).any() and (ref == 0).any() and (np.abs(ref[ref != 0]) < 2**-14).any()
    assert np.array_equal(got.view(np.uint16), ref.view(np.uint16))
    assert np.array_equal(slow.view(np.uint16), ref.view(np.uint16))
    assert torch.get_num_threads() >= 1


def _write(path, cells, x) -> np.ndarray:
    store = Store.create(path, resolution=10)
    with store.writer("e", kind="backbone", dim=x.shape[1], dtype="float16") as w:
        w.write(cells, x)
    return store.features_numpy("e")[1]


def test_a_float16_store_is_the_same_with_and_without_torch(tmp_path, monkeypatch):
    parent = h3.str_to_int(h3.latlng_to_cell(45.19, 5.72, 6))
    cells = np.array(sorted(h3.api.basic_int.cell_to_children(parent, 10)), dtype=np.uint64)[:500]
    x = np.random.default_rng(0).standard_normal((500, 64)).astype(np.float32)
    x[:, 0] *= 1e-6  # components that are float16 subnormals once normalised
    with_torch = _write(tmp_path / "a.store", cells, x)
    monkeypatch.setitem(sys.modules, "torch", None)  # a process that never loaded torch
    without = _write(tmp_path / "b.store", cells, x)
    assert np.array_equal(with_torch, without)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(with_torch, unit, rtol=2**-11, atol=2**-24)  # float16 rounding of the unit vectors


def test_int8_codes_stay_within_127_for_every_row_scale():
    """Rows whose largest value is tiny (127 / max overflows float32), zero, huge or ordinary: codes in [-127, 127]
    with the largest at +-127, and code x scale gives back the unit vector within int8 rounding."""
    from botaclip.store.schema import FeatureSetSpec

    spec = FeatureSetSpec("e", "backbone", dtype="int8", dim=8)
    schema = spec.arrow_schema(10, 6)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    x[0] *= np.float32(1e-39)  # subnormal: the clip's case
    x[1] = 0
    x[2] *= np.float32(1e30)
    x[3] = [1, -1, 0.5, 0, 0, 0, 0, 1]  # ties of the largest value, both signs
    norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1)).astype(np.float32)
    cells = np.arange(6, dtype=np.uint64)
    table = spec.encode(schema, cells, x, {}, norms=norms)
    codes = np.asarray(table.column("embedding").combine_chunks().flatten().to_numpy()).reshape(6, 8)
    assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= 127
    assert (np.abs(codes[[0, 2, 3, 4, 5]].astype(int)).max(axis=1) == 127).all() and not codes[1].any()
    back = spec.decode(table)
    unit = x / np.where(norms > 0, norms, 1)[:, None]
    assert np.allclose(back, unit, atol=1 / 127)
