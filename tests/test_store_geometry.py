"""Geometry statistics kept in the catalog (mean, PCA spectrum, effective dimensionality) and cross-fit records."""

from __future__ import annotations

import duckdb
import h3
import numpy as np
import pytest

from botaclip.errors import InvalidInputError
from botaclip.store import Store
from botaclip.store.geometry import geometry_stats, participation_ratio

PARENT = h3.str_to_int(h3.latlng_to_cell(45.19, 5.72, 6))
OTHER_PARENT = h3.str_to_int(h3.latlng_to_cell(44.0, 6.5, 6))


def children(parent: int, n: int) -> np.ndarray:
    return np.array(sorted(h3.api.basic_int.cell_to_children(parent, 10)), dtype=np.uint64)[:n]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("spectrum,expected", [
    ([1.0, 1.0, 1.0, 1.0], 4.0),           # isotropic: all dimensions count
    ([5.0, 0.0, 0.0], 1.0),                # one axis holds everything
    ([3.0, 1.0], 16.0 / 10.0),             # (3 + 1)^2 / (9 + 1)
    ([2.0, 2.0, 0.0, -1e-12], 2.0),        # round-off negatives count as zero
    ([0.0, 0.0], 0.0),
])
def test_participation_ratio_on_known_spectra(spectrum, expected):
    assert participation_ratio(np.array(spectrum)) == pytest.approx(expected)


def test_geometry_in_catalog_matches_numpy(tmp_path):
    store = Store.create(tmp_path / "s.store", resolution=10)
    rng = np.random.default_rng(0)
    cells = np.concatenate([children(PARENT, 400), children(OTHER_PARENT, 300)])
    # Anisotropic cloud around a common direction, like backbone embeddings.
    X = unit(rng.normal(size=(len(cells), 12)) * np.linspace(3, 0.2, 12) + np.r_[8.0, np.zeros(11)])
    with store.writer("e", kind="backbone", dim=12) as w:
        w.write(cells, X)
    g = store.geometry("e")
    mean = X.mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    assert g["rows"] == g["sample_rows"] == len(cells) and g["dim"] == 12
    np.testing.assert_allclose(g["mean"], mean, atol=1e-6)
    np.testing.assert_allclose(g["eigenvalues"], eig, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(g["explained_variance_ratio"], eig / eig.sum(), rtol=1e-4, atol=1e-9)
    assert g["effective_dim"] == pytest.approx(eig.sum() ** 2 / (eig**2).sum(), rel=1e-4)
    assert g["mean_norm"] == pytest.approx(np.linalg.norm(mean), rel=1e-5)
    n = len(X)
    cos = X @ X.T
    assert g["mean_cosine"] == pytest.approx((cos.sum() - np.trace(cos)) / (n * (n - 1)), rel=1e-5)
    # Axes: unit rows spanning the top eigenvectors (up to sign), largest first.
    _, vectors = np.linalg.eigh(np.cov(X.T))
    assert g["axes"].shape == (12, 12)
    assert abs(g["axes"][0] @ vectors[:, -1]) == pytest.approx(1.0, abs=1e-5)
    # Plain SQL sees the same record.
    con = duckdb.connect()
    con.execute(f"ATTACH '{store.catalog_path}' AS c (READ_ONLY)")
    row = con.execute("SELECT rows, effective_dim, len(mean), len(axes) FROM c.feature_set_geometry "
                      "WHERE name = 'e'").fetchone()
    con.close()
    assert row[0] == n and row[1] == pytest.approx(g["effective_dim"]) and row[2] == 12 and row[3] == 12


def test_geometry_follows_appends_and_overwrite_and_skips_columns(tmp_path):
    store = Store.create(tmp_path / "s.store", resolution=10)
    rng = np.random.default_rng(1)
    a, b = children(PARENT, 200), children(OTHER_PARENT, 150)
    Xa, Xb = unit(rng.normal(size=(200, 6))), unit(rng.normal(size=(150, 6)) + 2)
    with store.writer("e", kind="backbone", dim=6) as w:
        w.write(a, Xa)
    with store.writer("e", kind="backbone", dim=6) as w:  # a second run appends: stats of the whole set
        w.write(b, Xb)
    np.testing.assert_allclose(store.geometry("e")["mean"], np.vstack([Xa, Xb]).mean(axis=0), atol=1e-6)
    with store.writer("e", kind="backbone", dim=6, overwrite=True) as w:
        w.write(b, Xb)
    assert store.geometry("e")["rows"] == 150
    with store.writer("c", kind="covariates", columns=["elev"]) as w:
        w.write(a, columns={"elev": np.arange(200.0)})
    assert store.geometry("c") is None


def test_covariance_sample_above_the_row_cap_is_deterministic():
    rng = np.random.default_rng(2)
    cells = children(PARENT, 2401)
    X = unit(rng.normal(size=(len(cells), 5)) * [3, 2, 1, 1, 1])
    parts = [(cells[i:i + 500], X[i:i + 500]) for i in range(0, len(cells), 500)]
    full = geometry_stats(parts, len(cells))
    capped = geometry_stats(parts, len(cells), max_covariance_rows=800)
    assert capped == geometry_stats(parts, len(cells), max_covariance_rows=800)
    assert 600 < capped["sample_rows"] < 1000 and capped["rows"] == len(cells)
    np.testing.assert_allclose(capped["mean"], full["mean"])  # the mean stays exact
    assert capped["effective_dim"] == pytest.approx(full["effective_dim"], rel=0.15)


def _two_sets(store):
    rng = np.random.default_rng(3)
    cells = children(PARENT, 100)
    for name in ("full", "full_fold0", "full_fold1"):
        with store.writer(name, kind="botaclip", dim=4) as w:
            w.write(cells, rng.normal(size=(100, 4)))
    return cells


def test_cross_fit_record_round_trip_and_refusals(tmp_path):
    store = Store.create(tmp_path / "s.store", resolution=10)
    cells = _two_sets(store)
    blocks = np.unique([h3.api.basic_int.cell_to_parent(int(c), 8) for c in cells]).astype(np.uint64)
    folds = np.arange(len(blocks)) % 2
    assert store.cross_fit("full") is None
    store.record_cross_fit("full", ["full_fold0", "full_fold1"], 8, blocks, folds, cells[::-1][:50])
    cf = Store.open(store.path, read_only=True).cross_fit("full")
    assert set(cf) == {"fold_sets", "block_res", "blocks", "folds", "releve_cells"}
    assert cf["fold_sets"] == ["full_fold0", "full_fold1"] and cf["block_res"] == 8
    assert cf["blocks"].dtype == np.uint64 and np.array_equal(cf["blocks"], blocks)
    assert cf["folds"].dtype == np.int64 and np.array_equal(cf["folds"], folds)
    assert cf["releve_cells"].dtype == np.uint64 and np.array_equal(cf["releve_cells"], np.sort(cells[::-1][:50]))
    with pytest.raises(InvalidInputError, match="no feature set 'nope'"):
        store.record_cross_fit("full", ["full_fold0", "nope"], 8, blocks, folds, cells)
    with pytest.raises(InvalidInputError, match="fold numbers"):
        store.record_cross_fit("full", ["full_fold0", "full_fold1"], 8, blocks, folds + 1, cells)
    with pytest.raises(InvalidInputError, match="resolution 7"):
        store.record_cross_fit("full", ["full_fold0", "full_fold1"], 7, blocks, folds, cells)
    with pytest.raises(InvalidInputError, match="no feature set 'other'"):
        store.cross_fit("other")
    # Replacing the full set drops its record: it described the old data.
    with store.writer("full", kind="botaclip", dim=4, overwrite=True) as w:
        w.write(cells[:3], np.ones((3, 4)))
    assert store.cross_fit("full") is None


def test_similar_centered_matches_numpy_and_cli(tmp_path, cli_runner):
    from botaclip.cli import cli
    from botaclip.store.similarity import similar

    store = Store.create(tmp_path / "s.store", resolution=10)
    rng = np.random.default_rng(5)
    cells = children(PARENT, 300)
    X = unit(np.r_[30.0, np.zeros(7)] + rng.normal(size=(300, 8)))  # nearly collinear
    with store.writer("e", kind="backbone", dim=8) as w:
        w.write(cells, X)
    raw = similar(store, "e", cell=int(cells[0]), k=5)
    centred = similar(store, "e", cell=int(cells[0]), k=5, centered=True)
    assert raw.column("similarity").to_numpy().min() > 0.99
    Xc = unit(X - X.mean(axis=0))
    sims = Xc[1:] @ Xc[0]
    order = np.argsort(-sims)[:5]
    np.testing.assert_array_equal(centred.column("h3").to_numpy(), cells[1:][order])
    np.testing.assert_allclose(centred.column("similarity").to_numpy(), sims[order], atol=1e-5)
    result = cli_runner.invoke(cli, ["store", "similar", str(store.path), "--feature-set", "e", "--cell",
                                     format(int(cells[0]), "x"), "-k", "3", "--centered", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert [r["h3_string"] for r in __import__("json").loads(result.stdout)] == [
        format(int(c), "x") for c in cells[1:][order][:3]]
    bad = cli_runner.invoke(cli, ["store", "similar", str(store.path), "--feature-set", "e", "--cell",
                                  format(int(cells[0]), "x"), "--centered", "--ann"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: centred cosine is exact search only")


def test_records_survive_catalog_rewrites_and_listing_does_not_read_them(tmp_path):
    """Geometry and cross-fit records are copied from catalog to catalog by every writer (arrays stay in SQL),
    and reading the catalog for listings does not carry them."""
    store = Store.create(tmp_path / "s.store", resolution=10)
    cells = _two_sets(store)
    blocks = np.unique([h3.api.basic_int.cell_to_parent(int(c), 8) for c in cells]).astype(np.uint64)
    store.record_cross_fit("full", ["full_fold0", "full_fold1"], 8, blocks, np.arange(len(blocks)) % 2, cells)
    before = store.geometry("full_fold0")
    with store.writer("other", kind="backbone", dim=4) as w:  # another set's writer rewrites the catalog twice
        w.write(cells[:10], np.ones((10, 4)))
    assert store.cross_fit("full")["fold_sets"] == ["full_fold0", "full_fold1"]
    np.testing.assert_array_equal(store.geometry("full_fold0")["mean"], before["mean"])
    state = store.catalog()
    assert not state.records and set(state.feature_sets) == {"full", "full_fold0", "full_fold1", "other"}
