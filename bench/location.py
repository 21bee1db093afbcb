"""Location-encoder throughput (`botaclip store add-location --model geoclip`) on the CPU.

    python bench/location.py                       # encoder at several batch sizes, then add-location of 1M cells
    python bench/location.py --cells 100000        # quicker end-to-end run
    python bench/location.py --threads 1           # one intra-op thread

1. Loading: locating the weights in the geoclip wheel, hashing them (sha256), building the encoder.
2. The encoder alone: `--points` random points in the Alps at each batch size (after a warm-up batch).
3. Scales (`--scales`): how much the embeddings vary over square regions of side 1 km to 5,000 km centred on the
   sample region (45.13 N, 5.87 E): mean cosine of random pairs and effective dimensionality (participation ratio
   of the PCA spectrum), as `botaclip store diagnose` computes them, from 2,000 random points per region.
4. End to end: `add_location` over a bbox region of about `--cells` resolution-10 cells (planning the region's
   cells, cell centres, the encoder, the store writer with its per-partition commits and the geometry statistics
   on close), in a new store in a temporary folder; cells/s and the time extrapolated to 1M cells.

Needs the botaclip[geoclip] extra. Prints one line per number; JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from botaclip.model.location import load_location_encoder
from botaclip.pipeline.location import add_location
from botaclip.store import Store

CELL_KM2 = 0.0150  # mean area of a resolution-10 H3 cell
CENTRE = (45.5, 6.5)  # the Alps
SAMPLE_CENTRE = (45.13, 5.87)  # the built-in sample region (Belledonne)
SCALES_KM = (0.5, 1, 5, 20, 50, 200, 500, 2000, 5000)


def bbox_for(cells: int) -> str:
    """A square bbox (west,south,east,north) around CENTRE holding about ``cells`` resolution-10 cells."""
    side_km = math.sqrt(cells * CELL_KM2)
    dlat = side_km / 111.2
    dlng = side_km / (111.2 * math.cos(math.radians(CENTRE[0])))
    lat, lng = CENTRE
    return f"{lng - dlng / 2:.6f},{lat - dlat / 2:.6f},{lng + dlng / 2:.6f},{lat + dlat / 2:.6f}"


def encoder_throughput(points: int, batch_sizes: list[int]) -> dict:
    started = time.perf_counter()
    enc = load_location_encoder("geoclip", "cpu")
    load_s = time.perf_counter() - started
    rng = np.random.default_rng(0)
    lat, lng = rng.uniform(44.0, 47.0, points), rng.uniform(5.0, 8.0, points)
    out = {"load_s": round(load_s, 2), "points": points, "by_batch": {}}
    for bs in batch_sizes:
        enc.embed(lat[:bs], lng[:bs], batch_size=bs)  # warm-up
        t = time.perf_counter()
        enc.embed(lat, lng, batch_size=bs)
        out["by_batch"][bs] = round(points / (time.perf_counter() - t), 1)
    return out


def spread(x: np.ndarray, rng: np.random.Generator, pairs: int = 20_000) -> tuple[float, float, float]:
    """(mean cosine of random pairs, effective dimensionality, first component's share) of unit rows ``x``."""
    i, j = rng.integers(0, len(x), pairs), rng.integers(0, len(x), pairs)
    keep = i != j
    mean_cos = float(np.mean(np.sum(x[i[keep]] * x[j[keep]], axis=1)))
    lam = np.clip(np.linalg.eigvalsh(np.cov((x - x.mean(0)).T.astype(np.float64))), 0, None)
    return mean_cos, float(lam.sum() ** 2 / (lam**2).sum()), float(lam.max() / lam.sum())


def scales(points: int = 2000) -> dict:
    enc = load_location_encoder("geoclip", "cpu")
    rng = np.random.default_rng(1)
    out = {}
    lat0, lng0 = SAMPLE_CENTRE
    for km in SCALES_KM:
        dlat = km / 111.2 / 2
        dlng = km / (111.2 * math.cos(math.radians(lat0))) / 2
        lat = np.clip(rng.uniform(lat0 - dlat, lat0 + dlat, points), -89.9, 89.9)
        lng = (rng.uniform(lng0 - dlng, lng0 + dlng, points) + 180) % 360 - 180
        mean_cos, eff_dim, pc1 = spread(enc.embed(lat, lng), rng)
        out[km] = {"mean_cos": round(mean_cos, 3), "effective_dim": round(eff_dim, 2), "pc1_share": round(pc1, 3)}
    return out


def end_to_end(cells: int, batch_size: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-location-"))
    try:
        store = Store.create(root / "s.store", resolution=10)
        region = bbox_for(cells)
        s = add_location(store, "geo", region=region, batch_size=batch_size)
        size = sum(p.stat().st_size for p in (root / "s.store").rglob("*.parquet"))
        return {"region": region, "cells": s.written, "seconds": round(s.seconds, 1),
                "setup_s": round(s.setup_seconds, 2), "cells_per_s": round(s.cells_per_s, 1),
                "extrapolated_1m_s": round(1e6 / s.cells_per_s + s.setup_seconds, 1) if s.cells_per_s else None,
                "partitions": s.partitions, "mb_on_disk": round(size / 1e6, 1)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, default=1_000_000, help="cells of the end-to-end run (0: skip it)")
    ap.add_argument("--points", type=int, default=50_000, help="points of the encoder-only runs")
    ap.add_argument("--batch-sizes", default="1024,4096,8192,16384")
    ap.add_argument("--batch-size", type=int, default=8192, help="batch size of the end-to-end run")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--scales", action="store_true", help="also measure the spread over regions of 0.5-5,000 km")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"torch_threads": torch.get_num_threads(),
              "encoder": encoder_throughput(args.points, [int(b) for b in args.batch_sizes.split(",")])}
    if not args.json:
        print(f"torch threads: {result['torch_threads']}; loading the encoder (hash + build): "
              f"{result['encoder']['load_s']} s")
        for bs, rate in result["encoder"]["by_batch"].items():
            print(f"encoder only, batch {bs}: {rate:,.0f} points/s")
    if args.scales:
        result["scales"] = sc = scales()
        if not args.json:
            for km, v in sc.items():
                print(f"region {km:g} km x {km:g} km: mean cosine {v['mean_cos']}, effective dimensionality "
                      f"{v['effective_dim']}, PC1 share {v['pc1_share']}")
    if args.cells:
        result["end_to_end"] = e = end_to_end(args.cells, args.batch_size)
        if not args.json:
            print(f"add-location over {e['region']}: {e['cells']:,} cells in {e['seconds']} s "
                  f"({e['cells_per_s']:,.0f} cells/s after {e['setup_s']} s setup; 1M cells: "
                  f"{e['extrapolated_1m_s']} s), {e['partitions']} partitions, {e['mb_on_disk']} MB on disk")
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result, indent=2) if args.json else f"peak RSS: {result['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
