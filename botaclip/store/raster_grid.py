"""Rasters cut into H3 "chunks" so that per-cell summaries stream with bounded memory.

A chunk is an H3 cell at a resolution between the store's partition resolution and its cell resolution; its
children at the store resolution are exactly the store cells whose parent it is, so once every raster has been
read over a chunk's window, the summaries of those cells are final. A pixel belongs to the store cell that holds
its centre, and so to exactly one chunk: pixels read twice (windows overlap, hexagons are not rectangles) are
counted once. Memory is one window (``window_pixels`` pixels, about, per raster) plus the cells of one chunk.

Pixel centres go through the raster's affine transform in both directions, so rotated, "top-down" (negative y
resolution) and "bottom-up" (origin bottom-left, positive y resolution) GeoTIFFs read alike. Coordinates are
degrees in (lat, lng) order once out of the raster's CRS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import h3.api.basic_int as h3i
import numpy as np
from pyproj import Geod, Transformer
from rasterio.windows import Window

from botaclip.store import h3vec
from botaclip.store.external_config import DEFAULT_WINDOW_PIXELS

CHILDREN_REACH = 1.25
GDAL_CACHE_MB = 256  # decompressed blocks kept for the next windows: 16 blocks of 512 x 512 x 64 int8


@dataclass
class RasterGrid:
    """One opened raster's geometry: its affine transform, size, and the transformers to and from WGS84."""

    ds: object  # an open rasterio dataset
    to_lnglat: Transformer
    from_lnglat: Transformer

    @classmethod
    def of(cls, ds) -> "RasterGrid":
        return cls(ds, Transformer.from_crs(ds.crs, 4326, always_xy=True),
                   Transformer.from_crs(4326, ds.crs, always_xy=True))

    @property
    def shape(self) -> tuple[int, int]:
        return self.ds.height, self.ds.width

    def centres_latlng(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lng) degrees of the centres of pixels (rows, cols)."""
        x, y = apply_affine(self.ds.transform, cols + 0.5, rows + 0.5)
        lng, lat = self.to_lnglat.transform(x, y)
        return np.asarray(lat, np.float64), np.asarray(lng, np.float64)

    def pixel_area_m2(self) -> float:
        """Ground area of one pixel in m2, measured geodesically on a 10 x 10 pixel block at the raster centre
        (any CRS: metres, feet or degrees)."""
        h, w = self.shape
        r0, c0 = max(h // 2 - 5, 0), max(w // 2 - 5, 0)
        n_r, n_c = min(10, h), min(10, w)
        corners_c = np.array([c0, c0 + n_c, c0 + n_c, c0], dtype=float)
        corners_r = np.array([r0, r0, r0 + n_r, r0 + n_r], dtype=float)
        x, y = apply_affine(self.ds.transform, corners_c, corners_r)
        lng, lat = self.to_lnglat.transform(x, y)
        area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lng, lat)
        return abs(area) / (n_r * n_c)

    def window_of(self, chunk: int, pad: int = 2) -> Window | None:
        """Pixel window covering every store cell of chunk ``chunk`` (its hexagon, enlarged by CHILDREN_REACH, mapped
        into the raster, rounded out, ``pad`` pixels added), clipped to the raster; None when they do not meet."""
        boundary = np.array(h3i.cell_to_boundary(int(chunk)), dtype=np.float64)
        centre = np.array(h3i.cell_to_latlng(int(chunk)))
        # Midpoints too: a hexagon edge is a great-circle arc, slightly bowed once projected.
        mids = (boundary + np.roll(boundary, -1, axis=0)) / 2
        # A cell's descendants do not tile it exactly: they stick out of its hexagon, up to that hexagon
        # scaled by 1.17 about its centre (measured over resolutions 5-12), so the window covers 1.25 times it.
        pts = centre + CHILDREN_REACH * (np.vstack([boundary, mids]) - centre)
        x, y = self.from_lnglat.transform(pts[:, 1], pts[:, 0])
        cols, rows = apply_affine(~self.ds.transform, np.asarray(x), np.asarray(y))
        if not (np.isfinite(cols).all() and np.isfinite(rows).all()):
            return None
        h, w = self.shape
        r0, r1 = max(int(np.floor(rows.min())) - pad, 0), min(int(np.ceil(rows.max())) + pad, h)
        c0, c1 = max(int(np.floor(cols.min())) - pad, 0), min(int(np.ceil(cols.max())) + pad, w)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def window_cells(self, window: Window, resolution: int) -> np.ndarray:
        """Store cell (0 where the centre has no valid coordinates) of each pixel of ``window``, row-major."""
        rr, cc = np.mgrid[window.row_off:window.row_off + window.height, window.col_off:window.col_off + window.width]
        lat, lng = self.centres_latlng(rr.ravel().astype(np.float64), cc.ravel().astype(np.float64))
        cells, ok = h3vec.latlng_to_cell(lat, lng, resolution)
        return np.where(ok, cells, np.uint64(0))


def bounded_gdal_cache(mb: int = GDAL_CACHE_MB):
    """A rasterio environment whose GDAL block cache holds at most ``mb`` MB (GDAL's default is 5% of the RAM,
    which a long streamed read fills: RSS then grows with the raster, not the window), unless the user set
    GDAL_CACHEMAX."""
    import os

    import rasterio

    # In bytes: rasterio passes the number to GDALSetCacheMax, so 256 would mean 256 bytes (no cache at all).
    return rasterio.Env() if "GDAL_CACHEMAX" in os.environ else rasterio.Env(GDAL_CACHEMAX=int(mb) * 2**20)


def apply_affine(aff, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Affine transform of coordinate arrays (pixel col/row <-> map x/y)."""
    return aff.a * x + aff.b * y + aff.c, aff.d * x + aff.e * y + aff.f


def chunk_resolution(store_resolution: int, partition_resolution: int, pixel_area_m2: float,
                     window_pixels: int = DEFAULT_WINDOW_PIXELS) -> int:
    """The coarsest resolution (from the partition resolution to the store's) whose average cell holds at most
    ``window_pixels`` pixels of ``pixel_area_m2``: the chunk size that bounds one read."""
    for res in range(partition_resolution, store_resolution + 1):
        if h3i.average_hexagon_area(res, "m^2") / max(pixel_area_m2, 1e-9) <= window_pixels:
            return res
    return store_resolution


def footprint_chunks(grid: RasterGrid, chunk_res: int, resolution: int) -> np.ndarray:
    """Sorted chunk cells that may hold a pixel centre of the raster: the chunks (parents of the store cells at
    ``resolution``) of a sample of pixel centres spaced at most half a chunk edge apart (borders included), grown
    by one ring, so none is missed."""
    h, w = grid.shape
    edge_m = h3i.average_hexagon_edge_length(chunk_res, "m")
    step = max(1, int(edge_m / 2 / max(np.sqrt(grid.pixel_area_m2()), 1e-9)))
    rows = np.unique(np.r_[np.arange(0, h, step), h - 1]).astype(np.float64)
    cols = np.unique(np.r_[np.arange(0, w, step), w - 1]).astype(np.float64)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    lat, lng = grid.centres_latlng(rr.ravel(), cc.ravel())
    cells, ok = h3vec.latlng_to_cell(lat, lng, resolution)
    seeds = np.unique(h3vec.cell_to_parent(cells[ok], chunk_res))
    if seeds.size == 0:
        return seeds
    return np.unique(np.concatenate(h3vec.grid_disk(seeds, 1)))


def in_chunk(cells: np.ndarray, chunk: int, chunk_res: int) -> np.ndarray:
    """Which store cells (0 = no cell) lie in chunk ``chunk``."""
    return (cells != 0) & (h3vec.cell_to_parent(cells, chunk_res) == np.uint64(chunk))


def chunks_by_partition(chunks: np.ndarray, partition_resolution: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(partition parent, its chunks)`` in parent order."""
    chunks = np.asarray(chunks, dtype=np.uint64)
    if chunks.size == 0:
        return
    parents = h3vec.cell_to_parent(chunks, partition_resolution)
    order = np.argsort(parents, kind="stable")
    parents, chunks = parents[order], chunks[order]
    bounds = np.flatnonzero(np.diff(parents)) + 1
    for idx in np.split(np.arange(len(chunks)), bounds):
        yield int(parents[idx[0]]), chunks[idx]


def spatial_order(parents: list[int]) -> list[int]:
    """Indices of ``parents`` (cells of one resolution) in reading order: bands one cell high from north to
    south, west to east within a band, so consecutive windows share the raster blocks GDAL keeps in its cache
    (H3 id order jumps about and made a streamed read decompress each block many times)."""
    if not parents:
        return []
    cells = np.asarray(parents, dtype=np.uint64)
    lat, lng = h3vec.cell_to_latlng(cells)
    band_deg = 2 * h3i.average_hexagon_edge_length(int(h3vec.get_resolution(cells[:1])[0]), "km") / 111.0
    band = np.floor((lat.max() - lat) / band_deg)
    return list(np.lexsort((lng, band)))


def group_sums(cells: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique cells, float64 column sums of ``values`` [N, D] per cell, rows per cell)."""
    if cells.size == 0:
        return np.zeros(0, np.uint64), np.zeros((0, values.shape[1])), np.zeros(0, np.int64)
    order = np.argsort(cells, kind="stable")
    c = cells[order]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sums = np.add.reduceat(values[order], starts, axis=0, dtype=np.float64)
    return c[starts], sums, np.diff(np.r_[starts, len(c)])
