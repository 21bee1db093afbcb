"""The faster random forest and logistic fits (issue 17): same answers as the slower ones, saved and loaded
models predicting identically, and the options that choose them."""

import numpy as np
import pytest
from cli_checks import one_line_error

from botaclip.errors import InvalidInputError
from botaclip.sdm.config import EvaluationConfig
from botaclip.sdm.evaluate import cross_validate
from botaclip.sdm.folds import spatial_folds
from botaclip.sdm.metrics import roc_auc
from botaclip.sdm.models import make_model
from botaclip.sdm.persist import SavedModel, load_model, save_model


def _embedding_like(n=900, d=96, seed=0):
    """Strongly correlated columns (a few directions plus noise, as embeddings are), a weak linear signal."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    X = latent @ rng.normal(size=(6, d)) + 0.5 * rng.normal(size=(n, d))
    y = (latent[:, 0] + rng.normal(size=n) > 0.7).astype(float)
    return X.astype(np.float32), y


def test_logistic_solvers_and_warm_start_reach_the_same_optimum():
    X, y = _embedding_like()
    w = np.where(y > 0, 1.0, 0.5)
    exact = make_model("logistic", solver="lbfgs", tol=1e-10, warm_start=False).fit(X, y, sample_weight=w)
    cold = make_model("logistic").fit(X, y, sample_weight=w)
    # Started from a model of other rows (another fold's), as cross-validation does.
    other = make_model("logistic").fit(X[::2], y[::2])
    warm = make_model("logistic").warm_start_from(other).fit(X, y, sample_weight=w)
    assert cold.params["solver"] == "newton-cholesky"
    for est in (cold, warm):
        np.testing.assert_allclose(est.coef_, exact.coef_, atol=1e-3)
        np.testing.assert_allclose(est.predict(X), exact.predict(X), atol=1e-4)
    assert warm.n_iter_ <= cold.n_iter_
    # An lbfgs fit from the other model's optimum needs fewer steps than from zero.
    lb_cold = make_model("logistic", solver="lbfgs", tol=1e-6, warm_start=False).fit(X, y, sample_weight=w)
    lb_warm = make_model("logistic", solver="lbfgs", tol=1e-6).warm_start_from(other).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(lb_warm.predict(X), lb_cold.predict(X), atol=1e-3)
    assert lb_warm.n_iter_ < lb_cold.n_iter_
    # warm_start=False ignores the offer; a model of other columns is ignored.
    assert make_model("logistic", warm_start=False).warm_start_from(other)._init is None
    narrow = make_model("logistic").fit(X[:, :10], y)
    np.testing.assert_allclose(make_model("logistic").warm_start_from(narrow).fit(X, y).coef_,
                               make_model("logistic").fit(X, y).coef_, atol=1e-6)


def test_cross_validation_with_warm_starts_scores_as_cold_fits():
    rng = np.random.default_rng(3)
    import h3

    centre = h3.latlng_to_cell(45.2, 6.1, 9)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(centre, 14)), dtype=np.uint64)
    X, y = _embedding_like(cells.size, seed=4)
    folds = spatial_folds(cells, y, n_folds=3, block_res=7, seed=rng.integers(10))
    res = {}
    for name, params in (("cold", {"warm_start": False}), ("warm", {}), ("old", {"solver": "lbfgs",
                                                                                   "warm_start": False})):
        cv = cross_validate(X, y, folds, "logistic", "binary", evaluation=EvaluationConfig(logistic_params=params))
        res[name] = cv
    # Within the solver's tolerance: the start (an inner fit on a third of the rows here) moves where it stops.
    np.testing.assert_allclose(res["warm"].oof, res["cold"].oof, atol=1e-3)
    np.testing.assert_allclose(res["old"].oof, res["cold"].oof, atol=5e-3)
    for k in range(3):
        # Inner fits start cold (an earlier model saw their held-out rows): the thresholds are those of cold fits.
        assert res["warm"].folds[k].threshold == res["cold"].folds[k].threshold


@pytest.mark.parametrize("params", [{"max_samples": 0.5}, {"engine": "lightgbm"},
                                    {"engine": "lightgbm", "max_samples": 0.3}])
def test_random_forest_variants_learn_and_roundtrip_exactly(tmp_path, params):
    X, y = _embedding_like(600, 40, seed=1)
    X[::13, 3] = np.nan
    est = make_model("rf", n_estimators=60, **params).fit(X, y)
    p = est.predict(X[300:])
    assert p.shape == (300,) and (p >= 0).all() and (p <= 1).all()
    assert roc_auc(y[300:], p) > 0.7
    ref = make_model("rf", n_estimators=60).fit(X[:300], y[:300])
    fast = make_model("rf", n_estimators=60, **params).fit(X[:300], y[:300])
    # Out of sample, the variant ranks as well as the exact forest (within noise of 300 cells).
    assert roc_auc(y[300:], fast.predict(X[300:])) > roc_auc(y[300:], ref.predict(X[300:])) - 0.05
    save_model(tmp_path / "m", SavedModel(est, "A a", "presence-absence", [{"name": "f", "provenance_id": "x"}],
                                          [f"c{i}" for i in range(40)], list(range(40)), 9, 0.5))
    loaded = load_model(tmp_path / "m")
    assert loaded.estimator.params == est.params
    np.testing.assert_array_equal(loaded.estimator.predict(X[300:]), p)
    reg = make_model("rf", "regression", n_estimators=40, **params).fit(X, 3 * y)
    assert np.corrcoef(reg.predict(X), y)[0, 1] > 0.5


def test_model_options_parsed_with_one_line_errors():
    ev = EvaluationConfig(rf_params="max_samples=0.5,engine=lightgbm,n_estimators=200",
                          logistic_params="solver=lbfgs,warm_start=false,C=0.5")
    assert ev.model_options("rf") == {"engine": "lightgbm", "max_samples": 0.5, "n_estimators": 200}
    assert ev.model_options("logistic") == {"C": 0.5, "solver": "lbfgs", "warm_start": False}
    for bad, match in [({"rf_params": "max_samples=1.5"}, "max_samples must be a positive float at most 1"),
                       ({"rf_params": "engine=xgboost"}, "engine must be one of sklearn, lightgbm"),
                       ({"rf_params": "depth=3"}, "names one of"),
                       ({"logistic_params": "solver"}, "KEY=VALUE"),
                       ({"logistic_params": "warm_start=maybe"}, "true or false")]:
        with pytest.raises(InvalidInputError, match=match):
            EvaluationConfig(**bad)


def test_cli_takes_model_params(landscape, cli_runner, tmp_path):
    from botaclip.cli import cli

    res = cli_runner.invoke(cli, ["sdm", "compare", "--store", str(landscape["store"]), "--occurrences",
                                  str(landscape["root"] / "plots.csv"), "--features", "good", "--models",
                                   "rf,logistic", "--species", "Alpha prima", "--folds", "3", "--rf-params",
                                   "max_samples=0.5,n_estimators=30", "--logistic-params", "solver=lbfgs",
                                   "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    one_line_error(cli_runner, ["sdm", "compare", "--store", str(landscape["store"]), "--occurrences",
                                str(landscape["root"] / "plots.csv"), "--features", "good", "--species", "Alpha prima",
                                "--rf-params", "max_samples=2"], "--rf-params")
