"""LightGBM's binned features built once and reused for every fit on a subset of their rows (issue 17): the
same model as a fit that bins the same rows itself, the same comparison in one process and in several, and
the LightGBM hyperparameters a user may set refused with one line when wrong."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from click.testing import CliRunner

from botaclip.errors import InvalidInputError
from botaclip.sdm import compare, fit_species
from botaclip.sdm.binning import DEFAULT_MAX_BIN, BinnedFeatures
from botaclip.sdm.config import EvaluationConfig
from botaclip.sdm.evaluate import cross_validate
from botaclip.sdm.folds import spatial_folds
from botaclip.sdm.models import LightGBMModel, model_from_state

SPECIES = ["Alpha prima", "Beta secunda"]


def _data(n=600, d=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[rng.random((n, d)) < 0.02] = np.nan  # missing values stay missing in the bins
    y = (X[:, 0] + 0.5 * np.nan_to_num(X[:, 1]) + rng.normal(scale=0.7, size=n) > 0.8).astype(float)
    w = np.where(y > 0, 1.0, 0.3)
    return X, y, w


def test_binned_rows_fit_the_same_model_as_binning_the_same_rows():
    X, y, w = _data()
    fresh = LightGBMModel(n_estimators=40).fit(X, y, sample_weight=w)
    binned = BinnedFeatures(X, max_bin=DEFAULT_MAX_BIN)
    reused = LightGBMModel(n_estimators=40).fit(binned.rows(np.arange(X.shape[0])), y, sample_weight=w)
    assert np.array_equal(fresh.predict(X), reused.predict(X))
    # Rows in any order: labels and weights follow their rows.
    perm = np.random.default_rng(1).permutation(X.shape[0])
    shuffled = LightGBMModel(n_estimators=40).fit(binned.rows(perm), y[perm], sample_weight=w[perm])
    assert np.array_equal(fresh.predict(X), shuffled.predict(X))


def test_a_subset_of_binned_rows_trains_as_its_rows_on_the_parents_bins():
    import lightgbm as lgb

    X, y, w = _data()
    binned = BinnedFeatures(X)
    rows = np.flatnonzero(np.arange(X.shape[0]) % 3 != 0)
    kw = dict(n_estimators=30, seed=3, learning_rate=0.05, colsample_bytree=0.5, neg_subsample=0.4,
              min_neg_per_tree=0, min_child_samples=10)
    model = LightGBMModel(**kw).fit(binned.rows(rows), y[rows], sample_weight=w[rows])
    # The same rows as a Dataset of their own on the parent's bin edges (LightGBM's `reference`).
    own = lgb.Dataset(X[rows], label=y[rows], weight=w[rows], reference=binned.dataset,
                      params=binned.dataset.params)
    params = dict(objective="binary", learning_rate=0.05, num_leaves=31, min_data_in_leaf=10, bagging_fraction=0.8,
                  bagging_freq=1, pos_bagging_fraction=1.0, neg_bagging_fraction=0.4, feature_fraction=0.5,
                  lambda_l2=1.0, num_threads=1, seed=3, deterministic=True, force_col_wise=True, verbose=-1)
    booster = lgb.train(params, own, num_boost_round=30)
    assert np.allclose(model.predict(X), booster.predict(X), rtol=0, atol=1e-12)
    # Binned on all rows, not on the subset: the split values differ from a fit that bins the subset itself,
    # the model (same rows, same labels) stays close.
    alone = LightGBMModel(**kw).fit(X[rows], y[rows], sample_weight=w[rows])
    assert np.corrcoef(alone.predict(X), model.predict(X))[0, 1] > 0.9


def test_early_stopping_on_binned_rows_keeps_the_best_round():
    X, y, w = _data(n=900)
    binned = BinnedFeatures(X)
    train, held = np.arange(600), np.arange(600, 900)
    model = LightGBMModel(n_estimators=300, early_stopping_rounds=10)
    model.fit(binned.rows(train), y[train], sample_weight=w[train], valid=(binned.rows(held), y[held], w[held]))
    assert 1 <= model.rounds < 300
    assert model.booster_.num_trees() == model.rounds


def test_a_model_saved_with_other_bins_keeps_them():
    """Models saved with other bins than the default (63, as before issue 17's bins) load with their own bins and
    predict as saved."""
    X, y, _ = _data()
    model = LightGBMModel(max_bin=63, n_estimators=20).fit(X, y)
    again = model_from_state(*model.state())
    assert DEFAULT_MAX_BIN == 7 and again.params["max_bin"] == 63
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    coarse = LightGBMModel(n_estimators=20).fit(X, y)
    assert coarse.params["max_bin"] == DEFAULT_MAX_BIN and not np.array_equal(coarse.predict(X), model.predict(X))


def test_binned_rows_are_refused_when_they_do_not_fit_the_model():
    X, y, w = _data()
    binned = BinnedFeatures(X, max_bin=DEFAULT_MAX_BIN)
    with pytest.raises(ValueError, match="max_bin"):
        LightGBMModel(max_bin=255).fit(binned.rows(np.arange(100)), y[:100])
    other = BinnedFeatures(X, max_bin=DEFAULT_MAX_BIN)
    with pytest.raises(ValueError, match="same binned features"):
        LightGBMModel().fit(binned.rows(np.arange(300)), y[:300],
                            valid=(other.rows(np.arange(300, 600)), y[300:], None))
    for twice in ([1, 2, 2], [3, 1, 3]):
        with pytest.raises(ValueError, match="twice"):
            binned.rows(twice)
    assert binned.rows([5, 1, 3]).shape == (3, X.shape[1])  # any order, each row once
    with pytest.raises(ValueError, match="outside"):
        binned.rows([0, 600])
    with pytest.raises(ValueError, match="2-D"):
        BinnedFeatures(np.zeros(5))


def test_binning_once_changes_nothing_across_worker_processes(landscape, capfd):
    kw = dict(species=SPECIES, models=["lightgbm"], folds=3)
    one = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb", "good"], jobs=1, **kw)
    two = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb", "good"], jobs=2, **kw)
    # LightGBM's log level is per thread: the bins the workers load are made and written by the same (quiet)
    # thread, while the autocorrelation range is estimated in another one.
    assert "[LightGBM]" not in capfd.readouterr().out
    rows = [[r.species, r.features, r.metric, [round(v, 12) for v in r.values if v == v]] for r in one.rows]
    assert rows == [[r.species, r.features, r.metric, [round(v, 12) for v in r.values if v == v]]
                    for r in two.rows]
    auc = one.means()["auc"]
    assert auc["emb | lightgbm"]["mean"] > 0.8 and auc["good | lightgbm"]["mean"] > 0.8


def test_binning_once_and_per_fit_score_alike(landscape):
    """Bin edges from all of a species' samples or from each training part: a modelling detail, not a change in
    what the cross-validation measures."""
    kw = dict(species=["Alpha prima"], models=["lightgbm"], folds=3, jobs=1)
    once = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb"], **kw).means()
    per_fit = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb"], bin_once=False, **kw).means()
    assert abs(once["auc"]["emb | lightgbm"]["mean"] - per_fit["auc"]["emb | lightgbm"]["mean"]) < 0.03


def test_lightgbm_params_reach_the_fitted_model(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                      model="lightgbm", folds=3, lightgbm_params="max_bin=15,num_leaves=7,n_estimators=20",
                      early_stopping=False, out=tmp_path / "m", predictions=False, write_map=False)
    from botaclip.sdm import load_model

    saved = load_model(tmp_path / "m").estimator
    assert saved.params["max_bin"] == 15 and saved.params["num_leaves"] == 7 and 1 <= saved.rounds <= 20
    assert res.summary()["auc"]["mean"] > 0.8


@pytest.mark.parametrize("text, needle", [
    ("depth=3", "names one of"), ("max_bin=1", "at least 2"), ("colsample_bytree=1.5", "at most 1"),
    ("learning_rate=fast", "positive float"), ("max_bin", "KEY=VALUE"), ("num_leaves=2.5", "positive int"),
])
def test_bad_lightgbm_params_are_refused_in_one_line(landscape, tmp_path, text, needle):
    with pytest.raises(InvalidInputError) as exc:
        EvaluationConfig(lightgbm_params=text)
    assert exc.value.params == ["lightgbm_params"] and needle in str(exc.value)
    from botaclip.cli import cli

    result = CliRunner().invoke(cli, ["sdm", "compare", "--store", str(landscape["store"]), "--occurrences",
                                       str(landscape["root"] / "plots.csv"), "--features", "emb", "--all",
                                       "--lightgbm-params", text, "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "--lightgbm-params" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_balanced_bagging_keeps_every_presence_and_is_deterministic():
    X, y, w = _data(n=900)
    binned = BinnedFeatures(X)
    rows = np.arange(900)
    kw = dict(n_estimators=30, neg_subsample=0.3, min_neg_per_tree=0)
    a = LightGBMModel(**kw).fit(binned.rows(rows), y, sample_weight=w)
    b = LightGBMModel(**kw).fit(X, y, sample_weight=w)
    assert np.array_equal(a.predict(X), b.predict(X))  # binned once or per fit: the same bins here (all rows)
    full = LightGBMModel(n_estimators=30, neg_subsample=1).fit(X, y, sample_weight=w)
    assert not np.array_equal(a.predict(X), full.predict(X))
    from botaclip.sdm.metrics import roc_auc

    assert roc_auc(y, a.predict(X)) > 0.8
    with pytest.raises(ValueError, match="stop_on"):
        LightGBMModel(stop_on="accuracy")


def test_early_stopping_stops_on_auc_or_loss_before_the_last_round():
    X, y, _ = _data(n=1500, seed=2)
    train, held = np.arange(1000), np.arange(1000, 1500)
    for stop_on in ("auc", "loss"):
        model = LightGBMModel(n_estimators=300, early_stopping_rounds=20, stop_on=stop_on)
        model.fit(X[train], y[train], valid=(X[held], y[held], None))
        assert 1 <= model.rounds < 300 and model.booster_.num_trees() == model.rounds


def test_the_background_per_tree_has_a_floor():
    """neg_subsample is raised to min_neg_per_tree negatives per tree; above every negative it is no bagging by
    class at all."""
    X, y, w = _data(n=900)
    n_neg = int(np.sum(y == 0))
    floored = LightGBMModel(n_estimators=20, neg_subsample=0.1, min_neg_per_tree=n_neg // 2).fit(X, y, w)
    half = LightGBMModel(n_estimators=20, neg_subsample=(n_neg // 2) / n_neg, min_neg_per_tree=0).fit(X, y, w)
    tenth = LightGBMModel(n_estimators=20, neg_subsample=0.1, min_neg_per_tree=0).fit(X, y, w)
    assert np.array_equal(floored.predict(X), half.predict(X))
    assert not np.array_equal(floored.predict(X), tenth.predict(X))
    above = LightGBMModel(n_estimators=20, neg_subsample=0.1, min_neg_per_tree=n_neg + 1).fit(X, y, w)
    plain = LightGBMModel(n_estimators=20, neg_subsample=1).fit(X, y, w)
    assert np.array_equal(above.predict(X), plain.predict(X))
    with pytest.raises(InvalidInputError, match="min_neg_per_tree"):
        EvaluationConfig(lightgbm_params="min_neg_per_tree=-5")
    assert dict(EvaluationConfig(lightgbm_params="min_neg_per_tree=0").lightgbm_params)["min_neg_per_tree"] == 0


def test_a_view_of_bins_made_for_more_rows_renumbers_them():
    X, y, w = _data()
    extra = np.random.default_rng(5).normal(size=(300, X.shape[1])).astype(np.float32)
    union = np.vstack([extra[:150], X, extra[150:]])
    rows = np.arange(150, 150 + X.shape[0])
    view = BinnedFeatures(union).view(rows)
    assert view.shape == X.shape
    pick = np.arange(0, X.shape[0], 2)
    a = LightGBMModel(n_estimators=20).fit(view.rows(pick), y[pick], sample_weight=w[pick])
    b = LightGBMModel(n_estimators=20).fit(view.parent.rows(rows[pick]), y[pick], sample_weight=w[pick])
    assert np.array_equal(a.predict(X), b.predict(X))
    with pytest.raises(ValueError, match="outside"):
        view.rows([X.shape[0]])
    with pytest.raises(ValueError, match="twice"):
        BinnedFeatures(union).view([3, 3])


def _blocks_cv(X, y, n_folds=3, **kw):
    from botaclip.sdm.cells import latlng_to_cells

    rng = np.random.default_rng(7)
    cells = latlng_to_cells(45 + rng.random(y.size) * 0.2, 6 + rng.random(y.size) * 0.2, 9)
    folds = spatial_folds(cells, y, n_folds, 6, seed=0)
    return cross_validate(X, y, folds, "lightgbm", "binary", np.zeros(y.size, bool),
                          lightgbm_params="n_estimators=20", **kw)


def test_cross_validation_uses_the_bins_it_is_given():
    """Bins of X itself: the same scores as binning X in the cross-validation. Bins over more rows (other
    species' cells) give other, equally valid, scores; bins of another shape are refused."""
    X, y, _ = _data(n=900, d=8)
    own = _blocks_cv(X, y)
    same = BinnedFeatures(X).view(np.arange(X.shape[0]))
    assert [f.metrics for f in _blocks_cv(X, y, binned=same).folds] == [f.metrics for f in own.folds]
    wider = np.vstack([X, np.random.default_rng(3).normal(size=(2000, 8)).astype(np.float32) * 3])
    other = _blocks_cv(X, y, binned=BinnedFeatures(wider).view(np.arange(X.shape[0])))
    assert [f.metrics for f in other.folds] != [f.metrics for f in own.folds]
    assert np.nanmean(other.values("auc")) > 0.75
    with pytest.raises(ValueError, match="binned features of shape"):
        _blocks_cv(X, y, binned=BinnedFeatures(X[:500]))


def test_compare_bins_each_feature_set_once_per_process(landscape, monkeypatch):
    made = []

    class Counting(BinnedFeatures):
        def __init__(self, X, max_bin=DEFAULT_MAX_BIN, threads=None):
            made.append(X.shape)
            super().__init__(X, max_bin, threads)

    monkeypatch.setattr(importlib.import_module("botaclip.sdm.compare"), "BinnedFeatures", Counting)
    compare(landscape["store"], landscape["root"] / "plots.csv", ["emb", "good"], species=SPECIES,
            models=["lightgbm"], folds=3, jobs=1)
    # One per feature set for both species; 'good' without its constant column 'flat'.
    assert sorted(made) == [(600, 3), (600, 8)]
    made.clear()
    compare(landscape["store"], landscape["root"] / "plots.csv", ["emb"], species=SPECIES, models=["lightgbm"],
            folds=3, jobs=1, bin_once=False)
    assert made == []


def test_fit_scoring_predicts_the_held_out_rows_as_predict_does():
    """The held-out rows' suitability read from LightGBM's running scores equals predicting their raw values
    (missing ones included), whatever their order; only binary fits on rows of one binned matrix qualify."""
    X, y, w = _data(n=900)
    binned = BinnedFeatures(X)
    rng = np.random.default_rng(4)
    order = rng.permutation(X.shape[0])
    train, test = order[:600], order[600:]
    kw = dict(n_estimators=40, neg_subsample=0.5, min_neg_per_tree=0)
    scored = LightGBMModel(**kw)
    held_out = scored.fit_scoring(binned.rows(train), y[train], w[train], scored=binned.rows(test))
    fitted = LightGBMModel(**kw).fit(binned.rows(train), y[train], sample_weight=w[train])
    assert np.allclose(held_out, fitted.predict(X[test]), rtol=0, atol=1e-12)
    assert np.allclose(scored.predict(X[test]), held_out, rtol=0, atol=1e-12)  # the fitted model is usable
    assert 0.0 < held_out.min() and held_out.max() < 1.0
    with pytest.raises(ValueError, match="one binned matrix"):
        LightGBMModel(**kw).fit_scoring(binned.rows(train), y[train], scored=BinnedFeatures(X).rows(test))
    with pytest.raises(ValueError, match="binary tasks only"):
        LightGBMModel(task="regression").fit_scoring(binned.rows(train), y[train], scored=binned.rows(test))


def test_fit_scoring_scores_several_parts_in_the_order_given():
    """Held-out rows given in parts (one per fold) are scored as one set of rows would be, each part's LightGBM
    Dataset made once for every fit that scores it."""
    from botaclip.sdm.binning import BinnedRows

    X, y, w = _data(n=900)
    binned = BinnedFeatures(X)
    train, a, b = np.arange(0, 600), np.arange(750, 900)[::-1], np.arange(600, 750)
    kw = dict(n_estimators=30, neg_subsample=0.5, min_neg_per_tree=0)
    whole = LightGBMModel(**kw).fit_scoring(binned.rows(train), y[train], w[train],
                                            scored=binned.rows(np.concatenate([a, b])))
    part_a, part_b = binned.rows(a), binned.rows(b)
    made = []
    original = BinnedRows.dataset

    def counting(self, label, weight=None):
        made.append(self.shape[0])
        return original(self, label, weight)

    BinnedRows.dataset = counting
    try:
        parts = LightGBMModel(**kw).fit_scoring(binned.rows(train), y[train], w[train], scored=[part_a, part_b])
        again = LightGBMModel(**kw).fit_scoring(binned.rows(train), y[train], w[train], scored=[part_b])
    finally:
        BinnedRows.dataset = original
    assert np.array_equal(parts, whole) and np.array_equal(again, whole[a.size:])
    assert made == [600, 150, 150, 600]  # the second fit reuses part_b's held-out Dataset
    with pytest.raises(ValueError, match="one binned matrix"):
        LightGBMModel(**kw).fit_scoring(binned.rows(train), y[train], scored=[])


def test_cross_validation_copies_each_test_fold_out_of_the_bins_once(monkeypatch):
    """5 outer folds: 10 shared inner fits and 5 outer fits each copy their training rows, while the test blocks
    of each outer fold are copied once, for its outer fit and the inner fits that leave it out (the same scores
    as copying them for every fit)."""
    from botaclip.sdm.binning import BinnedRows
    from botaclip.sdm.cells import latlng_to_cells

    X, y, _ = _data(n=1500, seed=3)
    rng = np.random.default_rng(7)
    folds = spatial_folds(latlng_to_cells(45 + rng.random(y.size) * 0.3, 6 + rng.random(y.size) * 0.3, 9), y, 5, 6,
                          seed=0)
    made = []
    original = BinnedRows.dataset

    def counting(self, label, weight=None):
        made.append(not np.any(label))  # held-out rows carry no labels
        return original(self, label, weight)

    monkeypatch.setattr(BinnedRows, "dataset", counting)
    cv = cross_validate(X, y, folds, "lightgbm", lightgbm_params="n_estimators=20", binned=BinnedFeatures(X))
    assert made.count(True) == 5 and made.count(False) == 15
    fresh = []
    monkeypatch.setattr(BinnedRows, "held_out",
                        lambda self: fresh.append(1) or original(self, np.zeros(len(self.index))))
    again = cross_validate(X, y, folds, "lightgbm", lightgbm_params="n_estimators=20", binned=BinnedFeatures(X))
    assert len(fresh) == 25 and np.array_equal(cv.oof, again.oof)
    assert [r.threshold for r in cv.folds] == [r.threshold for r in again.folds]


def test_bins_written_and_read_back_train_the_same_model(tmp_path):
    """The driver bins once and hands the bins to its workers as files (FeatureTables.save_derived)."""
    from botaclip.sdm.engines import FeatureTables

    X, y, w = _data()
    tables = FeatureTables({"emb": (X, [str(i) for i in range(X.shape[1])])})
    made = tables.once(("bins", "emb"), lambda: BinnedFeatures(X, threads=2))
    tables.once(("not written",), lambda: np.arange(3))
    saved = tables.save_derived(tmp_path)
    assert [key for key, *_ in saved] == [("bins", "emb")]
    elsewhere = FeatureTables(dict(tables))
    elsewhere.load_derived(saved)
    loaded = elsewhere.once(("bins", "emb"), lambda: pytest.fail("the loaded bins should be used"))
    assert loaded.shape == made.shape and loaded.max_bin == made.max_bin
    rows = np.arange(0, X.shape[0], 2)
    a = LightGBMModel(n_estimators=30).fit(made.rows(rows), y[rows], sample_weight=w[rows])
    b = LightGBMModel(n_estimators=30).fit(loaded.rows(rows), y[rows], sample_weight=w[rows])
    assert np.array_equal(a.predict(X), b.predict(X))


@pytest.mark.parametrize("extra_pcs", [None, 3])
def test_cross_validation_reads_held_out_scores_as_predictions(monkeypatch, extra_pcs):
    """Inner and outer fits on binned rows score their held-out rows from LightGBM's running scores: the same
    out-of-fold predictions, thresholds and metrics as predicting the raw features (added components too)."""
    from botaclip.sdm.evaluate import _FoldFitter

    X, y, _ = _data(n=900, d=8)
    binned = BinnedFeatures(X).view(np.arange(X.shape[0]))
    fast = _blocks_cv(X, y, binned=binned, extra_pcs=extra_pcs)
    monkeypatch.setattr(_FoldFitter, "_scores_binned", lambda self, rows: False)
    slow = _blocks_cv(X, y, binned=binned, extra_pcs=extra_pcs)
    assert np.allclose(fast.oof, slow.oof, rtol=0, atol=1e-9, equal_nan=True)
    assert [f.threshold for f in fast.folds] == pytest.approx([f.threshold for f in slow.folds], abs=1e-9)
    assert fast.values("tss") == pytest.approx(slow.values("tss"), abs=1e-9)


def test_projected_inputs_are_not_made_when_every_fit_scores_its_binned_rows(monkeypatch):
    """With added components (``extra_pcs``), fits that score their held-out rows from the bins never read the
    projected matrix (a copy of every sample's features), and the components are computed once per projection;
    fits that predict raw rows read the projected matrix, the components still computed once. (With fewer than
    4 outer folds the inner CV deals the training part's blocks anew and reads the matrix's rows.)"""
    from botaclip.sdm.models import Projection

    calls = {"components": 0, "transform": 0}
    components, transform = Projection.components, Projection.transform

    def counting(name, method):
        def wrapped(self, *args, **kwargs):
            calls[name] += 1
            return method(self, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(Projection, "components", counting("components", components))
    monkeypatch.setattr(Projection, "transform", counting("transform", transform))
    X, y, _ = _data(n=900, d=8)
    binned = BinnedFeatures(X).view(np.arange(X.shape[0]))
    _blocks_cv(X, y, n_folds=5, binned=binned, extra_pcs=3)  # inner folds: the other outer folds
    assert calls == {"components": 1, "transform": 0}
    calls.update(components=0, transform=0)
    _blocks_cv(X, y, n_folds=5, extra_pcs=3, early_stopping=True)  # early stopping predicts raw rows
    assert calls["transform"] == 1 and calls["components"] == 1
