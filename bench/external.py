"""`store add-raster --embedding` throughput and memory on an AlphaEarth-sized tile, and the covariate median.

Writes a synthetic tile in the published layout (int8, 64 bands, 10 m pixels, UTM 31N, 512 px tiles, DEFLATE,
-128 holes; smooth codes so it compresses like the real product), then runs each job in a fresh process and
prints pixels/s, cells/s and the peak RSS of that process:

- `add-raster --embedding alphaearth` on the tile (store resolution 10: about 150 pixels per cell);
- `add-raster --stat median` (covariates) on one float32 band of the same size, with this tree's code and, with
  --old PATH, with another checkout's (the code before the median streamed held every pixel in memory).

    .venv/bin/python bench/external.py                       # 4000 x 4000 x 64 (1 GB of codes)
    .venv/bin/python bench/external.py --size 1000 --old /work/main
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

_JOB = r"""
import json, sys, time
from botaclip.store import Store
args = json.loads(sys.argv[1])
store = Store.create(args["store"], resolution=args["res"])
t = time.perf_counter()
if args["kind"] == "embedding":
    from botaclip.store.external import add_raster_embedding
    r = add_raster_embedding(store, "ae", [args["raster"]])
    out = {"cells": r.cells, "pixels": r.valid_pixels, "pixels_read": r.pixels_read}
else:
    from botaclip.store.io import add_raster
    r = add_raster(store, "dem", [args["raster"]], stat="median")
    out = {"cells": r["cells"]}
out["seconds"] = time.perf_counter() - t
import botaclip.store.io
out["code"] = botaclip.store.io.__file__
# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork + exec.
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out))
"""


def write_tile(path: Path, size: int, bands: int, seed: int = 0) -> None:
    """A tiled, DEFLATE-compressed int8 tile written 512 rows at a time (never all in memory)."""
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    coarse = rng.integers(-120, 121, size=(bands, size // 64 + 2, size // 64 + 2), dtype=np.int8)
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="int8", crs="EPSG:32631",
                   transform=rasterio.Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_000_000.0), nodata=-128,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate", zlevel=1, interleave="pixel")
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            rows = (np.arange(r0, r0 + h) // 64)[:, None]
            cols = (np.arange(size) // 64)[None, :]
            block = coarse[:, rows, cols] + rng.integers(-3, 4, size=(bands, h, size), dtype=np.int8)
            block[:, :, :40] = -128 if r0 == 0 else block[:, :, :40]  # a hole in the first rows, as at tile edges
            ds.write(block.astype(np.int8), window=Window(0, r0, size, h))


def write_band(path: Path, size: int) -> None:
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(1)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32",
                       crs="EPSG:32631", transform=rasterio.Affine(10.0, 0.0, 600_000.0, 0.0, -10.0, 5_000_000.0),
                       tiled=True, blockxsize=512, blockysize=512) as ds:
        for r0 in range(0, size, 512):
            h = min(512, size - r0)
            ds.write(rng.uniform(200, 3000, size=(1, h, size)).astype(np.float32), window=Window(0, r0, size, h))


def run(code_root: Path, **args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    # cwd "/": `python -c` puts the working directory first on sys.path, which would shadow PYTHONPATH.
    out = subprocess.run([sys.executable, "-c", _JOB, json.dumps(args)], env=env, check=True, capture_output=True,
                         text=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4000, help="tile side in pixels")
    ap.add_argument("--bands", type=int, default=64)
    ap.add_argument("--res", type=int, default=10, help="store H3 resolution")
    ap.add_argument("--old", type=Path, help="another checkout to run the covariate median with")
    ap.add_argument("--skip-median", action="store_true")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_tile(tmp / "ae.tif", a.size, a.bands)
        print(f"tile {a.size} x {a.size} x {a.bands} int8 written in {time.perf_counter() - t:.0f} s "
              f"({(tmp / 'ae.tif').stat().st_size / 1e6:.0f} MB on disk)")
        r = run(ROOT, kind="embedding", store=str(tmp / "s1"), raster=str(tmp / "ae.tif"), res=a.res)
        px = a.size * a.size
        print(f"add-raster --embedding alphaearth: {r['seconds']:.1f} s, {px / r['seconds']:,.0f} pixels/s, "
              f"{r['cells'] / r['seconds']:,.0f} cells/s ({r['cells']} cells, {r['pixels']} valid pixels, "
              f"{r['pixels_read'] / px:.2f} reads per pixel), peak RSS {r['peak_rss_mb']:.0f} MB")
        if a.skip_median:
            return
        write_band(tmp / "dem.tif", a.size)
        for label, root in [("this tree", ROOT)] + ([("--old " + str(a.old), a.old)] if a.old else []):
            r = run(root, kind="median", store=str(tmp / f"s_{len(label)}"), raster=str(tmp / "dem.tif"), res=a.res)
            print(f"add-raster --stat median ({label}): {r['seconds']:.1f} s, {px / r['seconds']:,.0f} pixels/s, "
                  f"{r['cells']} cells, peak RSS {r['peak_rss_mb']:.0f} MB ({r['code']})")


if __name__ == "__main__":
    main()
