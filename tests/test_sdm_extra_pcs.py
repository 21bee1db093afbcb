"""LightGBM with principal components added to the embedding columns (``extra_pcs``): the components are fitted
once on every sample's features (never on labels), joined to the columns' shared bins row by row, and travel
with a saved model."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from botaclip.errors import InvalidInputError
from botaclip.sdm import fit_species, load_model, predict
from botaclip.sdm.aoa import input_weights
from botaclip.sdm.binning import BinnedFeatures, with_columns
from botaclip.sdm.cells import latlng_to_cells
from botaclip.sdm.config import EvaluationConfig
from botaclip.sdm.evaluate import cross_validate, extra_components
from botaclip.sdm.folds import spatial_folds
from botaclip.sdm.models import LightGBMModel, Projection, make_model
from botaclip.sdm.persist import SavedModel, save_model


def _weak(n=900, d=40, seed=0):
    """A signal spread thinly over every column (one direction), as set1 of bench/sdm.py's world."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    latent = rng.normal(size=n)
    X = (rng.normal(size=(n, d)) + 2.0 * np.outer(latent, direction)).astype(np.float32)
    y = (latent + rng.normal(scale=0.8, size=n) > 0.8).astype(float)
    return X, y


def test_added_columns_keep_their_rows_through_a_shuffled_view():
    X, y = _weak(n=600, d=10)
    E = np.random.default_rng(2).normal(size=(600, 3)).astype(np.float32)
    base = BinnedFeatures(X)
    perm = np.random.default_rng(3).permutation(600)
    joined = with_columns(base.view(perm), E[perm])  # row i: X's row perm[i] beside E's row perm[i]
    assert joined.shape == (600, 13) and base.dataset.num_feature() == 10  # the shared bins are left as they are
    pick = np.arange(0, 600, 2)
    whole = BinnedFeatures(np.hstack([X, E]))  # the same bin edges: every row of X and of E
    a = LightGBMModel(n_estimators=25, colsample_bytree=1.0).fit(joined.rows(pick), y[perm][pick])
    b = LightGBMModel(n_estimators=25, colsample_bytree=1.0).fit(whole.rows(perm[pick]), y[perm][pick])
    Z = np.hstack([X, E])
    assert np.array_equal(a.predict(Z), b.predict(Z))
    assert a.booster_.feature_importance()[10:].sum() >= 0 and a.n_features_ == 13
    with pytest.raises(ValueError, match="extra columns"):
        with_columns(base, E[:10])


def test_kept_projection_adds_components_after_every_column():
    X, _ = _weak(n=300, d=12)
    p = Projection(4, columns=np.arange(10), keep=True).fit(X[:200])
    Z = p.transform(X)
    assert Z.shape == (300, 16)
    assert np.array_equal(Z[:, :12], X)
    assert np.allclose(Z[:, 12:], p.components(X)) and np.allclose(Z[:200, 12:].mean(axis=0), 0, atol=1e-4)
    assert Projection(4, columns=np.arange(10)).fit(X[:200]).transform(X).shape == (300, 6)  # replaced
    # AOA weights of the inputs: the columns' own, then the embedding columns' mean for each component.
    w = input_weights(make_model("lightgbm", pca=4, pca_columns=np.arange(10), pca_keep=True).fit(
        X[:200], (X[:200, 0] > 0).astype(float)), 12, np.arange(12.0))
    assert w.tolist() == list(range(12)) + [4.5] * 4


def _cv(X, y, **kw):
    rng = np.random.default_rng(7)
    cells = latlng_to_cells(45 + rng.random(y.size) * 0.3, 6 + rng.random(y.size) * 0.3, 9)
    folds = spatial_folds(cells, y, 3, 6, seed=0)
    return folds, cross_validate(X, y, folds, "lightgbm", "binary", np.zeros(y.size, bool),
                                 lightgbm_params="n_estimators=40", **kw)


def test_components_are_fitted_once_on_every_sample_without_labels(monkeypatch):
    """One projection for all folds (an unsupervised step may precede the split, ESL 7.10.2): fitted once, on the
    features of every sample, and the same whatever the labels."""
    fitted = []

    class Recording(Projection):
        def fit(self, X):
            fitted.append(np.array(X))
            return super().fit(X)

    monkeypatch.setattr(importlib.import_module("botaclip.sdm.evaluate"), "Projection", Recording)
    X, y = _weak()
    contexts = []
    folds, cv = _cv(X, y, extra_pcs=4, on_fold=contexts.append)
    assert len(fitted) == 1 and len(contexts) == folds.n_folds
    assert np.array_equal(fitted[0], X)
    _cv(X, 1 - y, extra_pcs=4)
    assert len(fitted) == 2 and np.array_equal(fitted[1], X)
    # The fold model predicts raw features of new cells through its own projection.
    new = _weak(n=50, seed=9)[0]
    p = contexts[0].predict(new)
    assert p.shape == (50,) and np.isfinite(p).all()


def test_added_components_score_the_same_binned_once_or_per_fit():
    X, y = _weak()
    _, once = _cv(X, y, extra_pcs=4)
    _, per_fit = _cv(X, y, extra_pcs=4, bin_once=False)
    assert abs(np.nanmean(once.values("auc")) - np.nanmean(per_fit.values("auc"))) < 0.03
    _, none = _cv(X, y, extra_pcs=0)
    assert [f.metrics for f in none.folds] != [f.metrics for f in once.folds]  # the components were used


def test_extra_components_apply_to_lightgbm_and_give_way_to_pca():
    ev = EvaluationConfig(extra_pcs=8)
    assert extra_components("lightgbm", ev, 768) == (8, True)
    assert extra_components("logistic", ev, 768) == (None, False)
    assert extra_components("lightgbm", ev, 8) == (None, False)  # as many components as columns: nothing added
    assert extra_components("rf", EvaluationConfig(pca=16, extra_pcs=8), 768) == (16, False)
    assert extra_components("lightgbm", EvaluationConfig(pca=16, extra_pcs=8), 768) == (16, False)


def test_a_saved_model_keeps_its_added_components(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                      model="lightgbm", folds=3, extra_pcs=3, out=tmp_path / "m", predictions=False,
                      write_map=False)
    assert res.summary()["auc"]["mean"] > 0.8
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["estimator"]["projection"] == 3 and doc["estimator"]["n_input_features"] == 8
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as arrays:
        assert bool(arrays["projection_keep"])
    saved = load_model(tmp_path / "m")
    assert saved.estimator.projection.keep and saved.estimator.inner.n_features_ == 8 + 3
    out = predict(tmp_path / "m", landscape["store"], tmp_path / "p.parquet")
    assert out.n_cells == landscape["cells"].size
    with pytest.raises(InvalidInputError) as exc:
        fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                    extra_pcs=-1)
    assert exc.value.params == ["extra_pcs"]


def test_save_and_load_predict_the_same(tmp_path):
    X, y = _weak(n=400, d=20)
    est = make_model("lightgbm", pca=5, pca_columns=np.arange(20), pca_keep=True, n_estimators=30).fit(X, y)
    save_model(tmp_path / "m", SavedModel(est, "A a", "presence-absence", [{"name": "f", "provenance_id": "x"}],
                                          [f"c{i}" for i in range(20)], list(range(20)), 9, 0.5))
    loaded = load_model(tmp_path / "m").estimator
    new = _weak(n=100, d=20, seed=4)[0]
    np.testing.assert_array_equal(loaded.predict(new), est.predict(new))
    assert loaded.projection.keep and loaded.inner.n_features_ == 25
