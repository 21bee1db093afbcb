"""Reading embedding rasters as published: which files are valid for a format, and their pixels as float vectors.

- ``alphaearth``: AlphaEarth Foundations' annual Satellite Embedding COGs: 64 int8 bands A00..A63, nodata -128
  (a pixel is masked when any band holds it: the product masks all bands together), dequantised as
  ``value = sign(q) * (|q| / 127.5) ** 2`` (each pixel about unit length afterwards).
- ``float``: any multi-band float raster of embeddings (TESSERA's GeoTIFF exports, 128 bands already dequantised;
  a user's own model output); a pixel is masked when any band is the nodata value or not finite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from botaclip.errors import InvalidInputError, param
from botaclip.store.external_config import check_format

ALPHAEARTH_BANDS = 64
ALPHAEARTH_NODATA = -128
ALPHAEARTH_PRODUCT = "AlphaEarth Foundations Satellite Embedding"
DEQUANTISE_RULE = "value = sign(q) * (|q| / 127.5)^2"
_BAND_NAME = re.compile(r"^A(\d{2})$")


def alphaearth_lut() -> np.ndarray:
    """float32 value of each int8 code q (index q + 128): sign(q) * (|q| / 127.5)^2."""
    q = np.arange(-128, 128, dtype=np.float64)
    return (np.sign(q) * (np.abs(q) / 127.5) ** 2).astype(np.float32)


_LUT = alphaearth_lut()


@dataclass(frozen=True)
class EmbeddingRaster:
    """How to read one file: the bands in embedding order and the nodata value."""

    path: str
    fmt: str
    indexes: tuple[int, ...]  # 1-based band numbers, in embedding order
    nodata: float | None

    @property
    def dim(self) -> int:
        return len(self.indexes)

    def read(self, ds, window) -> tuple[np.ndarray, np.ndarray]:
        """(raw band values [D, N], bool [N] valid) of the pixels of ``window``, row-major."""
        data = ds.read(list(self.indexes), window=window)
        data = data.reshape(data.shape[0], -1)
        if self.fmt == "alphaearth":
            return data, ~(data == np.int8(self.nodata)).any(axis=0)
        valid = np.isfinite(data).all(axis=0)
        if self.nodata is not None and np.isfinite(self.nodata):
            valid &= ~(data == self.nodata).any(axis=0)
        return data, valid

    def vectors(self, raw: np.ndarray) -> np.ndarray:
        """float32 [N, D] embedding vectors of raw band values [D, N] (AlphaEarth codes dequantised)."""
        if self.fmt == "alphaearth":
            return _LUT[raw.T.astype(np.int16) + 128]
        return np.ascontiguousarray(raw.T, dtype=np.float32)


def describe(ds, path: str, fmt: str) -> EmbeddingRaster:
    """Check that open raster ``ds`` is a valid ``fmt`` file and say how to read it; one-line error if not."""
    check_format(fmt)
    if ds.crs is None:
        raise InvalidInputError(f"raster {path} has no CRS; assign one (gdal_edit.py -a_srs) and retry")
    dtype = ds.dtypes[0]
    if fmt == "alphaearth":
        if ds.count != ALPHAEARTH_BANDS or dtype != "int8":
            raise InvalidInputError(
                f"raster {path} has {ds.count} {dtype} band(s); an AlphaEarth Satellite Embedding file has "
                f"{ALPHAEARTH_BANDS} int8 bands (A00..A63): for a float export use {param('embedding')} float")
        nodata = ds.nodata if ds.nodata is not None else ALPHAEARTH_NODATA
        return EmbeddingRaster(path, fmt, _alphaearth_order(ds), float(nodata))
    if not dtype.startswith("float"):
        hint = " (AlphaEarth's int8 codes: use alphaearth)" if dtype == "int8" else ""
        raise InvalidInputError(f"raster {path} holds {dtype} pixels; {param('embedding')} float reads float "
                                f"bands{hint}")
    if ds.count < 2:
        raise InvalidInputError(f"raster {path} has one band: that is a covariate, not an embedding; add it "
                                f"without {param('embedding')}")
    return EmbeddingRaster(path, fmt, tuple(range(1, ds.count + 1)), ds.nodata)


def _alphaearth_order(ds) -> tuple[int, ...]:
    """Band numbers in A00..A63 order when the bands are named so (in whatever order), else 1..64."""
    names = list(ds.descriptions or ())
    found = [_BAND_NAME.match(n or "") for n in names]
    if len(names) == ALPHAEARTH_BANDS and all(found) and sorted(int(m.group(1)) for m in found) == list(range(64)):
        by_axis = {int(m.group(1)): i + 1 for i, m in enumerate(found)}
        return tuple(by_axis[a] for a in range(ALPHAEARTH_BANDS))
    return tuple(range(1, ALPHAEARTH_BANDS + 1))


def check_same_dim(rasters: list[EmbeddingRaster]) -> int:
    """The common dimension; a one-line error naming two files that differ."""
    first = rasters[0]
    for r in rasters[1:]:
        if r.dim != first.dim:
            raise InvalidInputError(f"{r.path} has {r.dim} bands but {first.path} has {first.dim}: the files of one "
                                    "embedding must have the same dimension")
    return first.dim


def guess_year(paths: list[str]) -> int | None:
    """The year every file name mentions (e.g. ``..._2023_...``), if they all name the same one."""
    years = set()
    for p in paths:
        found = set(re.findall(r"(?<!\d)(20[0-9]{2}|19[0-9]{2})(?!\d)", Path(p).name))
        if len(found) != 1:
            return None
        years |= found
    return int(years.pop()) if len(years) == 1 else None
