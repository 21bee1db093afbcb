"""Where one LightGBM SDM fit spends its time: building the binned Dataset, boosting, and subsetting a Dataset
that is already binned (what reusing one Dataset per feature set across folds would cost instead).

    .venv/bin/python bench/lightgbm_fit.py                     # 10,200 rows x 768 columns, as in bench/sdm.py
    .venv/bin/python bench/lightgbm_fit.py --rows 5000 --dim 384
    .venv/bin/python bench/lightgbm_fit.py --bins 63,15        # only these bin counts

Prints CPU seconds (one thread) per bin count (LightGBM's default 255, then botaclip's choices): first the
LightGBM of before issue 17 (feature fraction 0.5, every row), then a fit as `sdm compare` makes today: an inner
fit on 3/5 of the rows with the package's LightGBMModel and its defaults (150 rounds at a feature fraction of 0.1,
every presence and 10% of the background per tree, at least 500), the 768 columns plus 8 more standing in for the
added principal components.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import lightgbm as lgb

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_200)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--bins", default="255,63,31,15", help="comma-separated max_bin values")
    args = ap.parse_args()
    bins = [int(b) for b in args.bins.split(",")]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    y = (rng.random(args.rows) < 0.02).astype(float)
    X[y == 1, :5] += 1.0  # a weak signal in a few columns, as in bench/sdm.py
    print(f"{args.rows} rows x {args.dim} columns, {args.rounds} rounds, 1 thread (CPU seconds)")
    print("| max_bin | build Dataset | boost | subset a built Dataset (half) | boost on the subset |")
    print("|---:|---:|---:|---:|---:|")
    for max_bin in bins:
        params = dict(objective="binary", learning_rate=0.05, num_leaves=31, min_data_in_leaf=10,
                      feature_fraction=0.5, bagging_fraction=0.8, bagging_freq=1, max_bin=max_bin, verbose=-1,
                      num_threads=1, seed=0)
        t = time.process_time()
        data = lgb.Dataset(X, y, params={"max_bin": max_bin, "verbose": -1, "feature_pre_filter": False}, free_raw_data=False).construct()
        build = time.process_time() - t
        t = time.process_time()
        lgb.train(params, data, num_boost_round=args.rounds)
        boost = time.process_time() - t
        t = time.process_time()
        half = data.subset(np.arange(0, args.rows, 2)).construct()
        subset = time.process_time() - t
        t = time.process_time()
        lgb.train(params, half, num_boost_round=args.rounds)
        boost_half = time.process_time() - t
        print(f"| {max_bin} | {build:.2f} | {boost:.2f} | {subset:.3f} | {boost_half:.2f} |")
    today(X, y, bins)


def today(X: np.ndarray, y: np.ndarray, bins: list[int]) -> None:
    """CPU seconds of one inner fit as `sdm compare` makes it, per bin count: the package's own LightGBMModel on
    rows of a BinnedFeatures, weighted as presence-only data (botaclip.sdm.evaluate.training_weights)."""
    from botaclip.sdm.binning import BinnedFeatures
    from botaclip.sdm.evaluate import training_weights
    from botaclip.sdm.models import LightGBMModel

    rng = np.random.default_rng(1)
    X = np.hstack([X, rng.normal(size=(X.shape[0], 8)).astype(np.float32)])
    rows = np.sort(rng.choice(X.shape[0], int(0.6 * X.shape[0]), replace=False))
    weights = training_weights(y[rows], y[rows] == 0)
    print(f"\nToday's inner fit: {rows.size} of the rows x {X.shape[1]} columns, 150 rounds (CPU seconds)")
    print("| max_bin | boost | per round (ms) | leaves per tree |")
    print("|---:|---:|---:|---:|")
    for max_bin in bins:
        part = BinnedFeatures(X, max_bin=max_bin, threads=1).rows(rows)
        model = LightGBMModel(max_bin=max_bin)
        t = time.process_time()
        model.fit(part, y[rows], sample_weight=weights)
        boost = time.process_time() - t
        leaves = np.mean([tree["num_leaves"] for tree in model.booster_.dump_model()["tree_info"]])
        print(f"| {max_bin} | {boost:.2f} | {1000 * boost / model.rounds:.2f} | {leaves:.1f} |")

if __name__ == "__main__":
    main()
