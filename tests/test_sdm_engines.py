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
    # One task per species and feature set; a species is reported once, when both of its sets are done.
    assert sorted(m for m in messages if m.endswith(": done")) == [f"{s}: done" for s in SPECIES]
    assert [s.notes for s in one.species] == [s.notes for s in two.species]
    assert (tmp_path / "cmp" / "report.json").exists()


def test_species_notes_merge_in_feature_set_order_once_each():
    from botaclip.sdm.compare import SpeciesInfo, _merge_species

    def part(label, notes):
        info = SpeciesInfo("Alpha prima", "presence-only", 10, 100, 6, 20, notes, "blocks", [])
        return ([label], info, {("Alpha prima", label, "lightgbm"): label}, {label: {"lightgbm": 1}})

    merged = _merge_species([part("a", ["shared", "a: dropped x"]), part("b", ["shared", "b: dropped y"]),
                             part("a", ["other"]), part("b", ["other"])], 2)
    assert [m[0] for m in merged] == [["a", "b"], ["a", "b"]]
    assert merged[0][1].notes == ["shared", "a: dropped x", "b: dropped y"] and merged[1][1].notes == ["other"]
    assert list(merged[0][2].values()) == ["a", "b"] and set(merged[0][3]) == {"a", "b"}


def _table_row_sum(item, tables):
    """A task of the engine tests: one row's sum, and the process and the table object that served it."""
    X = tables["t"][0]
    if item < 0:
        raise ValueError(f"bad item {item}")
    return float(X[item].sum()), os.getpid(), id(X)


def test_workers_started_before_the_tables_map_them_once_per_process():
    from botaclip.sdm.engines import LocalWorkers, run_tasks

    X = np.arange(40, dtype=np.float32).reshape(10, 4)
    done = []
    with LocalWorkers(2, ("numpy",)) as workers:
        out = run_tasks(_table_row_sum, list(range(10)), {"t": (X, list("abcd"))}, jobs=2, workers=workers,
                        on_result=lambda i, r: done.append(i))
    assert [o[0] for o in out] == X.sum(axis=1).tolist() and sorted(done) == list(range(10))
    by_process = {}
    for _, pid, table in out:
        by_process.setdefault(pid, set()).add(table)
    assert 1 <= len(by_process) <= 2 and all(len(t) == 1 for t in by_process.values())
    processes = list(workers.pool._processes.values()) if workers.pool._processes else []
    assert all(p.exitcode == 0 for p in processes)


def test_workers_stop_at_once_when_the_run_fails():
    """A failure while the workers start (bad input found by the driver) or in a task stops them: nothing is
    left running, and the error is the task's own."""
    from botaclip.sdm.engines import LocalWorkers, run_tasks

    started = []
    with pytest.raises(InvalidInputError, match="found while preparing"):
        with LocalWorkers(2, ("lightgbm",)) as workers:
            started = list(workers.pool._processes.values())
            raise InvalidInputError("found while preparing")
    assert len(started) == 2 and all(not p.is_alive() for p in started)
    X = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="bad item -1"):
        with LocalWorkers(2) as workers:
            started = list(workers.pool._processes.values())
            run_tasks(_table_row_sum, [0, -1, 1, 2], {"t": (X, ["a", "b"])}, jobs=2, workers=workers)
    assert all(not p.is_alive() for p in started)


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
