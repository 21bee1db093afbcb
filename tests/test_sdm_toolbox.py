"""Maxent, ensembles, permutation importance, response curves and the area of applicability, on the small real
stores of tests/conftest.py."""

from __future__ import annotations

import json
import sys
import zipfile

import h3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_store_safety import _one_line_error

from botaclip.cli import cli
from botaclip.errors import BotaclipError, InvalidInputError, MissingDependencyError
from botaclip.sdm import CompareConfig, FitConfig, compare, fit_species, load_model, predict
from botaclip.sdm.aoa import fit_aoa, nearest_distance, outer_quartile_threshold
from botaclip.sdm.cells import cells_to_latlng
from botaclip.sdm.ensemble import RankScale, member_weights
from botaclip.store import Store


def test_compare_ensemble_importance_and_maxent(landscape, tmp_path):
    res = compare(landscape["store"], landscape["root"] / "plots.csv", ["good", "emb,noise", "emb"],
                  species=["Alpha prima"], models="logistic,maxent", ensemble="weighted", importance=True,
                  folds=3, jobs=1, out=tmp_path / "cmp")
    assert res.models == ["logistic", "maxent", "ensemble-weighted"]
    means = res.means()
    assert "emb" not in res.importance["Alpha prima"]  # one group: nothing to compare, only a note
    assert "emb: no permutation importance (one feature group: emb)" in res.species[0].notes
    for fs in ("good", "emb+noise"):
        for model in res.models:
            assert means["auc"][f"{fs} | {model}"]["mean"] > 0.75
    imp = res.importance["Alpha prima"]
    # scalar covariates one by one; an embedding set is one group
    assert set(imp["good"]["logistic"]) == {"good.env", "good.env2", "good.wiggle"}
    assert set(imp["emb+noise"]["maxent"]) == {"emb", "noise.a", "noise.b", "noise.c"}
    assert list(imp["good"]["logistic"])[0] in ("good.env", "good.env2")
    assert imp["emb+noise"]["logistic"]["emb"]["mean"] > 0.1 > imp["emb+noise"]["logistic"]["noise.a"]["mean"]
    doc = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert "ensemble-weighted" in doc["results"]["Alpha prima"]["good"]
    assert doc["importance"]["Alpha prima"]["good"]["maxent"]["good.env"]["folds"]
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Permutation importance" in md and "| emb+noise | logistic | emb |" in md
    assert (tmp_path / "cmp" / "importance.png").stat().st_size > 10_000




def test_fit_ensemble_saves_and_predicts_with_aoa(landscape, tmp_path):
    out = tmp_path / "ens"
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="good,emb",
                      models="logistic,maxent,rf", ensemble="weighted", importance=True, response_curves=True,
                      folds=3, out=out, predictions=False)
    assert res.model == "ensemble-weighted" and res.summary()["auc"]["mean"] > 0.8
    assert set(res.importance) == {"logistic", "maxent", "rf"}
    assert set(res.importance["rf"]) == {"good.env", "good.env2", "good.wiggle", "emb"}
    assert (out / "importance.png").stat().st_size > 10_000 and (out / "response.png").stat().st_size > 10_000
    assert any("response curves skipped for embedding set(s) emb" in n for n in res.notes)
    saved = load_model(out)
    assert saved.estimator.name == "ensemble" and saved.estimator.member_names == ["logistic", "maxent", "rf"]
    assert saved.aoa is not None and saved.aoa.weights.size == 3 + 8
    # weights come from the members' out-of-fold AUC: all three learn the gradient, none is weightless
    assert (saved.estimator.weights > 0.2).all()
    # The noise covariate carries no importance, so it gets no weight in the area of applicability.
    assert saved.aoa.weights[2] == 0 and saved.aoa.weights[0] > 0
    r = predict(out, landscape["store"], tmp_path / "ens.parquet")
    t = pq.read_table(tmp_path / "ens.parquet").to_pandas()
    assert list(t.columns) == ["h3", "suitability", "di", "inside_aoa"] and len(t) == r.n_cells
    assert (t["inside_aoa"] == (t["di"] <= saved.aoa.threshold)).all() and r.extra["inside_aoa"] > 0.9
    # The saved ensemble predicts what the fitted one did (fit wrote no table here, so compare with members).
    X = Store.open(landscape["store"], read_only=True)
    h, Xg, _ = X.features_numpy("good", cells=t["h3"].to_numpy(np.uint64)[:50])
    assert h.size == 50


def test_maxent_persists_as_arrays_and_refuses_anything_else(landscape, tmp_path):
    out = tmp_path / "mx"
    res = fit_species(landscape["store"], landscape["root"] / "butterflies.csv", "Papilio alpinus",
                      features="good", model="maxent", maxent_features="lqh", maxent_beta=1.0, folds=3,
                      background=500, out=out, predictions="sdm_papilio_mx", write_map=False)
    assert res.model == "maxent" and res.summary()["auc"]["mean"] > 0.7
    doc = json.loads((out / "model.json").read_text())
    assert doc["estimator"]["feature_types"] == ["linear", "quadratic", "hinge"]
    assert doc["estimator"]["params"] == {"features": "lqh", "beta": 1.0}
    assert sorted(p.name for p in out.iterdir()) == ["aoa.npz", "arrays.npz", "cv.json", "cv_folds.csv",
                                                     "model.json"]
    with np.load(out / "arrays.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    # The loaded model predicts what the fitted one wrote into the store.
    store = Store.open(landscape["store"], read_only=True)
    h, X, _ = store.features_numpy("sdm_papilio_mx")
    predict(out, landscape["store"], tmp_path / "mx.parquet")
    t = pq.read_table(tmp_path / "mx.parquet").to_pandas().set_index("h3").loc[h]
    np.testing.assert_allclose(t["suitability"], X[:, 0], atol=1e-6)
    # An unexpected array (or one missing) is refused, never interpreted.
    with zipfile.ZipFile(out / "arrays.npz") as z:
        arrays = {n[:-4]: np.load(z.open(n)) for n in z.namelist()}
    np.savez(out / "arrays.npz", **arrays, payload=np.zeros(3))
    with pytest.raises(InvalidInputError, match="unexpected \\['payload'\\]"):
        load_model(out)
    np.savez(out / "arrays.npz", **{k: v for k, v in arrays.items() if k != "maxent_betas"})
    with pytest.raises(InvalidInputError, match="missing \\['maxent_betas'\\]"):
        load_model(out)
    np.savez(out / "arrays.npz", **arrays | {"maxent_hinge_knots": arrays["maxent_hinge_knots"][:, :1]})
    with pytest.raises(InvalidInputError, match="hinge knots have shape"):
        load_model(out)
    np.savez(out / "arrays.npz", **arrays | {"maxent_linear_scale_": np.ones(7)})
    with pytest.raises(InvalidInputError, match="do not fit 3 covariates"):
        load_model(out)
    np.savez(out / "arrays.npz", **arrays | {"maxent_betas": np.array([object()], dtype=object)})
    with pytest.raises(BotaclipError, match="holds Python objects"):
        load_model(out)


def test_projected_maxent_round_trips(tmp_path):
    from botaclip.sdm.models import make_model
    from botaclip.sdm.persist import SavedModel, save_model

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 12)).astype(np.float32)
    y = (X[:, :6].sum(axis=1) + rng.normal(size=400) > 1.5).astype(float)
    est = make_model("maxent", pca=3, pca_columns=np.arange(10), features="lqh").fit(X, y)
    save_model(tmp_path / "m", SavedModel(est, "A a", "presence-only", [{"name": "f"}], [f"c{i}" for i in range(12)],
                                          list(range(12)), 9))
    loaded = load_model(tmp_path / "m").estimator
    assert loaded.inner.name == "maxent" and loaded.projection.components_.shape == (3, 10)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_maxent_without_the_extra_names_it(cli_runner, fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "elapid", None)
    monkeypatch.setitem(sys.modules, "elapid.models", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'botaclip\[maxent\]'"):
        FitConfig(model="maxent")
    with pytest.raises(MissingDependencyError, match="botaclip\\[maxent\\]"):
        CompareConfig(models="lightgbm,maxent")
    store_path, _ = fitted
    _one_line_error(cli_runner, ["sdm", "fit", "--store", store_path, "--occurrences", store_path.parent / "po.csv",
                                 "--species", "P a", "--features", "emb", "--model", "maxent"], "botaclip[maxent]")


def test_bad_models_ensemble_rules_and_importance_are_one_line(cli_runner, fitted, tmp_path):
    store_path, _ = fitted
    base = ["--store", store_path, "--occurrences", store_path.parent / "po.csv", "--species", "P a"]
    cmp = ["sdm", "compare", *base, "--features", "emb", "--out", tmp_path / "c"]
    _one_line_error(cli_runner, [*cmp, "--models", "lightgbm,gam"], "--models must be among", "'gam'")
    _one_line_error(cli_runner, [*cmp, "--models", "logistic,rf", "--ensemble", "median"], "--ensemble", "'median'")
    _one_line_error(cli_runner, [*cmp, "--models", "logistic", "--ensemble", "mean"], "at least two models")
    fit = ["sdm", "fit", *base, "--features", "emb", "--out", tmp_path / "m"]
    _one_line_error(cli_runner, [*fit, "--model", "gam"], "--model", "'gam'")
    _one_line_error(cli_runner, [*fit, "--models", "rf,logistic"], "--models lists the members", "--ensemble")
    _one_line_error(cli_runner, [*fit, "--model", "logistic", "--importance"],
                    "--importance needs a model with at least two features", "has one (emb)")
    _one_line_error(cli_runner, [*cmp, "--models", "logistic", "--importance"], "at least two features")
    # with several feature sets compared, one of a single group is only noted
    _one_line_error(cli_runner, [*fit, "--model", "maxent", "--maxent-features", "lqx"], "--maxent-features", "'lqx'")
    with pytest.raises(InvalidInputError, match="ensemble must be one of mean, weighted"):
        CompareConfig(models="rf,logistic", ensemble="median")
    assert not (tmp_path / "m").exists() and not (tmp_path / "c").exists()


def test_ensembles_and_maxent_refuse_abundance(landscape, tmp_path):
    with pytest.raises(InvalidInputError, match="abundance data are not supported"):
        compare(landscape["store"], landscape["root"] / "soil.csv", ["good"], species=["Collembola"],
                models="rf,logistic", ensemble="mean", folds=3, jobs=1)
    with pytest.raises(InvalidInputError, match="maxent models presences"):
        fit_species(landscape["store"], landscape["root"] / "soil.csv", "Collembola", features="good",
                    model="maxent", folds=3, predictions=False)


def test_rank_scale_and_member_weights():
    scale = RankScale.fit(np.array([0.1, 0.2, 0.2, 0.4, 0.9]))
    np.testing.assert_allclose(scale(np.array([0.0, 0.1, 0.2, 0.9, 2.0])), [0.0, 0.1, 0.4, 0.9, 1.0])
    assert scale(np.array([0.3]))[0] == pytest.approx(0.6)  # halfway between 0.2 (0.4) and 0.4 (0.7)
    assert RankScale.fit(np.full(7, 0.3))(np.array([0.1, 0.3, 0.5])).tolist() == [0.0, 0.5, 1.0]
    y = np.array([0, 0, 0, 1, 1, 1], dtype=float)
    good, useless, reversed_ = np.array([.1, .2, .3, .7, .8, .9]), np.full(6, .5), np.array([.9, .8, .7, .3, .2, .1])
    np.testing.assert_allclose(member_weights("weighted", y, [good, useless, reversed_]), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(member_weights("mean", y, [good, useless]), [1, 1])
    np.testing.assert_allclose(member_weights("weighted", y, [useless, useless]), [1, 1])


def test_dissimilarity_index_by_hand():
    T = np.array([[0.0], [1.0], [3.0], [4.0]], dtype=np.float32)
    fold = np.array([0, 0, 1, 1])
    ref = fit_aoa(T, fold)
    # standardised: mean 2, sd sqrt(2.5); nearest neighbours 1, 1, 1, 1 (raw) -> d̄ = 1 / sqrt(2.5)
    assert ref.mean_nn == pytest.approx(1 / np.sqrt(2.5), rel=1e-6)
    # cross-validated: cell 1's nearest in the other fold is 3 (distance 2), cell 0's is 3 (distance 3)
    np.testing.assert_allclose(ref.train_di, [3, 2, 2, 3], rtol=1e-6)
    np.testing.assert_allclose(ref.dissimilarity(np.array([[2.0], [4.0], [10.0]])), [1, 0, 6], rtol=1e-6)
    v = np.array([1, 2, 3, 4, 5, 6, 7, 8, 30.0])
    assert outer_quartile_threshold(v) == 8.0  # Q3 7, IQR 4: the whisker ends at the largest value <= 13


def test_nearest_distance_chunks_and_high_dimensions_agree():
    rng = np.random.default_rng(0)
    T = rng.normal(size=(300, 40)).astype(np.float32)
    Q = rng.normal(size=(9000, 40)).astype(np.float32)  # more than one chunk
    brute = np.sqrt(((Q[:, None, :] - T[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest_distance(Q, T), brute, rtol=1e-4)
    low = nearest_distance(Q[:, :3], T[:, :3])  # k-d tree
    np.testing.assert_allclose(low, np.sqrt(((Q[:, None, :3] - T[None, :, :3]) ** 2).sum(-1)).min(1), rtol=1e-5)
    self_nn = nearest_distance(T, T, exclude_self=True)
    assert (self_nn > 0).all()


@pytest.fixture
def two_regions(tmp_path):
    """A covariate store over two distant areas: the species is sampled in the first only, whose covariates
    (around 0) differ from the second's (around 10)."""
    rng = np.random.default_rng(3)
    a = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(45.2, 6.1, 9), 14)), np.uint64)
    b = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(45.6, 6.8, 9), 8)), np.uint64)
    cells = np.concatenate([a, b])
    env = np.concatenate([rng.normal(size=a.size), rng.normal(10, 1, size=b.size)])
    store = Store.create(tmp_path / "s.store", resolution=9)
    with store.writer("cov", kind="covariates", columns=["env", "other"]) as w:
        w.write(cells, columns={"env": env, "other": rng.normal(size=cells.size)})
    lat, lng = cells_to_latlng(a)
    p = 1 / (1 + np.exp(-3 * env[: a.size]))
    rows = [(f"r{i}", lat[i], lng[i], "Sp a" if rng.random() < p[i] else "Other") for i in range(a.size)
            if i % 3]  # two cells in three are plots; the others are predicted, not trained on
    pd.DataFrame(rows, columns=["releve_id", "decimalLatitude", "decimalLongitude", "species"]).to_csv(
        tmp_path / "plots.csv", index=False)
    return store.path, tmp_path / "plots.csv", a, b


def test_predict_flags_cells_outside_the_area_of_applicability(two_regions, tmp_path, cli_runner):
    store, plots, a, b = two_regions
    fit_species(store, plots, "Sp a", features="cov", model="logistic", folds=3, out=tmp_path / "m",
                predictions=False, write_map=False, response_curves=True)
    r = predict(tmp_path / "m", store, tmp_path / "p.parquet")
    t = pq.read_table(tmp_path / "p.parquet").to_pandas().set_index("h3")
    assert not t.loc[b, "inside_aoa"].any() and t.loc[b, "di"].min() > 3
    assert t.loc[a, "inside_aoa"].mean() > 0.9 and t.loc[a, "di"].max() > 0  # unsampled cells of the area
    assert r.extra["inside_aoa"] == pytest.approx(t["inside_aoa"].mean(), abs=1e-4)
    assert (tmp_path / "m" / "response.png").stat().st_size > 5_000
    import geopandas as gpd

    predict(tmp_path / "m", store, tmp_path / "p.gpkg")
    g = gpd.read_file(tmp_path / "p.gpkg")
    assert {"di", "inside_aoa"} <= set(g.columns) and g["inside_aoa"].sum() == t["inside_aoa"].sum()
    res = cli_runner.invoke(cli, ["sdm", "predict", "--model", str(tmp_path / "m"), "--store", str(store), "--out",
                             str(tmp_path / "p.png")])
    assert res.exit_code == 0 and "inside_aoa" in res.output and (tmp_path / "p.png").stat().st_size > 10_000
    predict(tmp_path / "m", store, tmp_path / "q.parquet", aoa=False)
    assert pq.read_table(tmp_path / "q.parquet").column_names == ["h3", "suitability"]


def test_response_curves_skip_embeddings_with_a_reason(fitted, tmp_path):
    store_path, _ = fitted
    res = fit_species(store_path, store_path.parent / "po.csv", "P a", features="emb", model="logistic", folds=3,
                      out=tmp_path / "m", predictions=False, write_map=False, response_curves=True)
    assert any("response curves skipped for embedding set(s) emb" in n for n in res.notes)
    assert any("no scalar covariate" in n for n in res.notes) and not (tmp_path / "m" / "response.png").exists()


def test_ensemble_never_sees_the_labels_of_its_test_fold():
    """Shuffling the labels inside test fold 0 changes nothing the ensemble predicts for fold 0 (its ranks,
    weights and threshold come from the other folds only)."""
    from botaclip.sdm.ensemble import MemberRecorder, ensemble_cv
    from botaclip.sdm.evaluate import cross_validate
    from botaclip.sdm.folds import spatial_folds

    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(45.2, 6.1, 9), 14)), np.uint64)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(cells.size, 4)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=cells.size) > 0.5).astype(float)
    folds = spatial_folds(cells, y, n_folds=3, block_res=7)
    test = folds.split(0)[1]
    y2 = y.copy()
    y2[test] = rng.permutation(y[test])
    oofs, thresholds = [], []
    for labels in (y, y2):
        members = {}
        for model in ("logistic", "maxent"):
            rec = MemberRecorder()
            members[model] = (cross_validate(X, labels, folds, model, on_fold=rec, maxent_features="l"), rec)
        ens = ensemble_cv("weighted", members, labels, folds, "maxtss")
        oofs.append(ens.oof[test])
        thresholds.append(ens.folds[0].threshold)
    np.testing.assert_array_equal(oofs[0], oofs[1])
    assert thresholds[0] == thresholds[1]


def test_cli_fit_ensemble_prints_importance_aoa_and_figures(landscape, tmp_path, cli_runner):
    out = tmp_path / "cli_ens"
    r = cli_runner.invoke(cli, ["sdm", "fit", "--store", str(landscape["store"]), "--occurrences",
                                str(landscape["root"] / "plots.csv"), "--species", "Beta secunda", "--features",
                                "good", "--models", "logistic,maxent", "--ensemble", "mean", "--importance",
                                "--response-curves", "--folds", "3", "--no-predictions", "--no-map", "--out",
                                str(out)])
    assert r.exit_code == 0, r.output
    assert "ensemble-mean on good" in r.output
    line = next(x for x in r.output.splitlines() if x.startswith("permutation importance (maxent"))
    assert {"good.env", "good.env2", "good.wiggle"} <= set(line.replace(",", "").split())
    assert "area of applicability: DI threshold" in r.output
    assert f"figure: {out / 'importance.png'}" in r.output and f"figure: {out / 'response.png'}" in r.output
    doc = json.loads((out / "cv.json").read_text())
    assert doc["model"] == "ensemble-mean" and set(doc["importance"]) == {"logistic", "maxent"}
    assert 0 < doc["area_of_applicability"]["train_inside"] <= 1
