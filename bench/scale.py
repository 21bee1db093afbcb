"""Scaling of `botaclip index`: cells/s with 1 and 2 Ray workers on CPU, and the Ray engine's overhead.

    .venv/bin/python bench/scale.py --size-km 2                       # DOFA-small, 64 px chips, CPU
    .venv/bin/python bench/scale.py --backbone dofa-base --size-px 224  # heavier model: overhead matters less

Three runs of the same job (sample region, fresh store each, same model and chips):
- local engine, one torch thread (the reference);
- Ray engine, 1 worker with 1 CPU: the Ray engine's overhead is 1 - rate / local rate;
- Ray engine, 2 workers with 1 CPU each: scaling efficiency = rate(2) / (2 x rate(1)).
Rates are cells processed (written + skipped) per second after setup (model load, actor start-up); wall time
includes everything. The local Ray instance is started once (its start-up is reported separately).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rate(summary) -> float:
    done = summary.written + summary.skipped_nodata + summary.skipped_outside
    busy = summary.seconds - summary.setup_seconds
    return done / busy if busy > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-km", type=float, default=2.0, help="side of the sample region (km)")
    parser.add_argument("--backbone", default="dofa-small")
    parser.add_argument("--size-px", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--partition-resolution", type=int, default=8, help="units of work (res 10 cells: 49 each)")
    parser.add_argument("--out", default="bench/out/scale", help="work folder (sample and stores)")
    args = parser.parse_args()

    os.environ["OMP_NUM_THREADS"] = "1"  # one thread per worker process, so 2 workers = 2 cores
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import ray

    from botaclip.pipeline import run_index
    from botaclip.sample import make_sample

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sample = make_sample(out / "sample", seed=0, size_km=args.size_km, plots=20)
    job = dict(backbone=args.backbone, size_px=args.size_px, batch_size=args.batch_size, workers=1,
               progress=False, partition_resolution=args.partition_resolution, echo=lambda msg: None)

    def run(tag, **kw):
        t0 = time.perf_counter()
        s = run_index("sample", [str(sample.ortho)], out / tag, **job, **kw)
        wall = time.perf_counter() - t0
        row = {"run": tag, "cells": s.written + s.skipped_nodata + s.skipped_outside, "written": s.written,
               "partitions": s.partitions, "setup_s": round(s.setup_seconds, 2), "wall_s": round(wall, 2),
               "cells_per_s": round(_rate(s), 2),
               "per_worker_cells_per_s": [round(w["cells_per_s"], 2) for w in s.worker_stats]}
        print(json.dumps(row), flush=True)
        return row

    local = run("local")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2, logging_level="WARNING",
             log_to_driver=False)
    ray_start = time.perf_counter() - t0
    try:
        one = run("ray-1", engine="ray", ray_workers=1, cpus_per_worker=1)
        two = run("ray-2", engine="ray", ray_workers=2, cpus_per_worker=1)
    finally:
        ray.shutdown()
    result = {
        "backbone": args.backbone, "size_px": args.size_px, "cells": local["cells"],
        "ray_init_s": round(ray_start, 2),
        "local_cells_per_s": local["cells_per_s"], "ray1_cells_per_s": one["cells_per_s"],
        "ray2_cells_per_s": two["cells_per_s"],
        "ray_overhead_steady": round(1 - one["cells_per_s"] / local["cells_per_s"], 3),
        "ray_overhead_wall": round(one["wall_s"] / local["wall_s"] - 1, 3),
        "scaling_efficiency_2_workers": round(two["cells_per_s"] / (2 * one["cells_per_s"]), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
