"""The representation benchmark end to end on the sample region: embedding products in the published raster
layouts -> `store add-raster --embedding` -> `sdm compare` with several feature sets -> the ranking table.

The sample region has no AlphaEarth or TESSERA coverage (it is synthetic), so this script makes stand-ins with the
same layouts from the orthophoto: a 64-d spectral-texture embedding at 10 m (band means, NDVI, within-pixel
standard deviations, randomly projected and unit-normalised), written once as AlphaEarth int8 codes (quantised
with the inverse of the published dequantisation, -128 where the orthophoto has no data) and once as a float
GeoTIFF (TESSERA's layout); a 16-d random float embedding (should rank last); and the DEM as covariates. The two
spectral sets carry the same information up to int8 quantisation, so they should tie.

    .venv/bin/python bench/ranking.py                  # 3 km region, 1,500 plots, 12 plants, logistic, 5 folds
    .venv/bin/python bench/ranking.py --size-km 2 --plots 800
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def spectral_embedding(ortho: Path, dim: int = 64, px: int = 10, seed: int = 0):
    """(unit vectors [dim, H, W] at ``px`` m, valid mask [H, W], profile) from the 1 m orthophoto."""
    import rasterio

    with rasterio.open(ortho) as ds:
        data = ds.read().astype(np.float32)
        profile = {"driver": "GTiff", "crs": ds.crs}
        transform = ds.transform
    b, h, w = data.shape
    h2, w2 = h // px, w // px
    blocks = data[:, :h2 * px, :w2 * px].reshape(b, h2, px, w2, px)
    valid = (blocks > 0).all(axis=(0, 2, 4))
    mean = blocks.mean(axis=(2, 4)) / 255.0
    sd = blocks.std(axis=(2, 4)) / 255.0
    ndvi = (mean[3] - mean[0]) / np.maximum(mean[3] + mean[0], 1e-6)
    feats = np.concatenate([mean, sd, ndvi[None], (ndvi ** 2)[None]], axis=0)  # 10 x H x W
    feats = (feats - feats.reshape(len(feats), -1).mean(1)[:, None, None]) / (
        feats.reshape(len(feats), -1).std(1)[:, None, None] + 1e-6)
    proj = np.random.default_rng(seed).normal(size=(dim, len(feats))) / np.sqrt(len(feats))
    emb = np.tanh(np.einsum("df,fhw->dhw", proj, feats))
    emb /= np.linalg.norm(emb, axis=0, keepdims=True) + 1e-12
    out_transform = transform * transform.scale(px, px)
    return emb.astype(np.float32), valid, {**profile, "transform": out_transform, "width": w2, "height": h2}


def write_alphaearth(path: Path, emb: np.ndarray, valid: np.ndarray, profile: dict) -> None:
    """int8 codes q with sign(q) * (|q| / 127.5)^2 = value (the published dequantisation, inverted)."""
    import rasterio

    q = np.clip(np.rint(np.sign(emb) * np.sqrt(np.abs(emb)) * 127.5), -127, 127).astype(np.int8)
    q[:, ~valid] = -128
    prof = {**profile, "count": q.shape[0], "dtype": "int8", "nodata": -128, "compress": "deflate"}
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(q)
        ds.descriptions = tuple(f"A{i:02d}" for i in range(q.shape[0]))


def write_float(path: Path, emb: np.ndarray, valid: np.ndarray, profile: dict) -> None:
    import rasterio

    x = emb.copy()
    x[:, ~valid] = np.nan
    prof = {**profile, "count": x.shape[0], "dtype": "float32", "nodata": np.nan, "compress": "deflate"}
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(x)


def _intermediate_species(releves: Path, n: int) -> list[str]:
    """The ``n`` plants whose share of plots is closest to one half (informative for presence-absence SDMs)."""
    import pandas as pd

    t = pd.read_csv(releves)
    share = t.groupby("species")["releve_id"].nunique() / t["releve_id"].nunique()
    return list((share - 0.5).abs().sort_values().index[:n])


def botaclip(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "from botaclip.cli import main; main()", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-km", type=float, default=3.0)
    ap.add_argument("--plots", type=int, default=1500)
    ap.add_argument("--resolution", type=int, default=11)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--species", type=int, default=12, help="plant species compared (intermediate prevalence)")
    ap.add_argument("--out", type=Path, help="keep the reports here (default: a temporary folder)")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sample, store = tmp / "sample", tmp / "s.store"
        t0 = time.perf_counter()
        botaclip("sample", "make", "--out", str(sample), "--size-km", str(a.size_km), "--plots", str(a.plots))
        emb, valid, profile = spectral_embedding(sample / "ortho.tif")
        write_alphaearth(tmp / "spectral_ae_2024.tif", emb, valid, profile)
        write_float(tmp / "spectral_float_2024.tif", emb, valid, profile)
        noise = np.random.default_rng(1).normal(size=(16, *emb.shape[1:])).astype(np.float32)
        write_float(tmp / "noise.tif", noise, valid, profile)
        print(f"sample region and stand-in products: {time.perf_counter() - t0:.0f} s")
        botaclip("store", "create", str(store), "--resolution", str(a.resolution))
        for name, fmt, path in (("spectral_ae", "alphaearth", "spectral_ae_2024.tif"),
                                ("spectral_float", "float", "spectral_float_2024.tif"), ("noise", "float", "noise.tif")):
            t = time.perf_counter()
            botaclip("store", "add-raster", str(store), str(tmp / path), "--name", name, "--embedding", fmt,
                     "--min-valid", "0.5")
            print(f"add-raster --embedding {fmt} {name}: {time.perf_counter() - t:.1f} s (with CLI start-up)")
        botaclip("store", "add-raster", str(store), str(sample / "dem.tif"), "--name", "terrain")
        out = a.out or tmp / "cmp"
        t = time.perf_counter()
        species = _intermediate_species(sample / "releves.csv", a.species)
        botaclip("sdm", "compare", "--store", str(store), "--occurrences", str(sample / "releves.csv"),
                 *[arg for s in species for arg in ("--species", s)], "--features", "spectral_ae", "--features", "spectral_float", "--features", "noise",
                 "--features", "terrain", "--models", "logistic", "--folds", str(a.folds), "--out", str(out))
        print(f"sdm compare: {time.perf_counter() - t:.0f} s")
        md = (out / "report.md").read_text()
        start = md.index("## Ranking of feature sets")
        print(md[start:md.index("## Paired comparison", start)])


if __name__ == "__main__":
    main()
