"""Outputs: Cloud Optimized GeoTIFF vs the former tiled GeoTIFF without overviews, and the HTML map page.

1. A prediction raster of N cells (resolution 12, smooth values, float32) at the default pixel size (half the H3
   edge): the former writer (tiled 256 px, DEFLATE, no overviews: the strips pass alone) against the COG writer
   (same pass into a scratch file, then GDAL's COG driver: DEFLATE, overviews averaged), wall time
   and size, and whether `cog_problems` finds the file cloud optimized.
2. Map pages (`botaclip.mapview`): a suitability layer, a covariate and the PCA of a 384-d embedding, for a
   sample-region-sized set (1,621 cells at resolution 10, as `botaclip demo`'s store) and for 100,000 cells
   (resolution 12): build time, page size; with chromium on PATH, the seconds a headless browser takes to load
   and draw the page (`--dump-dom`, until `data-ready`).

    .venv/bin/python bench/outputs.py                      # 823,543-cell raster, both pages
    .venv/bin/python bench/outputs.py --raster-cells 117649 --page-cells 1621,100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import h3.api.basic_int as h3i
import numpy as np

from botaclip.sdm.cells import cells_to_latlng

LAT0, LNG0 = 45.1, 5.9  # the sample region (Belledonne, France)


def _cells(n: int, res: int) -> np.ndarray:
    """About ``n`` cells of resolution ``res``: all children of the coarsest parent holding n, first n kept."""
    parent_res = res
    while 7 ** (res - parent_res) < n and parent_res > 0:
        parent_res -= 1
    kids = np.array(sorted(h3i.cell_to_children(h3i.latlng_to_cell(LAT0, LNG0, parent_res), res)), np.uint64)
    return kids[:n]


def _smooth(cells: np.ndarray) -> np.ndarray:
    lat, lng = cells_to_latlng(cells)
    rng = np.random.default_rng(0)
    v = 0.5 + 0.25 * np.sin(lat * 200) * np.cos(lng * 150) + 0.1 * rng.normal(size=cells.size)
    return np.clip(v, 0, 1).astype(np.float32)


def bench_raster(n: int, out: Path) -> None:
    import h3
    import rasterio
    from affine import Affine

    from botaclip.sdm.cog import cog_problems
    from botaclip.sdm.predict import fill_strips, raster_grid, write_geotiff

    cells = _cells(n, 12)
    values = _smooth(cells)
    pixel = round(h3.average_hexagon_edge_length(12, unit="m") / 2.0)
    t = time.perf_counter()
    crs, (x0, y1, w, h) = raster_grid(cells, 12, pixel, None)
    old = out / "old.tif"
    with rasterio.open(old, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32", crs=crs,
                       transform=Affine(pixel, 0, x0, 0, -pixel, y1), nodata=-9999.0, compress="deflate",
                       tiled=True, blockxsize=256, blockysize=256) as dst:
        fill_strips(dst, cells, values, 12, -9999.0, "float32")
    t_old = time.perf_counter() - t
    t = time.perf_counter()
    info = write_geotiff(cells, values, out / "cog.tif", pixel)
    t_cog = time.perf_counter() - t
    with rasterio.open(out / "cog.tif") as ds:
        factors = ds.overviews(1)
    print(f"raster: {cells.size:,} cells (res 12), {info['width']} x {info['height']} px at {pixel} m, {crs}")
    print(f"  former GeoTIFF (tiled, deflate, no overviews): {t_old:6.1f} s  {old.stat().st_size / 1e6:7.1f} MB")
    print(f"  COG (deflate, overviews {factors}): {t_cog:6.1f} s  "
          f"{(out / 'cog.tif').stat().st_size / 1e6:7.1f} MB  cog_problems: {cog_problems(out / 'cog.tif') or 'none'}")
    for p in (old, out / "cog.tif"):
        p.unlink()


def bench_page(n: int, out: Path) -> None:
    from botaclip.mapview import pca_layer, values_layer, write_map_page

    res = 10 if n <= 5000 else 12
    cells = _cells(n, res)
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(cells.size, 384)).astype(np.float32)
    emb[:, :3] += np.column_stack(cells_to_latlng(cells) + (np.zeros(cells.size),)) * 50
    t = time.perf_counter()
    layers = [values_layer("suitability", cells, _smooth(cells), "suitability"),
              values_layer("elevation", cells, rng.normal(1500, 300, cells.size)),
              pca_layer("embedding", cells, emb)]
    t_layers = time.perf_counter() - t
    r = write_map_page(layers, out / f"page_{n}.html", f"bench {n}")
    line = (f"map page: {r['cells']:,} cells (res {res}), 3 layers (PCA of 384-d): layers {t_layers:.1f} s, page "
            f"{r['seconds']:.1f} s, {r['bytes'] / 1e6:.2f} MB ({r['bytes'] / r['cells']:.0f} B/cell)")
    exe = shutil.which("chromium")
    if exe:
        t = time.perf_counter()
        dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                              "--virtual-time-budget=60000", "--dump-dom", (out / f"page_{n}.html").as_uri()],
                             capture_output=True, text=True, timeout=600).stdout
        ok = 'data-ready="1"' in dom
        line += f"; chromium load+draw {time.perf_counter() - t:.1f} s{'' if ok else ' (NOT drawn)'}"
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raster-cells", type=int, default=7**7)
    ap.add_argument("--page-cells", default="1621,100000")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.page_cells.split(",") if x):
            bench_page(n, Path(tmp))
        if args.raster_cells:
            bench_raster(args.raster_cells, Path(tmp))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
