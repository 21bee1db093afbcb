"""SDM end to end on a small real store built here: fit, compare, predict (Python API and CLI), bad input."""

from __future__ import annotations

import json

import h3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from botaclip.errors import BotaclipError, InvalidInputError
from botaclip.sdm import compare, fit_species, load_model, predict
from botaclip.sdm.cells import cell_to_parent
from botaclip.sdm.predict import iter_predictions
from botaclip.store import Store


def test_fit_presence_absence_end_to_end(landscape, tmp_path):
    out = tmp_path / "alpha"
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Alpha prima", features="good",
                      model="logistic", out=out)
    assert res.kind == "presence-absence"
    assert res.n_presences + res.n_absences == 600  # every plot is a presence or an absence
    assert res.summary()["auc"]["mean"] > 0.8
    assert res.summary()["boyce"]["mean"] > 0.3
    assert any("constant" in n and "flat" in n for n in res.notes)
    assert res.n_features == 3
    assert res.cleaning.steps[-1].name.startswith("no features")
    # Saved model with provenance; predictions for every indexed cell in the store; a map.
    doc = json.loads((out / "model.json").read_text())
    assert doc["feature_sets"][0]["name"] == "good" and len(doc["feature_sets"][0]["provenance_id"]) == 16
    assert (out / "map.png").stat().st_size > 10_000
    assert (out / "cv_folds.csv").read_text().startswith("fold,")
    store = Store.open(landscape["store"], read_only=True)
    h, X, cols = store.features_numpy(res.predictions_table)
    assert cols == ["suitability"] and np.array_equal(np.sort(h), landscape["cells"])
    # Predictions follow the gradient.
    order = np.searchsorted(landscape["cells"], h)
    assert np.corrcoef(X[:, 0], landscape["env"][order])[0, 1] > 0.8
    # predict --out .parquet equals the table written by fit.
    p = predict(out, landscape["store"], tmp_path / "alpha.parquet")
    t = pq.read_table(tmp_path / "alpha.parquet").to_pandas().sort_values("h3")
    assert p.n_cells == len(landscape["cells"])
    by_cell = dict(zip(h.tolist(), X[:, 0].tolist()))
    np.testing.assert_allclose(t["suitability"], [by_cell[c] for c in t["h3"]], atol=1e-6)


def test_predict_streams_by_partition_and_exports(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "plots.csv", "Beta secunda", features="good,emb",
                      model="lightgbm", folds=3, out=tmp_path / "beta", predictions=False, write_map=False)
    assert res.feature_sets == ["good", "emb"] and res.n_features == 3 + 8
    saved = load_model(tmp_path / "beta")
    store = Store.open(landscape["store"], read_only=True)
    chunks = list(iter_predictions(saved, store))
    assert len(chunks) == len(store.partitions("good")) > 1  # one partition at a time
    assert max(c[0].size for c in chunks) < landscape["cells"].size
    for suffix in (".gpkg", ".tif", ".png"):
        r = predict(tmp_path / "beta", landscape["store"], tmp_path / f"beta{suffix}", pixel_m=200)
        assert (tmp_path / f"beta{suffix}").stat().st_size > 0 and r.n_cells == landscape["cells"].size
    import geopandas as gpd
    import rasterio

    g = gpd.read_file(tmp_path / "beta.gpkg")
    assert len(g) == landscape["cells"].size and g.geometry.geom_type.eq("Polygon").all()
    with rasterio.open(tmp_path / "beta.tif") as src:
        band = src.read(1, masked=True)
        assert src.res == (200.0, 200.0) and src.crs.to_epsg() == 32632
        assert 0 < band.count() < band.size and 0 <= band.min() and band.max() <= 1
    # Region: one coarse cell's descendants only.
    parent = int(cell_to_parent(landscape["cells"][:1], 6)[0])
    r = predict(tmp_path / "beta", landscape["store"], tmp_path / "part.parquet", region=h3.int_to_str(parent))
    expected = int(np.sum(cell_to_parent(landscape["cells"], 6) == np.uint64(parent)))
    assert r.n_cells == expected < landscape["cells"].size


def test_presence_only_background_and_abundance(landscape, tmp_path):
    res = fit_species(landscape["store"], landscape["root"] / "butterflies.csv", "Papilio alpinus",
                      features="good", model="logistic", folds=3, predictions=False, background=500)
    assert res.kind == "presence-only"
    assert res.n_background == 500 and res.n_absences == 0
    assert res.summary()["boyce"]["mean"] > 0.3
    ab = fit_species(landscape["store"], landscape["root"] / "soil.csv", "Collembola", features="good",
                     model="logistic", folds=3, predictions=False)
    assert ab.kind == "abundance"
    assert set(ab.summary()) == {"spearman", "mae"}
    assert ab.summary()["spearman"]["mean"] > 0.4


def test_compare_identical_folds_and_reports(landscape, tmp_path):
    res = compare(landscape["store"], landscape["root"] / "plots.csv", ["good", "noise"],
                  species=None, models=["logistic"], folds=3, out=tmp_path / "cmp", min_presences=20)
    assert "Rara tertia" in res.skipped_species
    names = {s.species for s in res.species}
    assert {"Alpha prima", "Beta secunda"} <= names
    # Same cells and folds per species for every feature set: identical fold sizes recorded per row.
    doc = json.loads((tmp_path / "cmp" / "report.json").read_text())
    for s in names:
        folds_good = doc["results"][s]["good"]["logistic"]["auc"]["folds"]
        folds_noise = doc["results"][s]["noise"]["logistic"]["auc"]["folds"]
        assert len(folds_good) == len(folds_noise)
    means = res.means()["auc"]
    assert means["good | logistic"]["mean"] > means["noise | logistic"]["mean"] + 0.2
    pair = next(p for p in res.paired if p.metric == "auc")
    assert pair.a == "good" and pair.wins_a >= 2 and pair.n_species == len(names)
    csv = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(csv) == 2 * len(names) and {"auc_mean", "auc_sd", "boyce_mean", "tss_mean"} <= set(csv.columns)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "Wilcoxon" in md and "Alpha prima" in md


def test_same_folds_for_every_feature_set(landscape):
    from botaclip.sdm.dataset import IndexedCells, StoreFeatures, label_cells
    from botaclip.sdm.folds import spatial_folds
    from botaclip.sdm.occurrences import read_occurrences

    store = Store.open(landscape["store"], read_only=True)
    src = StoreFeatures(store)
    occ = read_occurrences(landscape["root"] / "plots.csv")
    a = label_cells(occ, "Alpha prima", "presence-absence", IndexedCells.of(src, ["good", "noise"]))
    b = label_cells(occ, "Alpha prima", "presence-absence", IndexedCells.of(src, ["good", "noise"]))
    fa, fb = spatial_folds(a.h3, a.y, 5, seed=3), spatial_folds(b.h3, b.y, 5, seed=3)
    assert np.array_equal(a.h3, b.h3) and np.array_equal(fa.fold, fb.fold)
    train, test = fa.split(0)
    assert not np.isin(fa.block[test], fa.block[train]).any()  # spatially disjoint


def test_bad_input_errors(landscape, tmp_path):
    store, plots = landscape["store"], landscape["root"] / "plots.csv"
    with pytest.raises(InvalidInputError, match="did you mean 'Alpha prima'"):
        fit_species(store, plots, "Alpha primo", features="good", out=tmp_path / "x")
    with pytest.raises(InvalidInputError) as exc:
        fit_species(store, plots, "Rara tertia", features="good", out=tmp_path / "x")
    assert exc.value.params == ["min_presences"]
    with pytest.raises(InvalidInputError, match="feature set 'nope' not in"):
        fit_species(store, plots, "Alpha prima", features="good,nope", out=tmp_path / "x")
    with pytest.raises(InvalidInputError) as exc:  # listed at every plot: no absences
        fit_species(store, plots, "Commonia ubiquita", features="good", out=tmp_path / "x")
    assert exc.value.params == ["kind"]
    far = pd.read_csv(plots)
    far["decimalLatitude"] -= 10
    far.to_csv(tmp_path / "far.csv", index=False)
    with pytest.raises(BotaclipError, match="falls on a cell with features"):
        fit_species(store, tmp_path / "far.csv", "Alpha prima", features="good", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written


def _cli(cli_runner, args):
    from botaclip.cli import cli

    return cli_runner.invoke(cli, ["sdm", *args])


def test_cli_fit_compare_predict(landscape, tmp_path, cli_runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store, plots = str(landscape["store"]), str(landscape["root"] / "plots.csv")
    r = _cli(cli_runner, ["fit", "--store", store, "--occurrences", plots, "--species", "Alpha prima",
                          "--features", "good", "--model", "logistic", "--folds", "3", "--out", "m"])
    assert r.exit_code == 0, r.output + r.stderr
    assert "auc" in r.output and "duplicates in one cell" in r.output and "map: m/map.png" in r.output
    assert "predictions: table sdm_alpha_prima" in r.output
    r = _cli(cli_runner, ["predict", "--model", "m", "--store", store, "--out", "p.parquet"])
    assert r.exit_code == 0, r.stderr
    assert f"{landscape['cells'].size} cells" in r.output
    r = _cli(cli_runner, ["compare", "--store", store, "--occurrences", plots, "--species", "Alpha prima",
                          "--species", "Beta secunda", "--features", "good", "--features", "noise,emb",
                          "--models", "logistic", "--folds", "3", "--out", "cmp"])
    assert r.exit_code == 0, r.stderr
    assert "Wilcoxon" in r.output and (tmp_path / "cmp" / "report.json").exists()
    assert "noise+emb" in r.output


@pytest.mark.parametrize("args, message", [
    (["--species", "Alpha primo"], "did you mean 'Alpha prima'"),
    (["--species", "Rara tertia"], "--min-presences"),
    (["--species", "Alpha prima", "--features", "missing_set"], "feature set 'missing_set' not in"),
    (["--species", "Alpha prima", "--species-col", "taxon"], "column 'taxon' (--species-col) not in"),
    (["--species", "Alpha prima", "--model", "svm"], "Invalid value"),
])
def test_cli_bad_input_one_line(landscape, tmp_path, cli_runner, args, message):
    base = ["fit", "--store", str(landscape["store"]), "--occurrences", str(landscape["root"] / "plots.csv"),
            "--out", str(tmp_path / "o"), "--no-predictions"]
    if "--features" not in args:
        base += ["--features", "good"]
    r = _cli(cli_runner, base + args)
    assert r.exit_code == 2
    assert message in r.stderr
    if "Invalid value" not in message:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "o").exists()


def test_cli_bad_files(landscape, tmp_path, cli_runner):
    (tmp_path / "occ.xlsx").write_text("nope")
    no_lat = tmp_path / "nolat.csv"
    pd.DataFrame({"species": ["A"], "lng": [6.1]}).to_csv(no_lat, index=False)
    for occ, message in ((tmp_path / "occ.xlsx", "unknown occurrence file format"),
                         (no_lat, "no latitude column"),
                         (tmp_path / "missing.csv", "does not exist")):
        r = _cli(cli_runner, ["fit", "--store", str(landscape["store"]), "--occurrences", str(occ),
                              "--species", "A", "--features", "good", "--out", str(tmp_path / "o")])
        assert r.exit_code == 2 and message in r.stderr and r.stderr.startswith("error:")
    r = _cli(cli_runner, ["predict", "--model", str(tmp_path), "--store", str(landscape["store"]),
                          "--out", str(tmp_path / "x.parquet")])
    assert r.exit_code == 2 and "no model.json" in r.stderr
    r = _cli(cli_runner, ["compare", "--store", str(landscape["store"]), "--occurrences",
                          str(landscape["root"] / "plots.csv"), "--features", "good"])
    assert r.exit_code == 2 and "--all" in r.stderr
