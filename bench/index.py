"""Index throughput: end-to-end cells/s of `botaclip index` on the sample region vs the pure model rate.

    .venv/bin/python bench/index.py --size-km 2 --limit 200            # DOFA-small, 224 px, CPU
    .venv/bin/python bench/index.py --backbone dofa-base --device cuda  # on a GPU machine

End to end = region -> H3 cells -> chips read in background threads -> DOFA -> store (rows written per second of
processing, after setup). Model only = the same DOFA on chips of the same cells already in memory. Their ratio is
the pipeline efficiency: how close the job gets to the model's own speed (1.0 = reading and writing are hidden).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=5.0, help="side of the sample region (km)")
    parser.add_argument("--limit", type=int, default=None, help="index at most this many cells")
    parser.add_argument("--backbone", default="dofa-small")
    parser.add_argument("--size-px", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-chips", type=int, default=128, help="chips held in memory for the model-only rate")
    parser.add_argument("--imagery", default=None, help="index this raster instead of the sample (its bbox)")
    parser.add_argument("--bands", default=None, help="band preset of --imagery [default: by band count]")
    parser.add_argument("--out", default="bench/out/index", help="work folder (sample and store)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from botaclip.imagery import ChipReader, band_spec
    from botaclip.imagery.regions import parse_region
    from botaclip.model import Embedder
    from botaclip.pipeline import run_index
    from botaclip.pipeline.train import make_backbone

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.imagery:
        ortho = args.imagery
        region = _sample_region(Path(ortho).parent / "-", ortho, parse_region)
    else:
        from botaclip.sample import make_sample

        sample_dir = out / f"sample-{args.size_km:g}km"
        if not (sample_dir / "ortho.tif").exists():
            make_sample(sample_dir, seed=0, size_km=args.size_km, plots=200)
        ortho = str(sample_dir / "ortho.tif")
        region = _sample_region(sample_dir, ortho, parse_region)

    store = Path(tempfile.mkdtemp(prefix="index-bench-", dir=out))
    try:
        # Chips of the region's first cells, held in memory, for the model-only rate (measured before and after
        # the end-to-end run, which also warms up torch for both).
        from botaclip.imagery import iter_region_cells
        from botaclip.pipeline.index import _guess_bands

        spec = band_spec(args.bands) if args.bands else _guess_bands(ortho)
        with ChipReader([ortho], spec, size_px=args.size_px) as reader:
            cells = []
            for _, part in iter_region_cells(region, reader.footprint, 10, 6):
                cells.extend(part.tolist())
                if len(cells) >= 4 * args.model_chips:
                    break
            chips = [c.data for c in (reader.read_cell(x) for x in cells) if c.valid_fraction >= 0.9]
            chips = np.stack(chips[: args.model_chips])
        model = make_backbone(args.backbone, None, 0, args.size_px)
        embedder = Embedder(model, list(reader.wavelengths), device=args.device, batch_size=args.batch_size,
                            normalize=True)

        def model_rate() -> float:
            t0 = time.perf_counter()
            for start in range(0, len(chips), args.batch_size):
                embedder.embed(chips[start : start + args.batch_size])
            return len(chips) / (time.perf_counter() - t0)

        embedder.embed(chips[: args.batch_size])  # warm-up
        before = model_rate()
        summary = run_index(region, [ortho], store / "s", backbone=args.backbone, size_px=args.size_px,
                            bands=args.bands, batch_size=args.batch_size, workers=args.workers, device=args.device,
                            limit=args.limit, progress=True)
        processing = summary.seconds - summary.setup_seconds
        e2e = summary.embedded / processing
        after = model_rate()
        model_only = (before + after) / 2
    finally:
        shutil.rmtree(store, ignore_errors=True)

    result = {
        "backbone": args.backbone,
        "size_px": args.size_px,
        "device": args.device,
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "imagery": args.imagery or f"sample {args.size_km:g} km",
        "cells_planned": summary.planned,
        "cells_written": summary.written,
        "skipped_nodata": summary.skipped_nodata,
        "cells_embedded": summary.embedded,
        "end_to_end_cells_per_s": round(e2e, 2),
        "model_only_cells_per_s": round(model_only, 2),
        "model_only_before_after": [round(before, 2), round(after, 2)],
        "efficiency": round(e2e / model_only, 3) if model_only else None,
        "processing_s": round(processing, 1),
        "model_s_in_pipeline": round(summary.embed_seconds, 1),
        "waiting_for_chips_s": round(summary.read_wait_seconds, 2),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


def _sample_region(sample_dir: Path, ortho: str, parse_region):
    """The sample's footprint GeoJSON, or the orthophoto's bounding box."""
    for name in ("region.geojson", "footprint.geojson"):
        if (sample_dir / name).exists():
            return parse_region(str(sample_dir / name))
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(ortho) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    return parse_region(f"{w},{s},{e},{n}")


if __name__ == "__main__":
    main()
