"""Publishable SDM evaluation: out-of-sample thresholds and their rules, blocks sized from the data's
autocorrelation range, binary maps, and cross-fitted feature sets."""

from __future__ import annotations

import json

import h3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from botaclip.errors import InvalidInputError
from botaclip.sdm import (
    CrossFit,
    autocorrelation_range,
    best_tss_threshold,
    compare,
    fit_species,
    p10_threshold,
    parse_threshold,
    predict,
    sens_spec_threshold,
    spatial_folds,
    threshold_metrics,
)
from botaclip.sdm.autocorrelation import (
    edge_length_m,
    empirical_variogram,
    leading_components,
    resolution_for_range,
    sample_places,
)
from botaclip.sdm.cells import cell_to_parent, cells_to_latlng
from botaclip.sdm.config import SamplingConfig
from botaclip.sdm.dataset import IndexedCells, StoreFeatures, label_cells
from botaclip.sdm.evaluate import cross_validate, training_weights
from botaclip.sdm.models import make_model
from botaclip.sdm.occurrences import read_occurrences
from botaclip.store import Store

# --- threshold rules, by hand ------------------------------------------------------------------------------------

Y = np.array([1, 1, 1, 0, 0, 0, 0])
S = np.array([0.9, 0.8, 0.4, 0.6, 0.3, 0.2, 0.1])


def test_max_tss_threshold_hand_computed():
    # t=0.9: 1/3+1-1; t=0.8: 2/3+1-1; t=0.6: 2/3+3/4-1; t=0.4: 1+3/4-1 = 0.75 (best); t=0.3: 1+1/2-1.
    assert best_tss_threshold(Y, S) == 0.4
    assert threshold_metrics(Y, S, 0.4)["tss"] == pytest.approx(0.75)


def test_sens_spec_threshold_hand_computed():
    # |sens - spec|: t=0.8: |2/3 - 1|; t=0.6: |2/3 - 3/4| = 1/12 (smallest); t=0.4: |1 - 3/4|.
    assert sens_spec_threshold(Y, S) == 0.6
    assert np.isnan(sens_spec_threshold([1, 1], [0.2, 0.3]))


def test_p10_threshold_hand_computed():
    # 20 presences: the ceil(0.9 * 20) = 18th highest score; 2 of 20 (10 %) fall below it.
    scores = np.arange(1, 21) / 20.0
    assert p10_threshold(scores) == pytest.approx(0.15)
    assert np.mean(scores < p10_threshold(scores)) == pytest.approx(0.10)
    # Fewer than 10 presences: floor(0.9 n), as ENMeval does (3 presences -> the 2nd highest).
    assert p10_threshold([0.9, 0.8, 0.4]) == 0.8
    assert np.isnan(p10_threshold([]))
    assert parse_threshold("p10").choose(Y, S) == 0.8


def test_parse_threshold_rules_values_and_bad_input():
    assert parse_threshold(None).name == "maxtss"
    assert parse_threshold(" SenSpec ").name == "senspec"
    fixed = parse_threshold("0.25")
    assert fixed.fixed and fixed.value == 0.25 and fixed.choose(Y, S) == 0.25 and str(fixed) == "0.25"
    assert parse_threshold(1).value == 1.0
    for bad in ("kappa", "1.5", -0.1, "nan", True):
        with pytest.raises(InvalidInputError) as exc:
            parse_threshold(bad)
        assert exc.value.params == ["threshold"] and isinstance(exc.value, ValueError)


# --- out-of-sample thresholds on presence/background data with a real signal -------------------------------------

@pytest.fixture(scope="module")
def presence_background(tmp_path_factory):
    """300 presences following an environmental gradient over ~2,800 res-9 cells, and the covariates."""
    root = tmp_path_factory.mktemp("pb")
    rng = np.random.default_rng(1)
    centre = h3.latlng_to_cell(45.2, 6.1, 9)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(centre, 30)), dtype=np.uint64)
    lat, lng = cells_to_latlng(cells)
    u, v = (lat - lat.min()) / np.ptp(lat), (lng - lng.min()) / np.ptp(lng)
    env = 0.6 * u + 0.4 * np.sin(6 * v)
    env = (env - env.min()) / np.ptp(env)
    n = cells.size
    store = Store.create(root / "pb.store", resolution=9)
    with store.writer("cov", kind="covariates", columns=["env", "moist", "n1", "n2"], provenance={"s": "t"}) as w:
        w.write(h3=cells, columns={"env": env, "moist": np.cos(5 * u) + 0.1 * rng.normal(size=n),
                                   "n1": rng.normal(size=n), "n2": rng.normal(size=n)})
    p = 1 / (1 + np.exp(-12 * (env - 0.65)))
    pres = rng.choice(n, 300, replace=False, p=p / p.sum())
    pd.DataFrame({"species": "Sp", "decimalLatitude": lat[pres], "decimalLongitude": lng[pres]}).to_csv(
        root / "pres.csv", index=False)
    src = StoreFeatures(store)
    lab = label_cells(read_occurrences(root / "pres.csv"), "Sp", "presence-only", IndexedCells.of(src, ["cov"]),
                      SamplingConfig(background=800))
    X, _ = src.features(["cov"], lab.h3)
    return {"root": root, "store": root / "pb.store", "lab": lab, "X": X,
            "folds": spatial_folds(lab.h3, lab.y, 5, block_res=7)}


def test_random_forest_tss_in_line_with_logistic(presence_background):
    """A forest scores its own training cells near 1: an in-sample max-TSS threshold then sits above every
    held-out cell (the published failure: AUC 0.94, TSS 0.02). Chosen on inner out-of-fold predictions, its TSS
    and sensitivity are in line with logistic regression's."""
    d = presence_background
    lab, X, folds = d["lab"], d["X"], d["folds"]
    rf = cross_validate(X, lab.y, folds, "rf", is_background=lab.is_background)
    lr = cross_validate(X, lab.y, folds, "logistic", is_background=lab.is_background)
    rf_s, lr_s = rf.summary(), lr.summary()
    assert rf_s["auc"]["mean"] > 0.7
    assert rf_s["tss"]["mean"] > 0.3 and rf_s["sensitivity"]["mean"] > 0.6
    assert abs(rf_s["tss"]["mean"] - lr_s["tss"]["mean"]) < 0.15
    assert abs(rf_s["sensitivity"]["mean"] - lr_s["sensitivity"]["mean"]) < 0.2
    # What the in-sample threshold would have done on the same fold.
    train, test = folds.split(0)
    w = training_weights(lab.y, lab.is_background)
    est = make_model("rf").fit(X[train], lab.y[train], sample_weight=w[train])
    t_in = best_tss_threshold(lab.y[train], est.predict(X[train]))
    in_sample = threshold_metrics(lab.y[test], est.predict(X[test]), t_in)
    assert t_in > rf.folds[0].threshold + 0.2
    assert in_sample["sensitivity"] < 0.3 < rf.folds[0].metrics["sensitivity"]


def test_fold_threshold_never_sees_its_test_labels(presence_background):
    d = presence_background
    lab, X, folds = d["lab"], d["X"], d["folds"]
    cv = cross_validate(X, lab.y, folds, "logistic", is_background=lab.is_background, threshold="senspec")
    _, test = folds.split(2)
    y2 = lab.y.copy()
    y2[test] = 1 - y2[test]  # flip the held-out labels of fold 2
    cv2 = cross_validate(X, y2, folds, "logistic", is_background=lab.is_background, threshold="senspec")
    assert cv.threshold_rule == "senspec"
    assert cv2.folds[2].threshold == cv.folds[2].threshold
    assert cv2.folds[2].metrics["tss"] != cv.folds[2].metrics["tss"]


def test_final_threshold_from_out_of_fold_predictions(presence_background, tmp_path):
    d = presence_background
    res = fit_species(d["store"], d["root"] / "pres.csv", "Sp", features="cov", model="logistic", kind="presence-only",
                      background=800, block_res=7, threshold="p10", out=tmp_path / "m", predictions=False,
                      write_map=False)
    y, oof = d["lab"].y, res.cv.oof
    ok = np.isfinite(oof)
    assert res.threshold_rule == "p10" and res.threshold == pytest.approx(p10_threshold(oof[ok & (y > 0)]))
    assert set(res.thresholds) == {"maxtss", "senspec", "p10"}
    assert res.thresholds["maxtss"] == pytest.approx(best_tss_threshold(y[ok], oof[ok]))
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["threshold_rule"] == "p10" and doc["threshold"] == pytest.approx(res.threshold)
    assert doc["version"] == 2 and set(doc["thresholds"]) == {"maxtss", "senspec", "p10"}


# --- block size from the data ------------------------------------------------------------------------------------

def _gaussian_field(cells: np.ndarray, practical_range_m: float, n_fields: int, seed: int) -> np.ndarray:
    """Independent Gaussian fields with exponential covariance exp(-3h/r) at the cell centres."""
    from botaclip.sdm.autocorrelation import haversine_m

    lat, lng = cells_to_latlng(cells)
    d = haversine_m(lat[:, None], lng[:, None], lat[None, :], lng[None, :])
    cov = np.exp(-3.0 * d / practical_range_m) + 1e-8 * np.eye(cells.size)
    chol = np.linalg.cholesky(cov)
    return chol @ np.random.default_rng(seed).normal(size=(cells.size, n_fields))


@pytest.mark.parametrize("true_range_m", [2_000.0, 6_000.0])
def test_range_estimator_recovers_a_known_range(true_range_m):
    rng = np.random.default_rng(0)
    # ~1,500 random res-9 cells over about 30 km x 30 km.
    centre = h3.latlng_to_cell(45.0, 6.0, 6)
    pool = np.array([h3.str_to_int(c) for c in h3.cell_to_children(centre, 9)], dtype=np.uint64)
    pool = np.concatenate([pool] + [np.array([h3.str_to_int(c) for c in h3.cell_to_children(n, 9)], np.uint64)
                                    for n in h3.grid_ring(centre, 1)])
    cells = np.sort(rng.choice(pool, 1500, replace=False))
    X = _gaussian_field(cells, true_range_m, 3, seed=1) + 0.05 * rng.normal(size=(cells.size, 3))
    est = autocorrelation_range(cells, X, seed=0)
    assert true_range_m / 2 <= est.range_m <= true_range_m * 2, est


@pytest.mark.parametrize("shape", [(300, 40), (30, 80)])
def test_leading_components_are_those_of_the_full_svd(shape):
    """Eigenpairs of the smaller Gram matrix: the components of a full SVD up to sign (a semivariogram squares
    differences), and their shares of the whole variance."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=shape) @ np.diag(np.linspace(3, 0.5, shape[1])) + rng.normal(size=(shape[0], 1)) * 4
    X[:, 5] = 2.0  # constant: dropped
    scores, share = leading_components(X, explained=0.99)
    keep = np.arange(shape[1]) != 5
    Z = (X[:, keep] - X[:, keep].mean(axis=0)) / X[:, keep].std(axis=0)
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    k = scores.shape[1]
    assert k == 5 and np.allclose(share, (s**2 / np.sum(s**2))[:k], rtol=1e-10, atol=1e-12)
    assert np.allclose(np.abs(scores), np.abs(u[:, :k] * s[:k]), rtol=1e-8, atol=1e-8)
    few, few_share = leading_components(X, explained=0.3)
    assert few.shape[1] == np.searchsorted(np.cumsum(s**2 / np.sum(s**2)), 0.3) + 1 == few_share.size


def test_range_places_are_shared_by_every_matrix_of_the_same_cells():
    rng = np.random.default_rng(2)
    centre = h3.latlng_to_cell(45.0, 6.0, 6)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.cell_to_children(centre, 10)), dtype=np.uint64)[::2]
    lat, lng = cells_to_latlng(cells)
    X = np.column_stack([np.sin(lat * 200) + np.cos(lng * 150), lat * 10, rng.normal(size=cells.size)])
    places = sample_places(cells, max_points=300, seed=4)
    assert places.rows.size == 300
    assert autocorrelation_range(cells, X, max_points=300, seed=4, places=places) == \
        autocorrelation_range(cells, X, max_points=300, seed=4)
    # The binned pairs give the brute-force semivariogram of any variable at those places.
    sub_lat, sub_lng = cells_to_latlng(cells[places.rows])
    i, j = np.triu_indices(places.rows.size, 1)
    from botaclip.sdm.autocorrelation import haversine_m

    dist = haversine_m(sub_lat[i], sub_lng[i], sub_lat[j], sub_lng[j])
    v = X[places.rows, 0]
    h, g, n = places.bins.semivariogram(v)
    inside = (dist > 0) & (dist <= places.cutoff_m)
    assert n.sum() == inside.sum()
    first = inside & (dist <= places.cutoff_m / 15)
    assert g[0] == pytest.approx(np.mean(0.5 * (v[i] - v[j])[first] ** 2), rel=1e-12)
    assert h[0] == pytest.approx(dist[first].mean(), rel=1e-12)
    assert all(np.array_equal(a, b) for a, b in zip((h, g, n), empirical_variogram(dist, v, places.cutoff_m)))
    assert sample_places(cells[:9]).bins is None


def test_resolution_for_range_and_block_fallback():
    assert resolution_for_range(edge_length_m(7), 10) == 7
    assert resolution_for_range(edge_length_m(7) * 1.2, 10) == 7
    assert resolution_for_range(1e9, 10) == 0 and resolution_for_range(1.0, 10) == 10
    # A long range asks for huge blocks; too few of them for 5 folds falls back to finer blocks, with a note.
    centre = h3.latlng_to_cell(45.0, 6.0, 5)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.cell_to_children(centre, 8)), dtype=np.uint64)
    f = spatial_folds(cells, None, 5, range_m=500_000.0)
    assert f.how == "range" and np.unique(cell_to_parent(cells, f.block_res)).size >= 20
    assert any("fewer than 4 blocks per fold" in n for n in f.notes)
    assert "autocorrelation range 500 km" in f.describe()
    g = spatial_folds(cells, None, 5, range_m=edge_length_m(7))
    assert g.block_res == 7 and not g.notes


def test_auto_blocks_in_fit_and_compare(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="good",
                      model="logistic", folds=3, predictions=False, write_map=False)
    assert res.range_m is not None and res.range_m > 0
    assert "chosen from the features' autocorrelation range" in res.folds_description
    forced = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="good",
                         model="logistic", folds=3, block_res=7, predictions=False, write_map=False)
    assert forced.block_res == 7 and forced.range_m is None
    cmp = compare(landscape["store"], landscape["root"] / "plots.csv", ["good", "noise"],
                  species=["Alpha prima"], models=["logistic"], folds=3, out=tmp_path / "cmp")
    assert cmp.autocorrelation["range_m"] > 0 and cmp.block_res == "auto"
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "estimated autocorrelation range of the inputs" in md and "rule `maxtss`" in md


def test_bad_block_res_threshold_and_inner_folds(landscape):
    store, plots = landscape["store"], landscape["root"] / "plots.csv"
    for kwargs in ({"block_res": "coarse"}, {"block_res": 16}, {"threshold": "youden"}, {"threshold": 2.0},
                   {"inner_folds": 1}, {"seed": -1}, {"jobs": 0}, {"background": 0}, {"folds": 1}):
        with pytest.raises(InvalidInputError) as exc:
            fit_species(store, plots, "Alpha prima", features="good", predictions=False, **kwargs)
        assert exc.value.params == list(kwargs)


# --- binary predictions ------------------------------------------------------------------------------------------

def test_binary_predictions_in_every_format(landscape, tmp_path):
    import geopandas as gpd
    import rasterio

    fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="good",
                model="logistic", folds=3, out=tmp_path / "m", predictions=False, write_map=False)
    model = json.loads((tmp_path / "m" / "model.json").read_text())
    cont = pq.read_table(predict(tmp_path / "m", landscape["store"], tmp_path / "s.parquet").path).to_pandas()
    r = predict(tmp_path / "m", landscape["store"], tmp_path / "b.parquet", binary=True)
    b = pq.read_table(r.path).to_pandas()
    # presence beside the area of applicability's columns, as for suitability
    assert list(b.columns) == ["h3", "presence", "di", "inside_aoa"] and set(b["presence"].unique()) <= {0, 1}
    assert b["di"].equals(cont["di"]) and b["inside_aoa"].equals(cont["inside_aoa"])
    assert r.extra["threshold"] == pytest.approx(model["threshold"], abs=1e-6)
    merged = cont.merge(b, on="h3")
    assert ((merged["suitability"] >= model["threshold"]) == (merged["presence"] == 1)).all()
    # A rule's stored out-of-fold value, or a fixed value, instead of the model's threshold.
    p10 = predict(tmp_path / "m", landscape["store"], tmp_path / "p10.parquet", binary=True, threshold="p10")
    assert p10.extra["threshold"] == pytest.approx(model["thresholds"]["p10"], abs=1e-6)
    low = pq.read_table(predict(tmp_path / "m", landscape["store"], tmp_path / "low.parquet", binary=True,
                                threshold=0.0).path).to_pandas()
    assert (low["presence"] == 1).all()
    g = gpd.read_file(predict(tmp_path / "m", landscape["store"], tmp_path / "b.gpkg", binary=True).path)
    assert set(g["presence"].unique()) <= {0, 1} and len(g) == len(b)
    with rasterio.open(predict(tmp_path / "m", landscape["store"], tmp_path / "b.tif", binary=True,
                               pixel_m=200).path) as src:
        band = src.read(1, masked=True)
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and set(np.unique(band.compressed())) <= {0, 1}
    assert predict(tmp_path / "m", landscape["store"], tmp_path / "b.png", binary=True).n_cells == len(b)
    # A PredictConfig, and keywords overriding its fields, give the same output as the keywords alone.
    from botaclip.sdm import PredictConfig

    via = predict(tmp_path / "m", landscape["store"], tmp_path / "cfg.parquet", PredictConfig(binary=True),
                  threshold="p10")
    assert via.extra["threshold"] == p10.extra["threshold"] and via.n_cells == p10.n_cells


def test_predict_config_is_checked_before_any_work():
    from botaclip.commands.sdm import predict_cmd
    from botaclip.sdm import PredictConfig

    for kwargs, name in [({"pixel_m": 0}, "pixel_m"), ({"pixel_m": -5.0}, "pixel_m"),
                         ({"threshold": 0.5}, "threshold"), ({"binary": True, "threshold": "best"}, "threshold"),
                         ({"binary": True, "threshold": 1.5}, "threshold")]:
        with pytest.raises(InvalidInputError) as exc:
            PredictConfig(**kwargs)
        assert name in exc.value.params, kwargs
    defaults = {p.name: p.default for p in predict_cmd.params}
    for field in ("region", "pixel_m", "threshold"):
        assert defaults[field] == getattr(PredictConfig(), field)


def test_binary_bad_input(landscape, tmp_path):
    fit_species(landscape["store"], landscape["root"] / "soil.csv", "Collembola", features="good", model="logistic",
                folds=3, out=tmp_path / "ab", predictions=False, write_map=False)
    with pytest.raises(InvalidInputError, match="predicts abundance"):
        predict(tmp_path / "ab", landscape["store"], tmp_path / "x.parquet", binary=True)
    fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="good",
                model="logistic", folds=3, out=tmp_path / "m", predictions=False, write_map=False)
    for kwargs in ({"threshold": 0.5}, {"binary": True, "threshold": "1.2"}, {"binary": True, "threshold": "kappa"}):
        with pytest.raises(InvalidInputError) as exc:
            predict(tmp_path / "m", landscape["store"], tmp_path / "x.parquet", **kwargs)
        assert "threshold" in exc.value.params
    assert not (tmp_path / "x.parquet").exists()


def test_cli_threshold_and_binary(landscape, tmp_path, cli_runner, monkeypatch):
    from botaclip.cli import cli

    monkeypatch.chdir(tmp_path)
    store, plots = str(landscape["store"]), str(landscape["root"] / "plots.csv")
    r = cli_runner.invoke(cli, ["sdm", "fit", "--store", store, "--occurrences", plots, "--species", "Alpha prima",
                                "--features", "good", "--model", "logistic", "--folds", "3", "--threshold", "senspec",
                                "--out", "m", "--no-predictions", "--no-map"])
    assert r.exit_code == 0, r.stderr
    assert "threshold rule senspec" in r.output and "autocorrelation range" in r.output
    r = cli_runner.invoke(cli, ["sdm", "predict", "--model", "m", "--store", store, "--out", "b.parquet",
                                "--binary"])
    assert r.exit_code == 0, r.stderr
    assert "share present" in r.output and "threshold_from stored (senspec)" in r.output
    for args, message in ((["fit", "--threshold", "kappa"], "unknown --threshold rule 'kappa'"),
                          (["fit", "--block-res", "big"], "--block-res must be 'auto'"),
                          (["fit", "--seed", "-1"], "--seed must be a non-negative integer"),
                          (["predict", "--threshold", "0.3"], "ask for it with --binary")):
        if args[0] == "fit":
            full = ["sdm", "fit", "--store", store, "--occurrences", plots, "--species", "Alpha prima",
                    "--features", "good", "--out", "o", *args[1:]]
        else:
            full = ["sdm", "predict", "--model", "m", "--store", store, "--out", "o.parquet", *args[1:]]
        r = cli_runner.invoke(cli, full)
        assert r.exit_code == 2 and message in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1


# --- cross-fitted feature sets -----------------------------------------------------------------------------------

def test_per_fold_features_are_used_per_fold(presence_background):
    d = presence_background
    lab, X, folds = d["lab"], d["X"], d["folds"]
    noise = np.random.default_rng(3).normal(size=X.shape).astype(np.float32)
    per_fold = [X if k == 0 else noise for k in range(folds.n_folds)]
    cv = cross_validate(per_fold, lab.y, folds, "logistic", is_background=lab.is_background)
    auc = cv.values("auc")
    assert auc[0] > 0.7 and max(abs(a - 0.5) for a in auc[1:]) < 0.15
    with pytest.raises(ValueError, match="for 2 folds"):
        cross_validate([X, X], lab.y, folds, "logistic")


@pytest.fixture(scope="module")
def cross_fitted(landscape, tmp_path_factory):
    """Fold feature sets next to 'emb': fold 0's carries the signal, the others pure noise, so which one scored
    which fold shows in the fold metrics. The relevé blocks (res 7) are dealt into 3 folds."""
    root = tmp_path_factory.mktemp("cf")
    import shutil

    shutil.copytree(landscape["store"], root / "s.store")
    store = Store.open(root / "s.store")
    cells = landscape["cells"]
    h, emb, _ = store.features_numpy("emb")
    rng = np.random.default_rng(5)
    for k in range(3):
        X = emb if k == 0 else rng.normal(size=emb.shape)
        with store.writer(f"emb_f{k}", kind="botaclip", dim=emb.shape[1], provenance={"fold": k}) as w:
            w.write(h3=h, embedding=X)
    plots = pd.read_csv(landscape["root"] / "plots.csv").drop_duplicates("releve_id")
    from botaclip.sdm.cells import latlng_to_cells

    releve_cells = np.unique(latlng_to_cells(plots["decimalLatitude"].to_numpy(),
                                             plots["decimalLongitude"].to_numpy(), 9))
    blocks = np.unique(cell_to_parent(releve_cells, 7))
    folds = np.arange(blocks.size) % 3
    cf = CrossFit(("emb_f0", "emb_f1", "emb_f2"), 7, blocks, folds, releve_cells)
    return {"store": root / "s.store", "cf": cf, "cells": cells}


def test_compare_uses_cross_fitted_folds_and_features(landscape, cross_fitted, tmp_path):
    cf = cross_fitted["cf"]
    res = compare(cross_fitted["store"], landscape["root"] / "plots.csv", ["emb", "good"],
                  species=["Alpha prima"], models=["logistic"], folds=5, block_res=8, cross_fit={"emb": cf},
                  out=tmp_path / "cmp")
    info = res.species[0]
    assert info.cross_fitted == ["emb"] and info.block_res == 7
    assert any("folds follow the adapters' 3 cross-fitting folds" in n for n in info.notes)
    assert any("5 folds asked for were replaced" in n for n in info.notes)
    assert any("block resolution 8 was replaced" in n for n in info.notes)
    auc = next(r for r in res.rows if r.features == "emb" and r.metric == "auc").values
    good = next(r for r in res.rows if r.features == "good" and r.metric == "auc").values
    assert len(auc) == len(good) == 3  # paired: the uncross-fitted set shares the cross-fitted folds
    assert auc[0] > 0.75 and max(abs(a - 0.5) for a in auc[1:]) < 0.2
    assert "Cross-fitted: emb" in (tmp_path / "cmp" / "report.md").read_text()
    # Presences on no training relevé do not use the cross-fit (background cells on relevés do not count).
    bf = pd.read_csv(landscape["root"] / "butterflies.csv")
    from botaclip.sdm.cells import latlng_to_cells

    on_releve = np.isin(latlng_to_cells(bf["decimalLatitude"].to_numpy(), bf["decimalLongitude"].to_numpy(), 9),
                        cf.releve_cells)
    bf[~on_releve].to_csv(tmp_path / "bf.csv", index=False)
    bf = compare(cross_fitted["store"], tmp_path / "bf.csv", ["emb"], species=["Papilio alpinus"],
                 models=["logistic"], folds=3, background=300, cross_fit={"emb": cf})
    plain = compare(cross_fitted["store"], tmp_path / "bf.csv", ["emb"], species=["Papilio alpinus"],
                    models=["logistic"], folds=3, background=300)
    assert bf.species[0].cross_fitted == []
    assert [r.values for r in bf.rows] == [r.values for r in plain.rows]  # the full set scored every fold


def test_each_cross_fitted_set_reads_its_own_fold_sets(landscape, cross_fitted):
    """Two cross-fitted sets on one split: fold k of each is scored with that set's own fold-k features (a
    regression: both used to read the first set's fold sets, so two adapters scored identically)."""
    cf = cross_fitted["cf"]
    good_cf = CrossFit(("good", "good", "good"), cf.block_res, cf.blocks, cf.folds, cf.releve_cells)
    kw = dict(species=["Alpha prima"], models=["logistic"], folds=3)
    both = compare(cross_fitted["store"], landscape["root"] / "plots.csv", ["emb", "good"],
                   cross_fit={"emb": cf, "good": good_cf}, **kw)
    one = compare(cross_fitted["store"], landscape["root"] / "plots.csv", ["emb", "good"], cross_fit={"emb": cf},
                  **kw)
    assert both.species[0].cross_fitted == ["emb", "good"]

    def auc(res, features):
        return next(r for r in res.rows if r.features == features and r.metric == "auc").values

    assert auc(both, "good") == auc(one, "good")  # good's fold sets are good itself: same folds, same numbers
    assert auc(both, "emb") == auc(one, "emb")
    assert auc(both, "good") != auc(both, "emb")


def test_fit_cross_fitted_folds_assign_blocks_and_final_model_uses_full_set(landscape, cross_fitted, tmp_path):
    cf = cross_fitted["cf"]
    res = fit_species(cross_fitted["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                      model="logistic", cross_fit={"emb": cf}, out=tmp_path / "m", predictions=False,
                      write_map=False)
    assert res.cross_fitted == ["emb"] and len(res.cv.folds) == 3 and "cross-fitted" in res.folds_description
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["feature_sets"][0]["name"] == "emb" and doc["cross_fitted"] == ["emb"]
    # The fold of each relevé block is the adapters' fold.
    src = StoreFeatures(Store.open(cross_fitted["store"], read_only=True))
    lab = label_cells(read_occurrences(landscape["root"] / "plots.csv"), "Alpha prima", "presence-absence",
                      IndexedCells.of(src, ["emb"]))
    f = spatial_folds(lab.h3, lab.y, 3, 7, assigned=cf.assignment)
    block_fold = dict(zip(cf.blocks.tolist(), cf.folds.tolist()))
    assert all(block_fold[int(b)] == k for b, k in zip(f.block, f.fold))


def test_cross_fits_on_different_splits_are_refused(landscape, cross_fitted):
    cf = cross_fitted["cf"]
    other = CrossFit(cf.fold_sets, cf.block_res, cf.blocks, (cf.folds + 1) % 3, cf.releve_cells)
    with pytest.raises(InvalidInputError, match="cross-fitted on different relevé folds"):
        compare(cross_fitted["store"], landscape["root"] / "plots.csv", ["emb", "emb_f1"], species=["Alpha prima"],
                models=["logistic"], cross_fit={"emb": cf, "emb_f1": other})
    with pytest.raises(InvalidInputError, match="at least 2 fold feature sets"):
        CrossFit.from_dict({"fold_sets": ["a"], "block_res": 7, "blocks": [], "folds": [], "releve_cells": []})


def test_presence_free_blocks_are_spread_over_folds():
    """Presence-free blocks go where absences/background are fewest, not all to the fold with fewest presences
    (which once left one fold with nearly all the background and the others nearly none)."""
    centre = h3.latlng_to_cell(45.0, 6.0, 5)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.cell_to_children(centre, 8)), dtype=np.uint64)
    y = np.zeros(cells.size)
    blocks = cell_to_parent(cells, 7)
    y[np.isin(blocks, np.unique(blocks)[:6])] = 1  # presences in 6 blocks only
    f = spatial_folds(cells, y, 5, block_res=7, seed=0)
    sizes = np.bincount(f.fold, minlength=5)
    negatives = np.bincount(f.fold, weights=1 - y, minlength=5)
    assert sizes.max() <= 1.3 * sizes.min() and negatives.max() <= 1.3 * negatives.min()
    assert (np.bincount(f.fold, weights=y, minlength=5) > 0).all()


@pytest.fixture
def inner_fits(monkeypatch):
    """A list that grows by one for every inner fit of the thresholds' CV."""
    from botaclip.sdm import evaluate

    calls = []
    original = evaluate._FoldFitter.fit_predict
    monkeypatch.setattr(evaluate._FoldFitter, "fit_predict",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


@pytest.mark.parametrize("model,inner,fits", [("lightgbm", None, (10, 20)), ("logistic", None, (10, 20)),
                                               ("lightgbm", 2, (5, 10))])
def test_shared_inner_fits_equal_fits_made_apart(presence_background, model, inner, fits, inner_fits):
    """By default the inner folds of outer fold k are the other outer folds, and the inner fit without folds j
    and k serves outer folds j and k: 5 outer folds cost 10 inner fits, not 20 (with 2 inner folds, the ring
    neighbours k-1 and k+1: 5, not 10). Given one copy of the features per fold, nothing is shared (each outer
    fold fits its own): thresholds, inner predictions and scores must not change. LightGBM also adds principal
    components (one projection for all folds, binned once)."""
    d = presence_background
    lab, folds = d["lab"], d["folds"]
    X = np.hstack([d["X"], np.random.default_rng(5).normal(size=(d["X"].shape[0], 12)).astype(np.float32)])
    calls = inner_fits

    def run(features):
        seen = []
        hook = lambda ctx: seen.append(ctx.inner_oof)  # noqa: E731
        calls.clear()
        cv = cross_validate(features, lab.y, folds, model, is_background=lab.is_background, extra_pcs=2,
                            on_fold=hook, inner_folds=inner)
        return cv, seen, len(calls)

    shared, inner_shared, n_shared = run(X)
    apart, inner_apart, n_apart = run([X.copy() for _ in range(folds.n_folds)])
    assert (n_shared, n_apart) == fits
    assert [f.threshold for f in shared.folds] == [f.threshold for f in apart.folds]
    for a, b in zip(inner_shared, inner_apart):
        np.testing.assert_array_equal(a, b)
    assert shared.summary() == apart.summary()
    np.testing.assert_array_equal(shared.oof, apart.oof)
    covered = 1.0 if inner is None else inner / (folds.n_folds - 1)
    assert all(abs(np.isfinite(a).mean() - covered) < 0.15 for a in inner_shared)


def test_few_outer_folds_deal_inner_folds_from_the_training_blocks(presence_background, inner_fits):
    """With 3 outer folds the other folds would leave an inner model a third of the samples: the training
    part's blocks are dealt into 3 inner folds instead, each predicting its own blocks."""
    d = presence_background
    lab = d["lab"]
    folds = spatial_folds(lab.h3, lab.y, 3, block_res=7)
    cv = cross_validate(d["X"], lab.y, folds, "logistic", is_background=lab.is_background)
    assert len(inner_fits) == 9 and all(np.isfinite(f.threshold) for f in cv.folds)
