"""Maxent, ensembles, permutation importance, response curves and the area of applicability, on the small real
stores of tests/conftest.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from botaclip.errors import InvalidInputError
import pyarrow.parquet as pq

from botaclip.sdm import compare, fit_species, load_model, predict


def test_compare_ensemble_importance_and_maxent(landscape, tmp_path):
    res = compare(landscape["store"], landscape["root"] / "plots.csv", ["good", "emb,noise"],
                  species=["Alpha prima"], models="logistic,maxent", ensemble="weighted", importance=True,
                  folds=3, jobs=1, out=tmp_path / "cmp")
    assert res.models == ["logistic", "maxent", "ensemble-weighted"]
    means = res.means()
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
    print(res.aoa, saved.estimator.weights)
    r = predict(out, landscape["store"], tmp_path / "ens.parquet")
    t = pq.read_table(tmp_path / "ens.parquet").to_pandas()
    assert list(t.columns) == ["h3", "suitability", "di", "inside_aoa"] and len(t) == r.n_cells
    print(r.extra, t.describe())
    r = predict(out, landscape["store"], tmp_path / "ens.png")
