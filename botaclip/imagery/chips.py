"""Square image chips around H3 cells or points, read from one or several rasters.

A chip is ``chip_m`` metres on a side (100 m by default, as in the BotaCLIP paper), centred on a point, resampled
to ``size_px`` × ``size_px`` pixels and normalised for DOFA. The square lies in a local metric frame: for a
projected raster, metres in its CRS; for a geographic raster (EPSG:4326 and the like), metres converted to
degrees at the chip's latitude. Rows run north to south, columns west to east.

Several rasters form a mosaic: a chip takes each pixel from the first raster (in the order given) that has valid
data there. Nodata values, internal masks and alpha bands mark pixels invalid; the fraction of valid pixels is
reported with each chip so that callers can skip chips that are mostly empty. Invalid pixels are set to 0 after
normalisation (the band mean).

Thread safety: :meth:`ChipReader.locate` transforms coordinates and is meant for one thread;
:meth:`ChipReader.read_located` may run in many threads at once, each using its own dataset handles (GDAL
releases the GIL while it reads).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import h3
import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.windows import Window

from botaclip.errors import BotaclipError, InvalidInputError, param, root_cause
from botaclip.imagery.bands import BandSpec, band_spec, check_normalization
from botaclip.imagery.remote import gdal_env, read_failure
from botaclip.imagery.sources import RasterSource, half_extent_units, open_source
from botaclip.imagery.stats import band_stats

RESAMPLINGS = ("auto", "average", "bilinear")
MAX_OPEN_PER_THREAD = 64
MAX_SIZE_PX = 2048  # chip side limit: beyond it a single chip needs gigabytes


@dataclass(frozen=True)
class Candidate:
    """Where a chip falls in one raster: the raster's index and the chip's pixel window (fractional, may extend
    past the raster's edges)."""

    source: int
    col_off: float
    row_off: float
    width: float
    height: float


@dataclass
class Chip:
    """One chip: ``data`` [C, size_px, size_px] float32, normalised (None when the chip is outside every raster),
    and the fraction of its pixels that hold valid data."""

    data: np.ndarray | None
    valid_fraction: float

    @property
    def outside(self) -> bool:
        """True when no raster covers any part of the chip."""
        return self.data is None


class ChipReader:
    """Reads normalised square chips from a mosaic of rasters.

    Args:
        paths: raster files (GeoTIFF, COG, VRT, JPEG2000, ... anything GDAL reads), http(s) URLs of COGs or
            ``/vsicurl/`` paths (read with range requests), in any CRS; earlier files take precedence where they
            overlap.
        bands: a :class:`BandSpec` or a preset name (rgb, rgbn, landsat7, landsat8, sentinel2).
        chip_m: chip side in metres.
        size_px: chip side in pixels after resampling.
        resampling: "average" (area averaging), "bilinear", or "auto": average when the chip's pixels are larger
            than the raster's, bilinear when they are smaller.
        normalization: "preset" (the bands' fixed statistics, ImageNet on 0-255 for RGB), "stats" (per-band
            statistics computed once per raster and cached) or "auto" (preset when available, else stats).
    """

    def __init__(
        self,
        paths: list[str] | tuple[str, ...] | str,
        bands: BandSpec | str = "rgb",
        chip_m: float = 100.0,
        size_px: int = 224,
        resampling: str = "auto",
        normalization: str = "auto",
    ) -> None:
        if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__"):
            paths = [paths]
        paths = [str(p) for p in paths]
        if not paths:
            raise InvalidInputError(f"no imagery given; pass one or more raster files with {param('imagery')}")
        self.spec = band_spec(bands) if isinstance(bands, str) else bands
        if not (isinstance(chip_m, (int, float)) and math.isfinite(chip_m) and chip_m > 0):
            raise InvalidInputError(f"chip size {chip_m!r} m is invalid; give a positive number of metres ({param('chip_m')})")
        if int(size_px) != size_px or size_px < 1:
            raise InvalidInputError(f"chip size {size_px!r} px is invalid; give a positive whole number of pixels")
        if size_px > MAX_SIZE_PX:  # memory grows with its square (a 100,000 px chip is 10 GB per band)
            raise InvalidInputError(f"chip size {size_px} px is too large (at most {MAX_SIZE_PX}; the paper uses 224); "
                                    f"lower {param('size_px')}")
        if resampling not in RESAMPLINGS:
            raise InvalidInputError(f"unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLINGS)}")
        self.chip_m = float(chip_m)
        self.size_px = int(size_px)
        self.normalization = check_normalization(normalization, self.spec)
        self.sources: list[RasterSource] = [open_source(p, self.spec) for p in paths]
        for src in self.sources:
            if self.chip_m < src.pixel_size_m:
                raise InvalidInputError(
                    f"a chip of {self.chip_m:g} m is smaller than one pixel of {src.label} "
                    f"({src.pixel_size_m:.3g} m); use a larger {param('chip_m')}"
                )
        self._resampling = [self._pick_resampling(resampling, s) for s in self.sources]
        self._mean, self._std = self._normalisation_stats()
        self._to_source = [Transformer.from_crs("EPSG:4326", s.crs, always_xy=True) for s in self.sources]
        self._bbox = np.array([s.footprint.bounds for s in self.sources])  # minlng, minlat, maxlng, maxlat
        self.footprint = shapely.union_all([s.footprint for s in self.sources])
        self._local = threading.local()
        self._handles: list = []
        self._handles_lock = threading.Lock()

    # -- configuration -------------------------------------------------------------------------------------------

    @property
    def wavelengths(self) -> tuple[float, ...]:
        """Centre wavelength of each chip band, µm."""
        return self.spec.wavelengths

    @property
    def channels(self) -> int:
        """Number of bands in each chip."""
        return self.spec.count

    def _pick_resampling(self, resampling: str, src: RasterSource) -> Resampling:
        if resampling == "average":
            return Resampling.average
        if resampling == "bilinear":
            return Resampling.bilinear
        chip_pixel_m = self.chip_m / self.size_px
        return Resampling.average if chip_pixel_m >= src.pixel_size_m else Resampling.bilinear

    def _normalisation_stats(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        means, stds = [], []
        for src in self.sources:
            if self.normalization == "preset":
                mean, std = self.spec.mean, self.spec.std
            else:
                stats = band_stats(src.path, src.bands)
                mean, std = stats.mean, stats.std
            means.append(np.asarray(mean, dtype="float32").reshape(-1, 1, 1))
            stds.append(np.asarray(std, dtype="float32").reshape(-1, 1, 1))
        return means, stds

    def describe(self) -> dict:
        """A JSON-friendly description of the chips (for provenance): sources, bands, geometry, normalisation."""
        return {
            "imagery": [s.describe() for s in self.sources],
            "bands": self.spec.name,
            "wavelengths": list(self.spec.wavelengths),
            "chip_m": self.chip_m,
            "size_px": self.size_px,
            "resampling": [r.name for r in self._resampling],
            "normalization": self.normalization,
            "normalization_stats": [
                {"mean": [round(float(v), 6) for v in m.ravel()], "std": [round(float(v), 6) for v in s.ravel()]}
                for m, s in zip(self._mean, self._std)
            ],
        }

    # -- geometry ------------------------------------------------------------------------------------------------

    def locate(self, lat: np.ndarray, lng: np.ndarray) -> list[list[Candidate]]:
        """For each chip centre (``lat``, ``lng`` in WGS84 degrees), the rasters it overlaps and its pixel window
        in each, in mosaic order. An empty list means the chip lies outside every raster."""
        lat = np.atleast_1d(np.asarray(lat, dtype="float64"))
        lng = np.atleast_1d(np.asarray(lng, dtype="float64"))
        found: list[list[Candidate]] = [[] for _ in range(lat.size)]
        # Generous degree margin for the coarse bounding-box test: a chip is never wider than this.
        margin = self.chip_m / 50_000.0 / np.maximum(np.cos(np.radians(np.clip(np.abs(lat), 0, 89))), 1e-3)
        for i, src in enumerate(self.sources):
            minx, miny, maxx, maxy = self._bbox[i]
            near = np.flatnonzero(
                (lng + margin >= minx) & (lng - margin <= maxx) & (lat + margin >= miny) & (lat - margin <= maxy)
            )
            if near.size == 0:
                continue
            x, y = self._to_source[i].transform(lng[near], lat[near])
            x, y = np.asarray(x), np.asarray(y)
            hx, hy = half_extent_units(src, self.chip_m, lat[near])
            t = src.transform
            c0 = (x - hx - t.c) / t.a
            c1 = (x + hx - t.c) / t.a
            r_top = (y + hy - t.f) / t.e
            r_bottom = (y - hy - t.f) / t.e
            r0, r1 = np.minimum(r_top, r_bottom), np.maximum(r_top, r_bottom)
            hit = (c1 > 0) & (c0 < src.width) & (r1 > 0) & (r0 < src.height) & np.isfinite(c0) & np.isfinite(r0)
            for k in np.flatnonzero(hit):
                found[near[k]].append(Candidate(i, float(c0[k]), float(r0[k]), float(c1[k] - c0[k]), float(r1[k] - r0[k])))
        return found

    def chip_bounds(self, lat: float, lng: float) -> list[tuple[str, tuple[float, float, float, float]]]:
        """The chip's square in each raster it overlaps: ``(path, (left, bottom, right, top))`` in that raster's
        CRS units."""
        out = []
        for cand in self.locate(np.array([lat]), np.array([lng]))[0]:
            t = self.sources[cand.source].transform
            xs = (t.c + cand.col_off * t.a, t.c + (cand.col_off + cand.width) * t.a)
            ys = (t.f + cand.row_off * t.e, t.f + (cand.row_off + cand.height) * t.e)
            out.append((self.sources[cand.source].path, (min(xs), min(ys), max(xs), max(ys))))
        return out

    # -- reading -------------------------------------------------------------------------------------------------

    def _dataset(self, i: int):
        # One handle per raster per thread (GDAL handles are not thread-safe), at most MAX_OPEN_PER_THREAD open
        # at once per thread so that a mosaic of thousands of tiles does not exhaust file descriptors.
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = OrderedDict()
        ds = handles.get(i)
        if ds is not None and not ds.closed:
            handles.move_to_end(i)
            return ds
        try:
            ds = rasterio.open(self.sources[i].path)
        except rasterio.errors.RasterioIOError as exc:
            raise BotaclipError(f"cannot open {self.sources[i].label}: {root_cause(exc)}") from None
        handles[i] = ds
        with self._handles_lock:
            self._handles.append(ds)
        while len(handles) > MAX_OPEN_PER_THREAD:
            _, old = handles.popitem(last=False)
            with self._handles_lock:
                self._handles = [h for h in self._handles if h is not old]
            old.close()
        return ds

    def read_located(self, candidates: list[Candidate]) -> Chip:
        """Read the chip whose windows :meth:`locate` found. Safe to call from several threads at once."""
        if not candidates:
            return Chip(None, 0.0)
        # GDAL's options for remote rasters (range requests, retries, caches), for this thread's reads only.
        with gdal_env([self.sources[c.source].path for c in candidates]):
            return self._read_located(candidates)

    def _read_located(self, candidates: list[Candidate]) -> Chip:
        size = self.size_px
        out = np.zeros((self.channels, size, size), dtype="float32")
        valid = np.zeros((size, size), dtype=bool)
        for cand in candidates:
            src = self.sources[cand.source]
            sx, sy = cand.width / size, cand.height / size
            # Output pixels whose source footprint lies wholly inside the raster; the others stay invalid.
            oa = min(max(math.ceil(-cand.col_off / sx - 1e-6), 0), size)
            ob = min(max(math.floor((src.width - cand.col_off) / sx + 1e-6), 0), size)
            ra = min(max(math.ceil(-cand.row_off / sy - 1e-6), 0), size)
            rb = min(max(math.floor((src.height - cand.row_off) / sy + 1e-6), 0), size)
            if ob <= oa or rb <= ra:
                continue
            col0 = max(cand.col_off + oa * sx, 0.0)
            row0 = max(cand.row_off + ra * sy, 0.0)
            window = Window(col0, row0, min((ob - oa) * sx, src.width - col0), min((rb - ra) * sy, src.height - row0))
            shape = (rb - ra, ob - oa)
            ds = self._dataset(cand.source)
            resampling = self._resampling[cand.source]
            try:
                data = ds.read(
                    list(src.bands), window=window, out_shape=(len(src.bands),) + shape,
                    resampling=resampling, out_dtype="float32",
                )
                mask = ds.dataset_mask(window=window, out_shape=shape, resampling=resampling) >= 128
            except rasterio.errors.RasterioError as exc:
                # GDAL's own reason (a VRT's missing source file, a damaged tile) is the chained cause; for a URL the
                # server's answer says more (GDAL only sees a short read).
                raise read_failure(src.path, root_cause(exc)) or BotaclipError(
                    f"reading {src.label} failed: {root_cause(exc)}; is that file (and every file it refers to) "
                    "complete and readable?") from None
            if src.transform.e > 0:
                # South-up raster: flip rows so that chips always run north to south.
                data, mask = data[:, ::-1], mask[::-1]
                ra, rb = size - rb, size - ra
            data = (data - self._mean[cand.source]) / self._std[cand.source]
            take = mask & ~valid[ra:rb, oa:ob]
            if take.any():
                region = out[:, ra:rb, oa:ob]
                region[:, take] = data[:, take]
                valid[ra:rb, oa:ob] |= take
            if valid.all():
                break
        return Chip(out, float(valid.mean()))

    def read(self, lat: float, lng: float) -> Chip:
        """Read the chip centred on (``lat``, ``lng``), WGS84 degrees."""
        return self.read_located(self.locate(np.array([lat]), np.array([lng]))[0])

    def read_cell(self, cell: int | str) -> Chip:
        """Read the chip centred on an H3 cell's centre (cell as integer or hex string)."""
        lat, lng = h3.cell_to_latlng(h3.int_to_str(int(cell)) if not isinstance(cell, str) else cell)
        return self.read(lat, lng)

    def close(self) -> None:
        """Close every dataset handle opened by any thread."""
        with self._handles_lock:
            for ds in self._handles:
                try:
                    ds.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            self._handles.clear()

    def __enter__(self) -> "ChipReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
