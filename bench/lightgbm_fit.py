"""Where one LightGBM SDM fit spends its time: building the binned Dataset, boosting, and subsetting a Dataset
that is already binned (what reusing one Dataset per feature set across folds would cost instead).

    .venv/bin/python bench/lightgbm_fit.py                     # 10,200 rows x 768 columns, as in bench/sdm.py
    .venv/bin/python bench/lightgbm_fit.py --rows 5000 --dim 384

Prints CPU seconds (one thread) for max_bin 255 (the default) and 63.
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
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.dim)).astype(np.float32)
    y = (rng.random(args.rows) < 0.02).astype(float)
    X[y == 1, :5] += 1.0  # a weak signal in a few columns, as in bench/sdm.py
    print(f"{args.rows} rows x {args.dim} columns, {args.rounds} rounds, 1 thread (CPU seconds)")
    print("| max_bin | build Dataset | boost | subset a built Dataset (half) | boost on the subset |")
    print("|---:|---:|---:|---:|---:|")
    for max_bin in (255, 63):
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


if __name__ == "__main__":
    main()
