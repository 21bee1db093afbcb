"""Benchmarks of the SDM toolbox: an ensemble comparison with Maxent, permutation importance, and the area of
applicability (dissimilarity index) in streaming prediction.

    .venv/bin/python bench/sdm_toolbox.py                          # compare on 20k cells, AOA over 100k cells
    .venv/bin/python bench/sdm_toolbox.py --aoa-cells 1000000      # AOA over 1M cells (slow to build)

Synthetic stores from bench/sdm.py (embedding sets with a known environmental signal) plus a scalar covariate set
`cov` (two noisy copies of the environment and one noise column). Each phase runs in its own process; wall
seconds, CPU seconds and peak resident memory (VmHWM) are printed as Markdown table rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import cpu_s, peak_mb  # noqa: E402  (bench/measure.py)
from sdm import build_store, make_occurrences  # noqa: E402  (bench/sdm.py)


def add_covariates(store_path: Path, cells: np.ndarray, env: np.ndarray, seed: int = 0) -> None:
    from botaclip.store import Store

    rng = np.random.default_rng(seed)
    store = Store.open(store_path)
    with store.writer("cov", kind="covariates", columns=["e1", "e2", "noise"]) as w:
        w.write(cells, columns={"e1": env[:, 0] + 0.1 * rng.normal(size=cells.size),
                                "e2": env[:, 1] + 0.1 * rng.normal(size=cells.size),
                                "noise": rng.normal(size=cells.size)})


def phase_compare(args) -> dict:
    from botaclip.sdm import compare

    t = time.perf_counter()
    res = compare(args.store, args.occurrences, ["set0", "set0,cov"], models=args.models,
                  ensemble=args.ensemble or None, importance=bool(args.importance), folds=5,
                  background=args.background, jobs=1, out=args.out)
    wall = time.perf_counter() - t
    auc = res.means()["auc"]
    return {"seconds": wall, "cpu_s": cpu_s(), "peak_mb": peak_mb(), "species": len(res.species),
            "auc": {k: round(v["mean"], 4) for k, v in auc.items()}}


def phase_fit(args) -> dict:
    from botaclip.sdm import fit_species

    t = time.perf_counter()
    fit_species(args.store, args.occurrences, "Species 00", features="set0", model="logistic", folds=5,
                background=args.background, out=args.out, predictions=False, write_map=False, jobs=1,
                pca=args.pca or None)
    return {"seconds": time.perf_counter() - t, "peak_mb": peak_mb()}


def phase_predict(args) -> dict:
    from botaclip.sdm import predict

    t = time.perf_counter()
    res = predict(args.model, args.store, args.out, aoa=bool(args.aoa))
    wall = time.perf_counter() - t
    return {"seconds": wall, "cpu_s": cpu_s(), "peak_mb": peak_mb(), "cells": res.n_cells, "extra": res.extra}


PHASES = {"compare": phase_compare, "fit": phase_fit, "predict": phase_predict}


def _run(name: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--phase", name] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_compare(args, root: Path) -> None:
    cells, env = build_store(root / "cmp.store", args.cells, args.dim, 1, args.res)
    add_covariates(root / "cmp.store", cells, env)
    make_occurrences(root / "occ.csv", cells, env, args.species, args.presences)
    print(f"compare: {args.species} species x 2 feature sets (set0 {args.dim}-d; set0+cov) x 5 folds, "
          f"{args.presences} presences + {args.background} background, {cells.size} cells")
    print("| run | wall s | CPU s | peak MB | mean AUC per feature set and model |\n|---|---:|---:|---:|---|")
    # The ensemble adds no fit (it combines the members' predictions of the inner and outer CV that the threshold
    # rule runs anyway); importance adds repeats x groups predictions per fold and model.
    runs = {"4 models + ensemble weighted": dict(ensemble="weighted", importance=0),
            "same + importance": dict(ensemble="weighted", importance=1)}
    seconds = []
    for label, kw in runs.items():
        r = _run("compare", store=root / "cmp.store", occurrences=root / "occ.csv", out=root / "cmp",
                 models=args.models, background=args.background, **kw)
        seconds.append((r["seconds"], r["cpu_s"]))
        aucs = "; ".join(f"{k} {v:.3f}" for k, v in r["auc"].items())
        print(f"| {label} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {r['peak_mb']:.0f} | {aucs} |", flush=True)
    print(f"importance: {seconds[1][0] - seconds[0][0]:.1f} s wall, {seconds[1][1] - seconds[0][1]:.1f} CPU-s", flush=True)


def run_aoa(args, root: Path) -> None:
    cells, env = build_store(root / "aoa.store", args.aoa_cells, args.dim, 1, args.res, seed=1, dtype="float16")
    make_occurrences(root / "aocc.csv", cells, env, 1, args.presences, seed=1)
    print(f"\nAOA: predict {cells.size} cells x {args.dim}-d (float16 on disk), logistic model, "
          f"{args.presences} presences + {args.background} background training cells")
    print("| model space | predict without AOA s | with AOA s | AOA s | AOA s per 1M cells | peak MB | inside |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for pca in (0, 16):
        model = root / f"model_pca{pca}"
        _run("fit", store=root / "aoa.store", occurrences=root / "aocc.csv", out=model,
             background=args.background, pca=pca)
        plain = _run("predict", store=root / "aoa.store", model=model, out=root / "p0.parquet", aoa=0)
        with_aoa = _run("predict", store=root / "aoa.store", model=model, out=root / "p1.parquet", aoa=1)
        extra = with_aoa["seconds"] - plain["seconds"]
        space = f"{args.dim}-d (no projection)" if not pca else f"{pca} principal components"
        print(f"| {space} | {plain['seconds']:.1f} | {with_aoa['seconds']:.1f} | {extra:.1f} | "
              f"{extra * 1e6 / cells.size:.0f} | {with_aoa['peak_mb']:.0f} | {with_aoa['extra'].get('inside_aoa')} |",
              flush=True)


def run_importance(args) -> None:
    """Permutation importance of one fold directly: groups x repeats predictions of the test cells."""
    from botaclip.sdm.evaluate import FoldContext
    from botaclip.sdm.importance import PermutationImportance
    from botaclip.sdm.models import make_model

    rng = np.random.default_rng(0)
    n_train, n_test = 8000, 2000
    X = np.hstack([rng.normal(size=(n_train + n_test, args.dim)), rng.normal(size=(n_train + n_test, 3))])
    X = X.astype(np.float32)
    y = (X[:, 0] + X[:, args.dim] + rng.normal(size=X.shape[0]) > 1.5).astype(float)
    groups = {"emb": np.arange(args.dim), "cov.a": np.array([args.dim]), "cov.b": np.array([args.dim + 1]),
              "cov.c": np.array([args.dim + 2])}
    print(f"\nimportance of one fold: {n_test} test cells, 4 groups ({args.dim}-d embedding + 3 covariates), "
          "3 repeats = 12 + 1 predictions")
    print("| model | fit s | importance s | share of the fit |\n|---|---:|---:|---:|")
    test = np.arange(n_train, n_train + n_test)
    for name in ("logistic", "lightgbm", "rf", "maxent"):
        t = time.perf_counter()
        est = make_model(name, **({"features": "lq"} if name == "maxent" else {})).fit(X[:n_train], y[:n_train])
        fit_s = time.perf_counter() - t
        imp = PermutationImportance(y, groups, "binary", repeats=3)
        t = time.perf_counter()
        imp(FoldContext(0, np.arange(n_train), test, X[test], est.predict, None, None))
        imp_s = time.perf_counter() - t
        print(f"| {name} | {fit_s:.1f} | {imp_s:.1f} | {imp_s / fit_s:.0%} |", flush=True)


def run_aoa_arrays(args) -> None:
    """The dissimilarity index alone over ``--aoa-array-cells`` cells, generated 100,000 at a time (no store)."""
    from botaclip.sdm.aoa import fit_aoa

    rng = np.random.default_rng(0)
    n_train = args.presences + args.background
    print(f"\nDI alone: {args.aoa_array_cells:,} cells in chunks of 20,000 against {n_train:,} training cells")
    print("| dims | fit reference s | DI s | cells/s | peak MB |\n|---:|---:|---:|---:|---:|")
    for dims in (args.dim, 16, 4):
        t = time.perf_counter()
        ref = fit_aoa(rng.normal(size=(n_train, dims)).astype(np.float32), rng.integers(0, 5, n_train))
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        chunk = rng.normal(size=(20_000, dims)).astype(np.float32)  # the same cells again: DI costs the same
        for _ in range(0, args.aoa_array_cells, 20_000):
            ref.dissimilarity(chunk)
        di_s = time.perf_counter() - t
        print(f"| {dims} | {fit_s:.1f} | {di_s:.1f} | {args.aoa_array_cells / di_s:,.0f} | {peak_mb():.0f} |",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=20_000, help="cells of the compare store")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--species", type=int, default=3)
    ap.add_argument("--presences", type=int, default=200)
    ap.add_argument("--background", type=int, default=2000)
    ap.add_argument("--models", default="lightgbm,rf,logistic,maxent")
    ap.add_argument("--aoa-cells", type=int, default=100_000)
    ap.add_argument("--aoa-array-cells", type=int, default=1_000_000, help="cells of the DI-only measurement")
    ap.add_argument("--res", type=int, default=10)
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--skip-aoa", action="store_true")
    ap.add_argument("--only-arrays", action="store_true", help="only the DI-only measurement")
    ap.add_argument("--only-importance", action="store_true", help="only the one-fold importance measurement")
    ap.add_argument("--phase", choices=sorted(PHASES))
    for name in ("store", "occurrences", "out", "model"):
        ap.add_argument(f"--{name}")
    for name in ("ensemble",):
        ap.add_argument(f"--{name}", default="")
    for name in ("importance", "aoa", "pca"):
        ap.add_argument(f"--{name}", type=int, default=0)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase](args)))
        return
    if args.only_arrays or args.only_importance:
        run_aoa_arrays(args) if args.only_arrays else run_importance(args)
        return
    with tempfile.TemporaryDirectory(prefix="botaclip_toolbox_") as tmp:
        if not args.skip_compare:
            run_compare(args, Path(tmp))
            run_importance(args)
        if not args.skip_aoa:
            run_aoa(args, Path(tmp))
            run_aoa_arrays(args)


if __name__ == "__main__":
    main()
