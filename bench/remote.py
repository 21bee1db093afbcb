"""Reading a small region of a large COG over HTTP: the fraction of the file downloaded, and the read rate.

Writes a large Cloud-Optimised GeoTIFF (3 bands, uint8, 1 m pixels, 512 px DEFLATE tiles, overviews; a blocky
texture that compresses about as well as an orthophoto), serves it from 127.0.0.1 with tools/range_server.py
(which counts the bytes it sends), and reads chips of a small square region with the chip reader, as
`botaclip index` does (threads, range requests under botaclip's GDAL options):

- open: what opening costs (the probe and the COG header);
- stats: the per-raster statistics of ``--normalize stats`` (a decimated read: the overviews);
- chips: the chips of the region (100 m chips of 224 px, one per 50 m), remote and from the local file.

    .venv/bin/python bench/remote.py                        # 16384 x 16384 px (16 km x 16 km at 1 m)
    .venv/bin/python bench/remote.py --size 4096 --region-m 500
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
X0, Y0 = 900_000.0, 6_460_000.0  # Lambert-93 (EPSG:2154), the Alps


def _range_server():
    spec = importlib.util.spec_from_file_location("range_server", ROOT / "tools" / "range_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RangeServer


def write_cog(path: Path, size: int, seed: int = 0) -> None:
    """A size x size x 3 uint8 COG, written through a tiled GTiff one strip of tiles at a time."""
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp.tif")
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:2154",
                   transform=from_origin(X0, Y0, 1.0, 1.0), tiled=True, blockxsize=512, blockysize=512,
                   compress="DEFLATE")
    with rasterio.open(tmp, "w", **profile) as ds:
        for row in range(0, size, 512):
            h = min(512, size - row)
            coarse = rng.integers(20, 235, (3, h // 4 + 1, size // 4 + 1), dtype=np.uint8)
            block = np.repeat(np.repeat(coarse, 4, 1), 4, 2)[:, :h, :size]
            noise = rng.integers(0, 6, block.shape, dtype=np.uint8)
            ds.write(block + noise, window=Window(0, row, size, h))
    with rasterio.open(tmp) as src:
        rasterio.shutil.copy(src, str(path), driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", OVERVIEWS="AUTO")
    tmp.unlink()


def centres(size_px: int, region_m: float, step_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Chip centres (lat, lng) on a step_m grid over a region_m square in the middle of the raster."""
    from pyproj import Transformer

    cx, cy = X0 + size_px / 2, Y0 - size_px / 2
    offsets = np.arange(-region_m / 2 + step_m / 2, region_m / 2, step_m)
    xs, ys = np.meshgrid(cx + offsets, cy + offsets)
    lng, lat = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True).transform(xs.ravel(), ys.ravel())
    return np.asarray(lat), np.asarray(lng)


def read_chips(reader, lat, lng, workers: int) -> tuple[float, int]:
    """Read every chip with ``workers`` threads; (seconds, chips with data)."""
    located = reader.locate(lat, lng)
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        chips = list(pool.map(reader.read_located, located))
    return time.perf_counter() - started, sum(1 for c in chips if not c.outside)


def run(args) -> None:
    from botaclip.imagery import ChipReader
    from botaclip.imagery.bands import band_spec

    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        os.environ.pop(var, None)  # 127.0.0.1 only
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BOTACLIP_CACHE_DIR"] = str(Path(tmp) / "cache")
        started = time.perf_counter()
        cog = Path(tmp) / "www" / "big.tif"
        cog.parent.mkdir()
        write_cog(cog, args.size)
        size = cog.stat().st_size
        print(f"COG: {args.size} x {args.size} px x 3 bands, {size / 2**20:.1f} MB "
              f"(written in {time.perf_counter() - started:.1f} s)")
        server = _range_server()(cog.parent)
        url = server.url("big.tif")
        lat, lng = centres(args.size, args.region_m, args.step_m)
        custom = band_spec(None, "0.665,0.56,0.49")  # custom wavelengths: statistics computed from the raster
        kw = dict(chip_m=args.chip_m, size_px=args.size_px)

        t = time.perf_counter()
        reader = ChipReader([url], "rgb", normalization="preset", **kw)
        print(_row("open (probe + header)", server.bytes_served, size, time.perf_counter() - t))
        server.reset()
        t = time.perf_counter()
        ChipReader([url], custom, normalization="stats", **kw).close()
        print(_row("statistics (--normalize stats)", server.bytes_served, size, time.perf_counter() - t))

        server.reset()
        seconds, n = read_chips(reader, lat, lng, args.workers)
        reader.close()
        mb = server.bytes_served / 2**20
        print(_row(f"{n} chips of a {args.region_m:g} m square", server.bytes_served, size, seconds) +
              f", {n / seconds:.0f} chips/s, {mb / seconds:.1f} MB/s downloaded")
        local = ChipReader([str(cog)], "rgb", normalization="preset", **kw)
        seconds_local, _ = read_chips(local, lat, lng, args.workers)
        local.close()
        print(f"  the same chips from the local file: {seconds_local:.2f} s, {n / seconds_local:.0f} chips/s")
        requests = [r for m, _, r in server.requests if m == "GET"]
        print(f"  {len(requests)} GET requests for the chips, all ranged: {all(requests)}")
        server.close()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.workers} reading threads")


def _row(what: str, served: int, size: int, seconds: float) -> str:
    return f"{what}: {served / 2**20:.2f} MB = {100 * served / size:.2f}% of the file, {seconds:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="raster side in pixels (1 m)")
    parser.add_argument("--region-m", type=float, default=1000.0, help="side of the region read, metres")
    parser.add_argument("--step-m", type=float, default=50.0, help="distance between chip centres, metres")
    parser.add_argument("--chip-m", type=float, default=100.0)
    parser.add_argument("--size-px", type=int, default=224)
    parser.add_argument("--workers", type=int, default=4)
    run(parser.parse_args())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
