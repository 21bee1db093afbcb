"""SDM data handling without a store: occurrence reading, cleaning, folds, background, models, persistence."""

import json

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
import shapely

from botaclip.errors import InvalidInputError, MissingFileError
from botaclip.sdm.background import sample_background, target_group_background
from botaclip.sdm.cells import cell_to_parent, in_cells, latlng_to_cells
from botaclip.sdm.cleaning import Extent, clean_samples
from botaclip.sdm.dataset import drop_uninformative_columns
from botaclip.sdm.evaluate import cross_validate
from botaclip.sdm.folds import spatial_folds
from botaclip.sdm.models import MODEL_NAMES, make_model
from botaclip.sdm.occurrences import read_occurrences, species_samples
from botaclip.sdm.persist import SavedModel, load_model, save_model

LAT0, LNG0 = 45.2, 6.1


def _disk(res=9, k=20):
    centre = h3.latlng_to_cell(LAT0, LNG0, res)
    return np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(centre, k)), dtype=np.uint64)


# ---------------------------------------------------------------- occurrences


def _releves(tmp_path):
    rows = [
        ("p1", 45.20, 6.10, "Carex firma", 10.0),
        ("p1", 45.20, 6.10, "Dryas octopetala", 5.0),
        ("p2", 45.21, 6.11, "Dryas octopetala", 20.0),
        ("p3", 45.22, 6.12, "Carex firma", 1.0),
        ("p4", 45.23, 6.13, "Salix retusa", 3.0),
    ]
    df = pd.DataFrame(rows, columns=["releve_id", "decimalLatitude", "decimalLongitude", "species", "cover"])
    path = tmp_path / "plots.csv"
    df.to_csv(path, index=False)
    return path


def test_releves_are_presence_absence_for_every_species(tmp_path):
    occ = read_occurrences(_releves(tmp_path))
    assert occ.infer_kind() == "presence-absence"
    assert occ.species_names() == ["Carex firma", "Dryas octopetala", "Salix retusa"]
    t = species_samples(occ, "Carex firma", "presence-absence").table
    assert len(t) == 4  # every plot
    assert t["y"].tolist() == [1.0, 0.0, 1.0, 0.0]  # sorted by plot id: p1..p4


def test_unknown_species_suggests_close_names(tmp_path):
    occ = read_occurrences(_releves(tmp_path))
    with pytest.raises(InvalidInputError, match="did you mean 'Carex firma'"):
        species_samples(occ, "Carex frima", "presence-absence")


def test_darwin_core_presence_only_with_given_absences(tmp_path):
    df = pd.DataFrame({
        "scientificName": ["Parnassius apollo"] * 3 + [""],
        "decimalLatitude": [45.2, 45.21, 45.22, 45.3],
        "decimalLongitude": [6.1, 6.11, 6.12, 6.3],
        "occurrenceStatus": ["PRESENT", "present", "ABSENT", "absent"],
        "coordinateUncertaintyInMeters": [10, 5000, np.nan, 1],
    })
    path = tmp_path / "gbif.tsv"
    df.to_csv(path, sep="\t", index=False)
    occ = read_occurrences(path)
    assert occ.columns["species"] == "scientificName"
    assert occ.infer_kind() == "presence-absence"  # the status column holds absences
    s = species_samples(occ, "Parnassius apollo", "presence-only").table
    assert s["y"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert s["given_background"].tolist() == [False, False, True, True]


def test_column_overrides_and_missing_column_message(tmp_path):
    df = pd.DataFrame({"Y": [45.2], "X": [6.1], "taxon_x": ["A b"]})
    path = tmp_path / "o.csv"
    df.to_csv(path, index=False)
    with pytest.raises(InvalidInputError, match="no species column") as exc:
        read_occurrences(path)
    assert exc.value.params == ["species_col"]
    with pytest.raises(InvalidInputError, match="column 'nope' \\(lat_col\\) not in") as exc:
        read_occurrences(path, lat_col="nope", species_col="taxon_x")
    assert exc.value.params == ["lat_col"]
    occ = read_occurrences(path, lat_col="Y", lng_col="X", species_col="taxon_x")
    assert occ.records["lat"].iloc[0] == 45.2


def test_unknown_format(tmp_path):
    path = tmp_path / "o.xlsx"
    path.write_text("x")
    with pytest.raises(InvalidInputError, match="unknown occurrence file format '.xlsx'"):
        read_occurrences(path)
    with pytest.raises(MissingFileError, match="does not exist"):
        read_occurrences(tmp_path / "missing.csv")


def test_projected_crs_geopackage_geoparquet_and_columns_agree(tmp_path):
    lat = np.array([45.2, 45.25])
    lng = np.array([6.1, 6.2])
    frame = gpd.GeoDataFrame({"species": ["A a", "A a"]}, geometry=shapely.points(lng, lat), crs=4326)
    lambert = frame.to_crs(2154)  # RGF93 / Lambert-93, metres
    lambert.to_file(tmp_path / "o.gpkg", driver="GPKG")
    lambert.to_parquet(tmp_path / "o.parquet")
    xy = pd.DataFrame({"species": ["A a", "A a"], "x": lambert.geometry.x, "y": lambert.geometry.y})
    xy.to_csv(tmp_path / "xy.csv", index=False)
    for occ in (read_occurrences(tmp_path / "o.gpkg"), read_occurrences(tmp_path / "o.parquet"),
                read_occurrences(tmp_path / "xy.csv", crs="EPSG:2154")):
        np.testing.assert_allclose(occ.records["lat"], lat, atol=1e-7)
        np.testing.assert_allclose(occ.records["lng"], lng, atol=1e-7)


def test_abundance_sums_per_site_and_zero_elsewhere(tmp_path):
    df = pd.DataFrame({
        "site_id": ["s1", "s1", "s2", "s3"],
        "decimalLatitude": [45.2, 45.2, 45.21, 45.22],
        "decimalLongitude": [6.1, 6.1, 6.11, 6.12],
        "species": ["Collembola", "Collembola", "Acari", "Collembola"],
        "individualCount": [3, 4, 10, 0],
    })
    path = tmp_path / "soil.csv"
    df.to_csv(path, index=False)
    occ = read_occurrences(path)
    assert occ.infer_kind() == "abundance"
    t = species_samples(occ, "Collembola", "abundance").table
    assert t["y"].tolist() == [7.0, 0.0, 0.0]


# ---------------------------------------------------------------- cleaning


def test_cleaning_counts_each_step(tmp_path):
    cells = _disk(res=10, k=3)
    lat0, lng0 = h3.cell_to_latlng(h3.int_to_str(int(cells[0])))
    rows = [
        ("r1", lat0, lng0, "A a", "present", 10),  # ok
        ("r2", lat0, lng0, "A a", "present", 10),  # duplicate cell (presence)
        ("r3", lat0, lng0, "A a", "absent", 10),  # duplicate cell (absence) -> presence wins
        ("r4", np.nan, lng0, "A a", "present", 10),  # missing
        ("r5", 95.0, lng0, "A a", "present", 10),  # out of range (lng not plausible as lat? 6.1 is: swapped)
        ("r6", 0.0, 0.0, "A a", "present", 10),  # (0, 0)
        ("r7", lng0, lat0, "A a", "present", 10),  # swapped (inside the extent once swapped)
        ("r8", lat0, lng0 + 0.001, "A a", "present", 99999),  # too uncertain
        ("r9", lat0, 200.0, "A a", "absent", 10),  # out of range
    ]
    df = pd.DataFrame(rows, columns=["id", "decimalLatitude", "decimalLongitude", "species", "occurrenceStatus",
                                     "coordinateUncertaintyInMeters"])
    path = tmp_path / "o.csv"
    df.to_csv(path, index=False)
    occ = read_occurrences(path)
    samples = species_samples(occ, "A a", "presence-absence")
    extent = Extent(lat0 - 0.5, lat0 + 0.5, lng0 - 0.5, lng0 + 0.5)
    cleaned, report = clean_samples(samples, 10, max_uncertainty=1000, extent=extent)
    steps = {s.name: (s.removed, s.removed_presences) for s in report.steps}
    assert report.samples == 9 and report.presences == 7
    assert steps["missing coordinates"] == (1, 1)
    assert steps["coordinates out of range"] == (1, 0)  # r9
    assert steps["coordinates exactly (0, 0)"] == (1, 1)
    assert steps["latitude/longitude apparently swapped"] == (2, 2)  # r5 (|lat| > 90, |lng| <= 90) and r7
    assert steps["uncertainty above 1000 m"] == (1, 1)
    assert steps["duplicates in one cell"] == (2, 1)
    assert len(cleaned) == 1 and cleaned["y"].iloc[0] == 1.0  # presence wins
    assert report.steps[-1].remaining == 1


# ---------------------------------------------------------------- folds


def test_folds_are_spatially_disjoint_balanced_and_seeded():
    cells = _disk(res=9, k=20)
    rng = np.random.default_rng(0)
    y = (rng.random(cells.size) < 0.2).astype(float)
    f = spatial_folds(cells, y, n_folds=5, seed=7)
    # Default block resolution: the coarsest giving >= 4 blocks per fold.
    assert np.unique(cell_to_parent(cells, f.block_res)).size >= 20
    if f.block_res > 0:
        assert np.unique(cell_to_parent(cells, f.block_res - 1)).size < 20 or \
            np.unique(cell_to_parent(cells[y > 0], f.block_res - 1)).size < 5
    # No block in two folds.
    for b in np.unique(f.block):
        assert np.unique(f.fold[f.block == b]).size == 1
    # Presences balanced across folds.
    per_fold = np.bincount(f.fold, weights=y, minlength=5)
    assert per_fold.min() > 0 and per_fold.max() - per_fold.min() <= 0.5 * per_fold.mean()
    # Same inputs, same folds; a different seed changes them.
    assert np.array_equal(f.fold, spatial_folds(cells, y, 5, seed=7).fold)
    assert not np.array_equal(f.fold, spatial_folds(cells, y, 5, seed=8).fold)


def test_folds_explicit_block_res_and_errors():
    cells = _disk(res=9, k=6)
    f = spatial_folds(cells, None, n_folds=3, block_res=8)
    assert f.block_res == 8
    assert np.array_equal(f.block, cell_to_parent(cells, 8))
    with pytest.raises(InvalidInputError) as exc:
        spatial_folds(cells, None, n_folds=3, block_res=10)
    assert exc.value.params == ["block_res"]
    with pytest.raises(InvalidInputError, match="spatial blocks") as exc:
        spatial_folds(cells, None, n_folds=5, block_res=0)
    assert exc.value.params == ["block_res", "folds"]


def test_cell_parent_bit_arithmetic_matches_h3():
    cells = _disk(res=10, k=4)
    for r in (0, 5, 9, 10):
        ref = [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), r)) for c in cells]
        assert np.array_equal(cell_to_parent(cells, r), np.array(ref, dtype=np.uint64))


# ---------------------------------------------------------------- background


def test_background_never_on_a_presence_cell_and_seeded():
    indexed = _disk(res=9, k=10)
    presence = indexed[::7]
    bg = sample_background(indexed, presence, n=100, seed=1)
    assert bg.size == 100 and np.unique(bg).size == 100
    assert not np.isin(bg, presence).any()
    assert np.isin(bg, indexed).all()
    assert np.array_equal(bg, sample_background(indexed, presence, n=100, seed=1))
    everything = sample_background(indexed, presence, n=10**6)
    assert everything.size == indexed.size - presence.size
    group = np.concatenate([presence[:5], indexed[1:40], np.array([123], dtype=np.uint64)])
    tg = target_group_background(group, indexed, presence, n=1000)
    assert not np.isin(tg, presence).any() and np.isin(tg, indexed).all() and 123 not in tg


def test_in_cells_is_isin_for_sorted_and_unsorted_cells():
    rng = np.random.default_rng(0)
    among = np.unique(rng.integers(0, 2**63, 500, dtype=np.uint64))
    cells = np.concatenate([among[::3], rng.integers(0, 2**63, 200, dtype=np.uint64), among[-1:], among[:1]])
    assert np.array_equal(in_cells(cells, among), np.isin(cells, among))
    shuffled = np.concatenate([rng.permutation(among), among[:7]])  # not sorted, with duplicates: np.isin's way
    assert np.array_equal(in_cells(cells, shuffled), np.isin(cells, among))
    assert in_cells(cells, among[:0]).shape == cells.shape and not in_cells(cells, among[:0]).any()
    assert in_cells(cells[:0], among).size == 0


def test_background_draw_is_the_same_from_sorted_or_unsorted_cells():
    """The presences are marked by bisection on the sorted cells: the same draw as ranking every indexed cell
    and dropping the presences (the draw of every stored comparison so far)."""
    indexed = _disk(res=9, k=12)
    presence = indexed[5::11]
    order = np.random.default_rng(3).permutation(indexed.size)
    ranked = indexed[order]
    expected = np.sort(ranked[~np.isin(ranked, presence)][:150])
    assert np.array_equal(sample_background(indexed, presence, n=150, seed=3), expected)
    messy = np.concatenate([indexed[::-1], indexed[:40]])  # unsorted, duplicated
    assert np.array_equal(sample_background(messy, presence[::-1], n=150, seed=3), expected)


# ---------------------------------------------------------------- models and CV


def _toy(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=n) > 0.8).astype(float)
    return X, y


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_learn_and_roundtrip_exactly(tmp_path, name):
    X, y = _toy()
    X[::11, 2] = np.nan  # missing values are handled (natively or by training medians)
    est = make_model(name, "binary", seed=0, **({"n_estimators": 40} if name in ("lightgbm", "rf") else {}))
    est.fit(X, y)
    p = est.predict(X)
    assert p.shape == (600,) and (p >= 0).all() and (p <= 1).all()
    assert np.corrcoef(p, X[:, 0])[0, 1] > 0.5
    assert est.predict_proba(X).shape == (600, 2)
    save_model(tmp_path / name, SavedModel(est, "A a", "presence-absence", [{"name": "f", "provenance_id": "x"}],
                                           [f"c{i}" for i in range(5)], list(range(5)), 9, 0.5))
    assert not any(p.suffix in {".pkl", ".joblib", ".pickle"} for p in (tmp_path / name).iterdir())
    loaded = load_model(tmp_path / name)
    np.testing.assert_allclose(loaded.estimator.predict(X), p, rtol=0, atol=1e-12)
    assert loaded.feature_set_names == ["f"] and loaded.threshold == 0.5


def test_regression_models_predict_counts():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 4)).astype(np.float32)
    y = rng.poisson(np.exp(1 + X[:, 0]))
    for name in ("lightgbm", "rf", "logistic"):  # maxent models presences (refused for abundance elsewhere)
        est = make_model(name, "regression", n_jobs=1, **({"n_estimators": 40} if name != "logistic" else {}))
        p = est.fit(X, y).predict(X)
        assert (p >= 0).all() and np.corrcoef(p, y)[0, 1] > 0.5


def test_load_model_refuses_foreign_json(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InvalidInputError, match="not a botaclip SDM model"):
        load_model(tmp_path)
    with pytest.raises(MissingFileError, match="no model.json"):
        load_model(tmp_path / "nothing")


def test_cross_validation_skips_one_class_fold_without_crashing():
    cells = _disk(res=9, k=8)
    X, _ = _toy(cells.size)
    folds = spatial_folds(cells, None, n_folds=3, block_res=7 if np.unique(cell_to_parent(cells, 7)).size >= 3
                          else 8)
    y = (folds.fold != 0).astype(float)  # fold 0 holds absences only
    y[folds.fold == 1] = np.where(np.arange((folds.fold == 1).sum()) % 2, 1.0, 0.0)
    y[folds.fold == 2] = np.where(np.arange((folds.fold == 2).sum()) % 3 == 0, 1.0, 0.0)
    cv = cross_validate(X, y, folds, "logistic", "binary")
    assert cv.folds[0].skipped == "test fold holds no presence"
    assert cv.folds[1].skipped is None and np.isfinite(cv.folds[1].metrics["auc"])
    assert cv.summary()["auc"]["n"] == 2


def test_constant_and_missing_columns_dropped_with_a_note():
    X = np.column_stack([np.arange(5.0), np.ones(5), np.full(5, np.nan), np.r_[1.0, np.nan, 2, 3, 4]])
    Xk, kept, notes = drop_uninformative_columns(X, ["a", "const", "gone", "partial"])
    assert kept == [0, 3] and Xk.shape == (5, 2)
    assert any("constant" in n and "const" in n for n in notes)
    assert any("all missing" in n and "gone" in n for n in notes)
    with pytest.raises(InvalidInputError):
        drop_uninformative_columns(np.ones((4, 2)), ["a", "b"])
    # One value among missing ones is constant too; a matrix that keeps every column is not copied.
    Y = np.column_stack([np.arange(5.0), np.r_[np.nan, 2, 2, np.nan, 2], np.r_[-np.inf, 0, 1, 2, 3]]).astype(np.float32)
    Yk, kept, notes = drop_uninformative_columns(Y, ["a", "one value", "inf"])
    assert kept == [0, 2] and len(notes) == 1 and "one value" in notes[0]
    every, kept, notes = drop_uninformative_columns(Y[:, [0, 2]].copy(), ["a", "inf"])
    assert kept == [0, 1] and not notes and np.array_equal(every, Y[:, [0, 2]])


def test_latlng_to_cells_matches_h3():
    lat = np.array([45.2, -33.9])
    lng = np.array([6.1, 151.2])
    got = latlng_to_cells(lat, lng, 10)
    assert got.tolist() == [h3.str_to_int(h3.latlng_to_cell(a, b, 10)) for a, b in zip(lat, lng)]
