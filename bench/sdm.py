"""Benchmarks of the SDM module: `sdm compare` over species x feature sets x folds, and streaming prediction.

    .venv/bin/python bench/sdm.py                      # full size: compare on 100k cells x 768-d, predict 1M cells
    .venv/bin/python bench/sdm.py --cells 20000 --species 5 --predict-cells 100000   # smaller
    .venv/bin/python bench/sdm.py --keep DIR --skip-predict --base-tree BASE --settings base1,new --repeat 2
                                                       # two settings alternated twice: median times

Builds synthetic stores in a temporary folder (embeddings with a known environmental signal), then runs each
phase in its own process and reports wall seconds and that process's peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import cpu_s, peak_mb  # bench/measure.py (this script's folder is on sys.path)


def _disk_cells(n: int, res: int, lat0: float = 45.2, lng0: float = 6.1) -> np.ndarray:
    """About ``n`` cells: the smallest hexagonal disk holding at least ``n``, trimmed to ``n``."""
    import h3

    k = int(np.ceil((np.sqrt(12 * n - 3) - 3) / 6))
    centre = h3.latlng_to_cell(lat0, lng0, res)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(centre, k)), dtype=np.uint64)
    return cells[:n]


def build_store(path: Path, n_cells: int, dim: int, n_sets: int, res: int, seed: int = 0,
                dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """A store with ``n_sets`` embedding feature sets (dim ``dim``) over ``n_cells`` cells; returns (cells, env)."""
    from botaclip.sdm.cells import cells_to_latlng
    from botaclip.store import Store

    rng = np.random.default_rng(seed)
    cells = _disk_cells(n_cells, res)
    lat, lng = cells_to_latlng(cells)
    env = np.column_stack([(lat - lat.min()) / np.ptp(lat), (lng - lng.min()) / np.ptp(lng)])
    store = Store.create(path, resolution=res)
    chunk = 100_000
    for s in range(n_sets):
        mix = rng.normal(size=(2, dim)).astype(np.float32) * (1.0 if s == 0 else 0.3)
        with store.writer(f"set{s}", kind="backbone", dim=dim, dtype=dtype,
                          provenance={"model": f"bench{s}"}) as w:
            for i in range(0, cells.size, chunk):
                sl = slice(i, i + chunk)
                X = env[sl].astype(np.float32) @ mix + rng.normal(size=(cells[sl].size, dim)).astype(np.float32)
                w.write(h3=cells[sl], embedding=X, valid_fraction=np.ones(cells[sl].size, np.float32))
    return cells, env


def make_occurrences(path: Path, cells: np.ndarray, env: np.ndarray, n_species: int, n_presences: int,
                     seed: int = 0) -> None:
    """Presence-only Darwin Core CSV: each species prefers a different direction of the environment."""
    import pandas as pd

    from botaclip.sdm.cells import cells_to_latlng

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_species):
        angle = 2 * np.pi * s / n_species
        score = np.cos(angle) * env[:, 0] + np.sin(angle) * env[:, 1]
        p = np.exp(4 * score)
        idx = rng.choice(cells.size, n_presences, replace=False, p=p / p.sum())
        lat, lng = cells_to_latlng(cells[idx])
        rows.append(pd.DataFrame({"species": f"Species {s:02d}", "decimalLatitude": lat, "decimalLongitude": lng,
                                  "occurrenceStatus": "PRESENT"}))
    pd.concat(rows).to_csv(path, index=False)


#: LightGBM's hyperparameters before issue 17 (botaclip.sdm.models.LightGBMModel then): 300 rounds, 255 bins.
OLD_LIGHTGBM = "n_estimators=300,learning_rate=0.05,num_leaves=31,min_child_samples=10,subsample=0.8," \
               "colsample_bytree=0.5,reg_lambda=1,max_bin=255,neg_subsample=1"

#: Settings compared side by side: the settings before the speed work (300 LightGBM rounds at 255 bins, each fit
#: binning its own rows), the new defaults (botaclip.sdm.config and LightGBMModel), and the opt-in projections.
#: Same species, cells, folds and threshold rule; every setting runs with the same worker processes (results do
#: not depend on them). Any other item of --settings is 'key=value' pairs joined by '+': compare options
#: (pca, early_stopping, bin_once, inner_folds) or LightGBM hyperparameters over the defaults.
SETTINGS = {"old": {"pca": None, "extra_pcs": None, "early_stopping": False, "bin_once": False, "lightgbm_params": OLD_LIGHTGBM},
            "new": {}, "pca32": {"pca": 32}, "pca16": {"pca": 16}}
_COMPARE_KEYS = {"pca": int, "extra_pcs": int, "early_stopping": lambda v: v in ("1", "true", "True"),
                 "bin_once": lambda v: v in ("1", "true", "True"), "inner_folds": int, "jobs": int}
#: Settings whose phase runs another copy of botaclip (--base-tree: the code before the RF/logistic work of issue
#: 17) with its defaults: 'base' with BLAS free to start its threads (as `botaclip demo` ran), 'base1' with
#: OMP_NUM_THREADS=1 (one BLAS thread per process, as this script's own phases run).
BASE_SETTINGS = ("base", "base1")
#: Prefixes of model hyperparameters in --settings items: 'rf.max_samples=0.5', 'logistic.solver=lbfgs'.
_MODEL_PREFIXES = {"rf.": "rf_params", "logistic.": "logistic_params"}


def settings_options(name: str) -> dict:
    """The compare options of a named setting, or of 'key=value+key=value' (see SETTINGS)."""
    if name in SETTINGS:
        return dict(SETTINGS[name])
    head, _, rest = name.partition("+")
    if head in BASE_SETTINGS:  # 'base' or 'base1', optionally with compare options: 'base+jobs=1'
        return settings_options(rest) if rest else {}
    options: dict = {}
    lgb = []
    for item in name.split("+"):
        key, _, value = item.partition("=")
        prefix = next((p for p in _MODEL_PREFIXES if key.startswith(p)), None)
        if key in _COMPARE_KEYS:
            options[key] = _COMPARE_KEYS[key](value)
        elif prefix:
            field = _MODEL_PREFIXES[prefix]
            options[field] = ",".join(x for x in (options.get(field, ""), f"{key[len(prefix):]}={value}") if x)
        else:
            lgb.append(f"{key}={value}")
    return options | ({"lightgbm_params": ",".join(lgb)} if lgb else {})


def _phase_env(settings: str, base_tree: str | None) -> dict | None:
    """The environment of a phase: another botaclip on the path for the BASE_SETTINGS, else this one's."""
    settings = settings.partition("+")[0]
    if settings not in BASE_SETTINGS:
        return None
    if not base_tree:
        raise SystemExit(f"settings {settings!r} need --base-tree DIR (a copy of the botaclip code to compare with)")
    env = dict(os.environ, PYTHONPATH=str(Path(base_tree).resolve()))
    if settings == "base":
        env.pop("OMP_NUM_THREADS", None)
    return env


def phase_compare(args) -> dict:
    from botaclip.sdm import compare

    n_species = args.species
    species = None
    if args.only_species:
        species = [f"Species {s:02d}" for s in range(args.only_species)]
    t = time.perf_counter()
    res = compare(args.store, args.occurrences, ["set0", "set1"], species=species, models=[args.models], folds=5,
                  background=args.background, out=args.out, min_presences=10, **settings_options(args.settings))
    wall = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    fits = sum(len(r.values) for r in res.rows if r.metric == "auc")
    per_species = {f"{r.metric}_{r.features}|{r.species}": r.mean for r in res.rows if r.metric in ("auc", "tss")}
    return {"seconds": wall, "cpu_s": cpu_s() + children.ru_utime + children.ru_stime, "peak_mb": peak_mb(),
            "children_peak_mb": children.ru_maxrss / 1024.0, "species": len(res.species),
            "requested_species": n_species, "outer_fits": fits, "per_species": per_species}


def _means(c: dict, n_species: int | None = None) -> dict:
    """Mean AUC and TSS per feature set over the species (the first ``n_species`` of them)."""
    out = {}
    for key in ("auc_set0", "auc_set1", "tss_set0", "tss_set1"):
        v = [value for name, value in c["per_species"].items() if name.startswith(key + "|")
             and (n_species is None or int(name.rsplit(" ", 1)[1]) < n_species)]
        out[key] = float(np.nanmean(v)) if v else float("nan")
    return out


#: The demo's SDM tasks on real embeddings (`botaclip demo` writes DIR/store and DIR/sample): file, kind.
REAL_TASKS = {"plants": ("releves.csv", "presence-absence"), "butterflies": ("butterflies.csv", "presence-only")}


def phase_real(args) -> dict:
    """One demo task under one setting: mean AUC/TSS per feature set over the species, CPU-s, peak memory."""
    from botaclip.sdm import compare

    file, kind = REAL_TASKS[args.task]
    import pandas as pd

    sets = args.real_features.split(",")
    occ = Path(args.real) / "sample" / file
    species = None
    if args.real_species:  # the species with the most records
        species = pd.read_csv(occ)["species"].value_counts().index[:args.real_species].tolist()
    import lightgbm  # noqa: F401  (imported here, so that the CPU-s of the comparison hold no imports)
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401

    t = time.perf_counter()
    cpu0 = cpu_s()
    res = compare(Path(args.real) / "store", occ, sets, models=[args.models], species=species,
                  folds=5, kind=kind, seed=0, **settings_options(args.settings))
    wall = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the comparison itself, without this process's start-up and imports (all of it with jobs=1, which
    # runs the species in this process; with worker processes, their whole CPU).
    compare_cpu = cpu_s() - cpu0 + children.ru_utime + children.ru_stime
    means = res.means()
    return {"seconds": wall, "cpu_s": cpu_s() + children.ru_utime + children.ru_stime,
            "peak_mb": max(peak_mb(), children.ru_maxrss / 1024.0), "species": len(res.species),
            "outer_fits": sum(len(r.values) for r in res.rows if r.metric == "auc"),
            "compare_cpu_s": compare_cpu,
            "per_species": {f"{r.metric}_{r.features}|{r.species}": r.mean for r in res.rows if r.metric in ("auc", "tss")},
            "code": str(Path(sys.modules["botaclip"].__file__).parent.parent),
            **{f"{m}_{fs}": means[m][f"{fs} | {args.models}"]["mean"] for m in ("auc", "tss") for fs in sets}}


def phase_demo(args) -> dict:
    """The demo's SDM step (`botaclip demo`, step 4: plants, butterflies and soil, one seed) on the feature sets of
    a demo folder that need no training (its backbone, location and elevation sets), with --settings' options."""
    import functools

    import botaclip.sdm
    from botaclip.pipeline import demo
    from botaclip.sample import SampleRegion
    from botaclip.store import Store

    options = settings_options(args.settings)
    if options:  # score_tasks calls botaclip.sdm.compare; these options go with every call
        botaclip.sdm.compare = functools.partial(botaclip.sdm.compare, **options)
    store = Store.open(Path(args.real) / "store", read_only=True)
    names = {n: n for n in (demo.BACKBONE_SET, demo.LOCATION_SET, demo.COVARIATE_SET) if n in store.feature_sets()}
    t = time.perf_counter()
    tasks, _ = demo.score_tasks(store, SampleRegion.open(Path(args.real) / "sample"), names, 0,
                                demo.SdmPlan(model=args.models), None, lambda line: None)
    wall = time.perf_counter() - t
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    scores = {f"{task}|{label}": float(np.nanmean(list(v.values())))
              for task, r in tasks.items() for label, v in r["metric"].items()}
    return {"seconds": wall, "cpu_s": cpu_s() + children.ru_utime + children.ru_stime, "scores": scores,
            "code": str(Path(sys.modules["botaclip"].__file__).parent.parent)}


def run_demo_step(args) -> None:
    """The demo's SDM step under each setting, one after the other (--demo-step DIR: a `botaclip demo` folder)."""
    print(f"the demo's SDM step (one seed, feature sets without training) on {args.demo_step}, {args.models}; "
          "headline metric per task and set (TSS plants, Boyce butterflies, Spearman soil), mean over species",
          flush=True)
    for settings in args.settings.split(","):
        c = _run_phase("demo", env=_phase_env(settings, args.base_tree), real=args.demo_step, settings=settings,
                       models=args.models)
        label = f"{settings} ({c['code']})" if settings.partition("+")[0] in BASE_SETTINGS else settings
        scores = ", ".join(f"{k} {v:.4f}" for k, v in sorted(c["scores"].items()))
        print(f"| {label} | {c['seconds']:.1f} | {c['cpu_s']:.0f} | {scores} |  (load "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})", flush=True)


def run_real(args) -> None:
    """The settings side by side on the demo's real embeddings (--real DIR: a `botaclip demo` output folder)."""
    sets = args.real_features.split(",")
    print(f"sdm compare on the demo's store {args.real}: feature sets {', '.join(sets)}, {args.models}, 5 folds, "
          "seed 0, threshold by inner CV; CPU-s in compare: without start-up and imports (the fits, their "
          "inner CV, reading, folds, metrics)\n| task | settings | species | wall s | CPU-s | CPU-s in compare per "
          "outer fold | peak MB | " + " | ".join(f"AUC {fs} | TSS {fs}" for fs in sets) + " |\n|---|---|---:|---:|---:|---:|---:|"
          + "---:|---:|" * len(sets), flush=True)
    for task in args.tasks.split(","):
        first = None
        for settings in args.settings.split(","):
            c = _run_phase("real", env=_phase_env(settings, args.base_tree), real=args.real, task=task,
                           settings=settings, models=args.models, real_features=args.real_features,
                           real_species=args.real_species)
            scores = " | ".join(f"{c[f'auc_{fs}']:.4f} | {c[f'tss_{fs}']:.4f}" for fs in sets)
            label = f"{settings} ({c['code']})" if settings.partition("+")[0] in BASE_SETTINGS else settings
            print(f"| {task} | {label} | {c['species']} | {c['seconds']:.1f} | {c['cpu_s']:.0f} | "
                  f"{c['compare_cpu_s'] / max(c['outer_fits'], 1):.3f} | {c['peak_mb']:.0f} | {scores} |  "
                  f"(load {' '.join(f'{x:.1f}' for x in os.getloadavg())})", flush=True)
            first = first or (settings, c["per_species"])
            if first[0] != settings:
                print(f"  {task}, paired by species, {settings} minus {first[0]}: "
                      f"{paired_line(first[1], c['per_species'])}", flush=True)


def phase_fit(args) -> dict:
    from botaclip.sdm import fit_species

    t = time.perf_counter()
    fit_species(args.store, args.occurrences, "Species 00", features="set0", model="lightgbm", folds=2,
                background=args.background, out=args.out, predictions=False, write_map=False, jobs=args.jobs)
    return {"seconds": time.perf_counter() - t, "peak_mb": peak_mb()}


def phase_predict(args) -> dict:
    from botaclip.sdm import predict

    t = time.perf_counter()
    res = predict(args.model, args.store, args.out)
    wall = time.perf_counter() - t
    return {"seconds": wall, "cpu_s": cpu_s(), "peak_mb": peak_mb(), "cells": res.n_cells,
            "cells_per_s": res.n_cells / wall}


def _run_phase(name: str, env: dict | None = None, **kw) -> dict:
    cmd = [sys.executable, __file__, "--phase", name] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare_store(args, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The compare store under ``root``: built, or reused from an earlier run with --keep (same cells, dim)."""
    from botaclip.sdm.cells import cells_to_latlng
    from botaclip.store import Store

    path = root / "cmp.store"
    if path.exists():
        dim = Store.open(path, read_only=True).spec("set0").dim
        if dim != args.dim:
            raise SystemExit(f"{path} holds {dim}-d features, not {args.dim}; remove it or use another --keep")
        cells = _disk_cells(args.cells, args.res)
        lat, lng = cells_to_latlng(cells)
        print(f"reusing compare store {path}", flush=True)
        return cells, np.column_stack([(lat - lat.min()) / np.ptp(lat), (lng - lng.min()) / np.ptp(lng)])
    t = time.perf_counter()
    out = build_store(path, args.cells, args.dim, 2, args.res)
    print(f"built compare store: {args.cells} cells x {args.dim}-d x 2 feature sets "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def run_compare(args, root: Path) -> None:
    cells, env = _compare_store(args, root)
    make_occurrences(root / "occ.csv", cells, env, args.species, args.presences)
    print(f"sdm compare: {args.species} species x 2 feature sets x 5 folds ({args.models}, presence-only, "
          f"{args.presences} presences + {args.background} background each, threshold by inner CV) on "
          f"{cells.size} cells x {args.dim}-d", flush=True)
    subset = set(args.subset_settings.split(",")) if args.subset else set()
    sub = f" | on the first {args.subset} species: AUC set0 / set1, TSS set0 / set1" if args.subset else ""
    print(f"| settings | species | wall s | CPU-s | CPU-s per outer fit | peak MB (driver / a worker) | AUC set0 | "
          f"AUC set1 | TSS set0 | TSS set1{sub} |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
          + ("---:|" if sub else ""), flush=True)
    first, walls = None, {}
    names = args.settings.split(",")
    # --repeat N alternates the settings N times: the machine's speed drifts by 10-20 % within an hour, so one run
    # per setting cannot resolve a few per cent; the scores are the same in every round (same seeds).
    for r, (i, settings) in ((r, item) for r in range(args.repeat) for item in enumerate(names)):
        c = _run_phase("compare", env=_phase_env(settings, args.base_tree), store=root / "cmp.store",
                       occurrences=root / "occ.csv",
                       out=root / (f"cmp_{i}" if r == 0 else f"cmp_{i}_{r}"), species=args.species,
                       background=args.background, settings=settings, models=args.models,
                       only_species=args.subset if settings in subset else 0, load=os.getloadavg()[0])
        walls.setdefault(settings, []).append((c["seconds"], c["cpu_s"]))
        _compare_row(args, settings, c, f" (round {r + 1})" if args.repeat > 1 else "")
        first = first or (settings, c["per_species"])
        if first[0] != settings and r == 0:
            print(f"  paired by species, {settings} minus {first[0]}: {paired_line(first[1], c['per_species'])}",
                  flush=True)
    if args.repeat > 1:
        for settings, runs in walls.items():
            print(f"  {settings}: median of {len(runs)} rounds {np.median([w for w, _ in runs]):.1f} s wall, "
                  f"{np.median([u for _, u in runs]):.0f} CPU-s (rounds: "
                  f"{', '.join(f'{w:.1f} s' for w, _ in runs)})", flush=True)


def _compare_row(args, settings: str, c: dict, round_label: str) -> None:
    """One table row of the compare benchmark, and the load average after it."""
    m = _means(c)
    tail = ""
    if args.subset:
        s = _means(c, args.subset)
        tail = (f" | {s['auc_set0']:.4f} / {s['auc_set1']:.4f}, {s['tss_set0']:.4f} / {s['tss_set1']:.4f}")
    label = settings if settings not in SETTINGS else f"{settings} {SETTINGS[settings] or '(defaults)'}"
    print(f"| {label}{round_label} | {c['species']} | {c['seconds']:.1f} | {c['cpu_s']:.0f} | "
          f"{c['cpu_s'] / max(c['outer_fits'], 1):.2f} | {c['peak_mb']:.0f} / {c['children_peak_mb']:.0f} | "
          f"{m['auc_set0']:.4f} | {m['auc_set1']:.4f} | {m['tss_set0']:.4f} | {m['tss_set1']:.4f}{tail} |",
          flush=True)
    print(f"  (load average 1/5/15 min after this row: {' '.join(f'{x:.1f}' for x in os.getloadavg())})",
          flush=True)


def paired_line(first: dict, other: dict) -> str:
    """Per metric and feature set ('auc_set0'): ``other`` minus ``first`` paired by species, as `sdm compare`
    pairs feature sets (:func:`botaclip.sdm.compare.paired_comparison`: mean difference, species where ``other``
    is higher, two-sided Wilcoxon signed-rank p); ``first``/``other``: 'metric_set|species' -> that species' mean
    over folds."""
    from botaclip.sdm.compare import paired_comparison

    out = []
    for key in sorted({name.split("|")[0] for name in first}):
        names = [n for n in first if n.startswith(key + "|") and n in other]
        r = paired_comparison([other[n] for n in names], [first[n] for n in names], key.split("_")[0])
        out.append(f"{key} {r['mean_difference']:+.4f} ({r['wins_a']}/{r['n_species']} higher, p {r['p_value']:.2g})")
    return "; ".join(out)


def run_dtypes(args, root: Path) -> None:
    """SDM AUC/TSS with the same embeddings stored as float32 and as the compact dtypes (`index --dtype`): the
    vectors before storage are identical (same seed); only the on-disk precision differs. Same species, folds,
    background and settings; `sdm compare` on set0 and set1 of each store."""
    print(f"sdm compare by storage dtype: {args.species} species x 2 feature sets x 5 folds ({args.models}) on "
          f"{args.cells} cells x {args.dim}-d\n| dtype | AUC set0 | AUC set1 | TSS set0 | TSS set1 |\n"
          "|---|---:|---:|---:|---:|", flush=True)
    for dtype in args.dtypes.split(","):
        cells, env = build_store(root / f"dt_{dtype}.store", args.cells, args.dim, 2, args.res, dtype=dtype)
        make_occurrences(root / "dt_occ.csv", cells, env, args.species, args.presences)
        c = _run_phase("compare", store=root / f"dt_{dtype}.store", occurrences=root / "dt_occ.csv",
                       out=root / f"dt_{dtype}", species=args.species, background=args.background, settings="new",
                       models=args.models)
        m = _means(c)
        print(f"| {dtype} | {m['auc_set0']:.4f} | {m['auc_set1']:.4f} | {m['tss_set0']:.4f} | {m['tss_set1']:.4f} |",
              flush=True)


def run_predict(args, root: Path) -> None:
    t = time.perf_counter()
    pcells, penv = build_store(root / "pred.store", args.predict_cells, args.dim, 1, args.res, seed=1,
                               dtype="float16")
    make_occurrences(root / "pocc.csv", pcells, penv, 1, args.presences, seed=1)
    print(f"built prediction store: {pcells.size} cells x {args.dim}-d (float16 on disk) "
          f"in {time.perf_counter() - t:.0f} s", flush=True)
    _run_phase("fit", store=root / "pred.store", occurrences=root / "pocc.csv", out=root / "model",
               background=args.background, jobs=args.jobs)
    pred = _run_phase("predict", store=root / "pred.store", model=root / "model",
                      out=root / "pred.parquet", jobs=args.jobs)
    print(f"sdm predict (lightgbm, 300 trees) -> parquet: {pred['cells']} cells in {pred['seconds']:.1f} s = "
          f"{pred['cells_per_s']:.0f} cells/s ({pred['cells'] / pred['cpu_s']:.0f} cells per CPU-s), "
          f"peak {pred['peak_mb']:.0f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100_000, help="cells of the compare store")
    ap.add_argument("--dim", type=int, default=768, help="embedding dimension")
    ap.add_argument("--species", type=int, default=20)
    ap.add_argument("--presences", type=int, default=200, help="presences per species")
    ap.add_argument("--background", type=int, default=10_000)
    ap.add_argument("--predict-cells", type=int, default=1_000_000)
    ap.add_argument("--res", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=1, help="threads per fit in the prediction benchmark")
    ap.add_argument("--settings", default="old,new",
                    help="compare settings to run side by side: old, new, pca32, pca16, base, base1 (--base-tree), "
                         "or key=value+key=value (rf.KEY / logistic.KEY: --rf-params / --logistic-params)")
    ap.add_argument("--subset", type=int, default=0,
                    help="run the --subset-settings on the first N species only (every row also reports its "
                         "means over those N species, for a side-by-side on the same species)")
    ap.add_argument("--subset-settings", default="old", help="the settings that --subset restricts")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the compare settings this many times, alternating, and print each one's median time")
    ap.add_argument("--models", default="lightgbm", help="the model of the comparison: lightgbm, rf or logistic")
    ap.add_argument("--keep", default=None, help="keep the generated data in this folder")
    ap.add_argument("--skip-compare", action="store_true", help="only the prediction benchmark")
    ap.add_argument("--skip-predict", action="store_true", help="only the comparison benchmark")
    ap.add_argument("--real", default=None,
                    help="instead: the settings on the real embeddings of a `botaclip demo` output folder (its "
                         "store/ and sample/): plants (presence-absence) and butterflies (presence-only)")
    ap.add_argument("--real-features", default="dofa,botaclip", help="with --real: the feature sets compared")
    ap.add_argument("--tasks", default="plants,butterflies", help="with --real: the demo tasks")
    ap.add_argument("--real-species", type=int, default=0,
                    help="with --real: only the N species with the most records (0: every species with enough)")
    ap.add_argument("--demo-step", default=None,
                    help="instead: the demo's SDM step (one seed, the sets that need no training) on a `botaclip "
                         "demo` output folder, under each of --settings")
    ap.add_argument("--base-tree", default=None,
                    help="with --settings base or base1: a folder holding the botaclip package to compare with "
                         "(e.g. `git archive COMMIT botaclip | tar -x -C DIR`), run with its defaults")
    ap.add_argument("--dtypes", default=None, help="instead: SDM AUC per storage dtype, e.g. float32,float16,int8")
    # Internal: run one phase in this process.
    ap.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--occurrences", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--only-species", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--task", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--load", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        phases = {"compare": phase_compare, "fit": phase_fit, "predict": phase_predict, "real": phase_real,
                  "demo": phase_demo}
        result = phases[args.phase](args)
        print(json.dumps(result))
        return

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_sdm_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.dtypes:
            run_dtypes(args, root)
            return
        if args.real:
            run_real(args)
            return
        if args.demo_step:
            run_demo_step(args)
            return
        if not args.skip_compare:
            run_compare(args, root)
        if not args.skip_predict:
            run_predict(args, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)




if __name__ == "__main__":
    main()
