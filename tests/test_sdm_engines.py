"""Speed without changing results: models on principal components (fitted on the samples' features, never on
labels), species in worker processes and on Ray, each giving the same report as one process."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from botaclip.errors import InvalidInputError
from botaclip.sdm import compare, fit_species, load_model, predict
from botaclip.sdm.models import LightGBMModel, Projection, make_model

SPECIES = ["Alpha prima", "Beta secunda"]


def _rows(result):
    """Every row, with undefined values as None (nan never equals nan)."""
    return [[r.species, r.features, r.model, r.metric, _plain(r.values)] for r in result.rows]


def _plain(values):
    return [None if v is None or v != v else round(float(v), 12) for v in values]


def test_projection_is_fitted_on_training_data_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 20)).astype(np.float32)
    X[:, 0] *= 10  # the leading direction
    p = Projection(3).fit(X[:200])
    Z = p.transform(X)
    assert Z.shape == (300, 3) and np.allclose(Z[:200].mean(axis=0), 0, atol=1e-4)
    assert abs(p.components_[0, 0]) > 0.99
    again = Projection(3).fit(X[:200])  # deterministic
    assert np.allclose(again.transform(X), Z)
    other = Projection(3).fit(X[100:])
    assert not np.allclose(other.mean_, p.mean_)  # it depends on what it was fitted on


def test_projection_leaves_scalar_covariates_as_they_are(landscape, tmp_path):
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=(100, 6)), 1000 * rng.normal(size=(100, 2))]).astype(np.float32)
    p = Projection(2, columns=np.arange(6)).fit(X)
    Z = p.transform(X)
    assert Z.shape == (100, 4) and np.array_equal(Z[:, 2:], X[:, 6:])
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb,good",
                      model="logistic", folds=3, pca=3, out=tmp_path / "m", predictions=False, write_map=False)
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as arrays:
        assert arrays["projection_columns"].tolist() == list(range(8))  # emb's 8 dimensions, not good's columns
        assert int(arrays["projection_n_features"]) == res.n_features == 8 + 3


def test_pca_model_saves_and_predicts_the_same(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                      model="lightgbm", folds=3, pca=3, out=tmp_path / "m", predictions=False, write_map=False)
    assert res.summary()["auc"]["mean"] > 0.8
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    assert doc["estimator"]["projection"] == 3 and doc["estimator"]["n_input_features"] == 8
    saved = load_model(tmp_path / "m")
    X = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    original = make_model("lightgbm", pca=3)
    assert original.name == saved.estimator.name == "lightgbm"
    assert saved.estimator.predict(X).shape == (50,)
    out = predict(tmp_path / "m", landscape["store"], tmp_path / "p.parquet")
    assert out.n_cells == landscape["cells"].size
    with pytest.raises(InvalidInputError) as exc:
        fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb", pca=-1)
    assert exc.value.params == ["pca"]


def test_worker_processes_give_the_same_comparison(landscape, tmp_path):
    kw = dict(species=SPECIES, models=["logistic", "lightgbm"], folds=3, pca=4)
    one = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb", "good"], jobs=1, **kw)
    messages = []
    two = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb", "good"], jobs=2,
                  progress=messages.append, out=tmp_path / "cmp", **kw)
    assert _rows(one) == _rows(two)
    assert [s.species for s in two.species] == SPECIES
    assert any("done" in m for m in messages)
    assert (tmp_path / "cmp" / "report.json").exists()


def test_unknown_engine_is_refused(landscape):
    with pytest.raises(InvalidInputError) as exc:
        compare(landscape["store"], landscape["root"] / "plots.csv", ["emb"], species=SPECIES, engine="spark")
    assert exc.value.params == ["engine"]


ray = pytest.importorskip("ray")  # part of the dev extra: installed wherever the suite runs

DRIVER = """
import json, sys
import ray
from botaclip.sdm import compare
cfg = json.loads(sys.argv[1])
if cfg["address"]:
    ray.init(address=cfg["address"], logging_level="WARNING", log_to_driver=False)
res = compare(cfg["store"], cfg["occ"], ["emb", "good"], species=cfg["species"], models=["logistic"], folds=3,
              engine="ray", ray_address=cfg["address"])
nodes = len([n for n in ray.nodes() if n["Alive"]]) if ray.is_initialized() else 0
plain = lambda vs: [None if v != v else round(float(v), 12) for v in vs]
print(json.dumps({"rows": [[r.species, r.features, r.model, r.metric, plain(r.values)] for r in res.rows],
                  "nodes": nodes}))
"""


def _drive(landscape, address):
    import subprocess
    import sys
    from pathlib import Path

    cfg = {"address": address, "store": str(landscape["store"]), "occ": str(landscape["root"] / "plots.csv"),
           "species": SPECIES}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cfg)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.xdist_group("ray")  # with the other Ray tests on one xdist worker
def test_ray_engine_local_and_two_node_cluster_match_the_local_run(landscape, ray_cluster):
    local = compare(landscape["store"], landscape["root"] / "plots.csv", ["emb", "good"], species=SPECIES,
                    models=["logistic"], folds=3, jobs=1)
    expected = _rows(local)
    on_local_ray = _drive(landscape, None)
    assert on_local_ray["rows"] == expected
    on_cluster = _drive(landscape, ray_cluster)
    assert on_cluster["rows"] == expected and on_cluster["nodes"] == 2


def test_lightgbm_rounds_come_from_early_stopping_in_the_inner_cv(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                      model="lightgbm", folds=3, early_stopping=True, lightgbm_params="n_estimators=300",
                      out=tmp_path / "m", predictions=False, write_map=False)
    rounds = [f.rounds for f in res.cv.folds if not f.skipped]
    assert rounds and all(1 <= r <= 330 for r in rounds)  # mean stopping round x 1.1, at most 300 x 1.1
    saved = load_model(tmp_path / "m")
    assert saved.estimator.rounds == int(np.median(rounds))  # the final model: the folds' median
    fixed = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                        model="lightgbm", folds=3, early_stopping=False, predictions=False, write_map=False)
    assert all(f.rounds is None for f in fixed.cv.folds)
    # A fixed threshold needs no inner CV, so there is nothing to stop on: the full n_estimators rounds.
    value = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                        model="lightgbm", folds=3, threshold=0.5, early_stopping=True, out=tmp_path / "v",
                        predictions=False, write_map=False)
    default_rounds = LightGBMModel().params["n_estimators"]
    assert all(f.rounds is None for f in value.cv.folds)
    assert load_model(tmp_path / "v").estimator.rounds == default_rounds
    # The default: no early stopping, every model of the cross-validation boosts n_estimators rounds.
    default = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="emb",
                          model="lightgbm", folds=3, out=tmp_path / "d", predictions=False, write_map=False)
    assert all(f.rounds is None for f in default.cv.folds)
    assert load_model(tmp_path / "d").estimator.rounds == default_rounds
