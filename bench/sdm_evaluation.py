"""Is the SDM evaluation publishable? Thresholds and block sizes on a real presence/background data set.

    pip install elapid                          # ships the data set: elapid/data/ariolimax.gpkg
    .venv/bin/python bench/sdm_evaluation.py    # or: --data path/to/ariolimax.gpkg

The data: Ariolimax (banana slug) in California, 1,595 presences and 4,990 background points with six MODIS
covariates (surface temperature, LAI, cloud cover: mean and sd), the example data set of elapid (MIT licence).
It is imported into a store at H3 resolution 7 (`store import`, mean per cell) and compared with
`sdm compare --kind presence-only` for LightGBM, random forest and logistic regression.

Printed, per block size (auto, and H3 resolutions 3, 4, 5) and model:
- AUC, and TSS / sensitivity / specificity at the max-TSS threshold chosen two ways on the same folds and models:
  in-sample (what botaclip did before: the threshold that maximises TSS on the training folds' own predictions)
  and out-of-sample (now: inner spatial-block CV of the training part);
- a reference AUC from an independent implementation at comparable block sizes: square blocks of the same area
  as the H3 blocks in California Albers (EPSG:3310), dealt at random into 5 folds, scikit-learn / LightGBM models
  fitted directly and scored with scikit-learn's `roc_auc_score`.
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

COVARIATES = ["SurfaceTempMean", "SurfaceTempStdv", "LAIMean", "LAIStdv", "CloudCoverMean", "CloudCoverStdv"]
MODELS = ["lightgbm", "rf", "logistic"]


def find_data(path: str | None) -> Path:
    if path:
        return Path(path)
    try:
        import elapid
    except ImportError:
        raise SystemExit("give --data path/to/ariolimax.gpkg, or `pip install elapid`, which ships it") from None
    return Path(elapid.__file__).parent / "data" / "ariolimax.gpkg"


def prepare(data: Path, root: Path) -> tuple[Path, Path]:
    """The store (res 7, covariates imported per cell) and an occurrence CSV (presences; background as absent)."""
    import geopandas as gpd

    from botaclip.store import Store
    from botaclip.store.io import import_table

    frame = gpd.read_file(data).to_crs(4326)
    frame["decimalLatitude"], frame["decimalLongitude"] = frame.geometry.y, frame.geometry.x
    frame.drop(columns="geometry").to_csv(root / "covariates.csv", index=False)
    store = Store.create(root / "ario.store", resolution=7)
    import_table(store, "climate", str(root / "covariates.csv"), columns=COVARIATES, kind="covariates")
    occ = frame.drop(columns="geometry").assign(
        species="Ariolimax buttoni", occurrenceStatus=np.where(frame["presence"] == 1, "present", "absent"))
    occ.to_csv(root / "occurrences.csv", index=False)
    return root / "ario.store", root / "occurrences.csv"


def in_sample_tss(store: Path, occurrences: Path, block_res: int, model: str) -> dict[str, float]:
    """The old evaluation on the same folds: max-TSS threshold on the training folds' in-sample predictions."""
    from botaclip.sdm import metrics as M
    from botaclip.sdm.dataset import IndexedCells, StoreFeatures, label_cells
    from botaclip.sdm.evaluate import training_weights
    from botaclip.sdm.folds import spatial_folds
    from botaclip.sdm.models import make_model
    from botaclip.sdm.occurrences import read_occurrences
    from botaclip.store import Store

    src = StoreFeatures(Store.open(store, read_only=True))
    lab = label_cells(read_occurrences(occurrences), "Ariolimax buttoni", "presence-only",
                      IndexedCells.of(src, ["climate"]))
    X, _ = src.features(["climate"], lab.h3)
    folds = spatial_folds(lab.h3, lab.y, 5, block_res, 0)
    out = {"tss": [], "sensitivity": [], "specificity": []}
    for k in range(folds.n_folds):
        train, test = folds.split(k)
        est = make_model(model).fit(X[train], lab.y[train],
                                    sample_weight=training_weights(lab.y[train], lab.is_background[train]))
        t = M.best_tss_threshold(lab.y[train], est.predict(X[train]))
        m = M.threshold_metrics(lab.y[test], est.predict(X[test]), t)
        for key in out:
            out[key].append(m[key])
    return {k: float(np.nanmean(v)) for k, v in out.items()}


def reference_auc(data: Path, block_res: int, seed: int = 0) -> dict[str, float]:
    """AUC of 5-fold CV with square blocks of the H3 block's area (EPSG:3310), scikit-learn models and metric."""
    import geopandas as gpd
    import h3
    import lightgbm as lgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = gpd.read_file(data).to_crs(3310)
    X = frame[COVARIATES].to_numpy(np.float64)
    y = frame["presence"].to_numpy(int)
    side = math.sqrt(h3.average_hexagon_area(block_res, unit="m^2"))
    bx = np.floor(frame.geometry.x.to_numpy() / side).astype(np.int64)
    by = np.floor(frame.geometry.y.to_numpy() / side).astype(np.int64)
    _, block = np.unique(bx * 1_000_003 + by, return_inverse=True)
    fold_of_block = np.random.default_rng(seed).permutation(block.max() + 1) % 5
    fold = fold_of_block[block]
    makers = {
        "lightgbm": lambda: lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=31,
                                               min_child_samples=10, subsample=0.8, subsample_freq=1,
                                               colsample_bytree=0.5, reg_lambda=1.0, verbose=-1, random_state=seed,
                                               n_jobs=1),
        "rf": lambda: RandomForestClassifier(n_estimators=300, max_features="sqrt", random_state=seed, n_jobs=1),
        "logistic": lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)),
    }
    out = {}
    for name, make in makers.items():
        aucs = []
        for k in range(5):
            tr, te = fold != k, fold == k
            if len(np.unique(y[te])) < 2:
                continue
            w = np.where(y[tr] == 1, 1.0, y[tr].sum() / max((y[tr] == 0).sum(), 1))
            model = make()
            if name == "logistic":
                model.fit(X[tr], y[tr], logisticregression__sample_weight=w)
            else:
                model.fit(X[tr], y[tr], sample_weight=w)
            aucs.append(roc_auc_score(y[te], model.predict_proba(X[te])[:, 1]))
        out[name] = float(np.mean(aucs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="ariolimax.gpkg [default: from the installed elapid package]")
    parser.add_argument("--block-res", default="auto,3,4,5", help="comma-separated: auto and/or resolutions")
    args = parser.parse_args()
    from botaclip.sdm import compare

    data = find_data(args.data)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores; "
          f"data: {data}")
    with tempfile.TemporaryDirectory() as tmp:
        store, occurrences = prepare(data, Path(tmp))
        print("| blocks | model | AUC | TSS in-sample thr. | sens. in-sample | TSS out-of-sample | sens. | spec. | "
              "reference AUC (square blocks) | seconds |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for setting in args.block_res.split(","):
            t0 = time.perf_counter()
            res = compare(store, occurrences, ["climate"], kind="presence-only", models=MODELS, block_res=setting)
            seconds = time.perf_counter() - t0
            info = res.species[0]
            label = f"auto: res {info.block_res}" if setting == "auto" else f"res {setting}"
            if setting == "auto":
                print(f"<!-- auto: {info.folds}; range {res.autocorrelation['range_m'] / 1000:.0f} km "
                      f"(components {[round(r / 1000) for r in res.autocorrelation['component_ranges_m']]} km) -->")
            ref = reference_auc(data, info.block_res)
            table = {(r["model"]): r for r in res.table()}
            for model in MODELS:
                rec = table[model]
                old = in_sample_tss(store, occurrences, info.block_res, model)
                print(f"| {label} ({info.n_blocks} blocks) | {model} | {rec['auc_mean']:.3f} | {old['tss']:.3f} | "
                      f"{old['sensitivity']:.3f} | {rec['tss_mean']:.3f} | {rec['sensitivity_mean']:.3f} | "
                      f"{rec['specificity_mean']:.3f} | {ref[model]:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
