"""Embedding-space diagnostics: the numeric core against scikit-learn and known cases, labels files, the report."""

from __future__ import annotations

import json
from pathlib import Path

import h3
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import davies_bouldin_score, silhouette_score

from botaclip.diagnostics import (
    davies_bouldin,
    diagnose,
    fit_pca,
    geometry_kept,
    h3_ring1_pairs,
    knn_label_accuracy,
    morans_i,
    read_labels,
    silhouette_cosine,
)
from botaclip.diagnostics.neighbours import cosine_knn, unit_rows
from botaclip.diagnostics.spatial import cluster_sample
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError


def _clusters(n_per_class=60, n_classes=4, dim=16, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, dim)) * 3
    X = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    return X.astype(np.float32), labels


@pytest.fixture(scope="module")
def disk_cells():
    """A disk of res-10 cells (radius 12 rings, 469 cells) in the French Alps, with centres (lat, lng)."""
    centre = h3i.latlng_to_cell(45.19, 5.72, 10)
    cells = np.array(sorted(h3i.grid_disk(centre, 12)), dtype=np.uint64)
    latlng = np.array([h3i.cell_to_latlng(c) for c in cells.tolist()])
    return cells, latlng


# --- label structure ---------------------------------------------------------------------------------------------

def test_davies_bouldin_and_silhouette_match_sklearn():
    X, labels = _clusters(n_per_class=40, spread=2.5)
    labels = labels.copy()
    labels[0] = 9  # a single-member class: silhouette 0 for that row, as in scikit-learn
    assert davies_bouldin(X, labels) == pytest.approx(davies_bouldin_score(X, labels), rel=1e-6)
    assert silhouette_cosine(X, labels) == pytest.approx(
        silhouette_score(X, labels, metric="cosine"), abs=1e-5
    )
    string_labels = np.array([f"class-{v}" for v in labels], dtype=object)
    assert silhouette_cosine(X, string_labels) == pytest.approx(silhouette_score(X, labels, metric="cosine"), abs=1e-5)


def test_knn_accuracy_perfect_on_separated_clusters_and_chance_on_shuffled():
    X, labels = _clusters(n_per_class=50, spread=0.1)
    assert knn_label_accuracy(X, labels, k=10) == 1.0
    shuffled = np.random.default_rng(1).permutation(labels)
    assert abs(knn_label_accuracy(X, shuffled, k=10) - 0.25) < 0.08


@pytest.mark.parametrize("n, block_bytes", [(90, 2048), (700, 64 * 700)])  # few rows; many column groups
def test_blocked_neighbours_match_brute_force(n, block_bytes):
    X, _ = _clusters(n_per_class=n // 3, n_classes=3, spread=1.5)
    U = unit_rows(X)
    sims = U @ U.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(cosine_knn(U, k=5, block_bytes=block_bytes), expected)


def test_fewer_than_two_classes_is_rejected():
    X, labels = _clusters(n_per_class=10)
    with pytest.raises(ValueError, match="two classes"):
        davies_bouldin(X, np.zeros(len(labels)))


# --- geometry kept -----------------------------------------------------------------------------------------------

def test_geometry_kept_is_one_for_itself_and_a_rotation_lower_for_a_projection():
    X, _ = _clusters(n_per_class=75, dim=24, spread=2.0)
    rng = np.random.default_rng(3)
    rotation, _ = np.linalg.qr(rng.normal(size=(24, 24)))
    same = geometry_kept(X, X)
    assert same == {"distance_spearman": 1.0, "neighbour_overlap": 1.0}
    rotated = geometry_kept(X, X @ rotation.astype(np.float32))
    assert rotated["distance_spearman"] > 0.9999
    assert rotated["neighbour_overlap"] > 0.995
    projected = geometry_kept(X, X @ rng.normal(size=(24, 3)).astype(np.float32))
    assert projected["distance_spearman"] < 0.9
    assert projected["neighbour_overlap"] < 0.6


# --- spatial structure -------------------------------------------------------------------------------------------

def test_ring1_pairs_are_h3_neighbours(disk_cells):
    cells, _ = disk_cells
    i, j = h3_ring1_pairs(cells)
    assert np.all(i < j)
    # a hexagonal disk of radius r has 3r(3r+1)... count edges directly: every pair must be at grid distance 1
    for a, b in zip(cells[i[:200]].tolist(), cells[j[:200]].tolist()):
        assert h3i.grid_distance(a, b) == 1
    degree = np.bincount(np.concatenate([i, j]), minlength=len(cells))
    centre = h3i.latlng_to_cell(45.19, 5.72, 10)
    assert degree[np.searchsorted(cells, np.uint64(centre))] == 6
    assert degree.min() >= 2  # even corner cells of the disk have neighbours inside it


def test_morans_i_positive_for_smooth_field_near_zero_for_noise(disk_cells):
    cells, latlng = disk_cells
    i, j = h3_ring1_pairs(cells)
    smooth = latlng[:, 0] + 0.5 * latlng[:, 1]
    assert morans_i(smooth, i, j) > 0.9
    noise = np.random.default_rng(0).normal(size=len(cells))
    assert abs(morans_i(noise, i, j)) < 0.1
    assert np.isnan(morans_i(noise, i[:0], j[:0]))


def test_cluster_sample_keeps_neighbour_pairs(disk_cells):
    cells, _ = disk_cells
    rng = np.random.default_rng(0)
    sampled = cluster_sample(cells, 140, rng)
    assert 20 < len(sampled) <= 140 and np.all(np.isin(sampled, cells))
    i, _ = h3_ring1_pairs(sampled)
    assert len(i) >= len(sampled)  # clusters of 7 give ~12 pairs each; a uniform sample would give almost none
    assert np.array_equal(cluster_sample(cells, 10_000, rng), cells)


def test_pca_orders_components_by_variance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    pca = fit_pca(X, 3)
    assert np.all(np.diff(pca.explained_variance_ratio) < 0)
    assert abs(pca.components[0, 0]) > 0.99 and pca.components[0, 0] > 0
    assert pca.transform(X).shape == (300, 3)


# --- labels files ------------------------------------------------------------------------------------------------

def test_read_labels_h3_hex_uint64_and_latlng(tmp_path, disk_cells):
    cells, latlng = disk_cells
    hexes = [h3.int_to_str(int(c)) for c in cells[:20]]
    pd.DataFrame({"h3": hexes, "habitat": ["a"] * 10 + ["b"] * 10}).to_csv(tmp_path / "hex.csv", index=False)
    hex_labels = read_labels(tmp_path / "hex.csv", "habitat", 10)
    assert np.array_equal(hex_labels.h3, cells[:20]) and list(hex_labels.labels[:2]) == ["a", "a"]

    pd.DataFrame({"h3": cells[:20], "cls": np.arange(20) % 3}).to_parquet(tmp_path / "int.parquet")
    int_labels = read_labels(tmp_path / "int.parquet", "cls", 10)
    assert np.array_equal(int_labels.h3, cells[:20]) and set(int_labels.labels) == {"0", "1", "2"}

    # points: three in one cell (two "x", one "y") -> majority "x"; one row without coordinates is dropped
    lat = [latlng[0, 0]] * 3 + [latlng[5, 0], np.nan]
    lng = [latlng[0, 1]] * 3 + [latlng[5, 1], 5.0]
    pd.DataFrame({"decimalLatitude": lat, "decimalLongitude": lng, "habitat": ["x", "y", "x", "z", "x"]}).to_csv(
        tmp_path / "points.csv", index=False
    )
    points = read_labels(tmp_path / "points.csv", "habitat", 10)
    assert points.n_rows == 5 and points.n_rows_dropped == 1 and points.n_conflicting_cells == 1
    assert dict(zip(points.h3.tolist(), points.labels)) == {int(cells[0]): "x", int(cells[5]): "z"}


def test_read_labels_fine_cells_go_to_parent_and_bad_inputs_are_one_line(tmp_path, disk_cells):
    cells, _ = disk_cells
    child = h3i.cell_to_center_child(int(cells[3]), 12)
    pd.DataFrame({"h3": [child], "habitat": ["a"]}).to_parquet(tmp_path / "fine.parquet")
    assert read_labels(tmp_path / "fine.parquet", "habitat", 10).h3.tolist() == [int(cells[3])]

    pd.DataFrame({"h3": [h3i.cell_to_parent(int(cells[0]), 8)], "habitat": ["a"]}).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(InvalidInputError, match="coarser"):
        read_labels(tmp_path / "c.parquet", "habitat", 10)
    with pytest.raises(InvalidInputError, match="no column 'landcover'") as err:
        read_labels(tmp_path / "fine.parquet", "landcover", 10)
    assert err.value.params == ["label_col"]  # the CLI spells it --label-col
    pd.DataFrame({"x": [1.0], "habitat": ["a"]}).to_csv(tmp_path / "nolocation.csv", index=False)
    with pytest.raises(InvalidInputError, match="latitude/longitude"):
        read_labels(tmp_path / "nolocation.csv", "habitat", 10)
    pd.DataFrame({"h3": ["not-a-cell"], "habitat": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InvalidInputError, match="not an H3 cell"):
        read_labels(tmp_path / "bad.csv", "habitat", 10)
    with pytest.raises(MissingFileError, match="not found"):
        read_labels(tmp_path / "missing.csv", "habitat", 10)


# --- the report on in-memory features ----------------------------------------------------------------------------

def _landscape(cells, latlng, dim=32, seed=0):
    """Three habitats in blocks over the disk; a backbone with habitat + smooth terms; an adapted set that
    separates habitats more; a random projection."""
    rng = np.random.default_rng(seed)
    lat, lng = latlng[:, 0], latlng[:, 1]
    habitat = np.where(lat > np.median(lat), "forest", np.where(lng > np.median(lng), "meadow", "scree"))
    codes = np.unique(habitat, return_inverse=True)[1]
    prototypes = rng.normal(size=(3, dim))
    gradient = (lat - lat.mean()) / lat.std()
    backbone = prototypes[codes] + np.outer(gradient, rng.normal(size=dim)) + 1.5 * rng.normal(size=(len(cells), dim))
    adapted = backbone + 2.0 * prototypes[codes]
    return habitat, backbone.astype(np.float32), adapted.astype(np.float32)


def test_diagnose_report_on_arrays(tmp_path, disk_cells):
    cells, latlng = disk_cells
    habitat, backbone, adapted = _landscape(cells, latlng)
    # labels for 300 store cells and 5 cells outside it
    outside = [int(c) for c in h3i.grid_ring(int(cells[0]), 40)[:5]]
    frame = pd.DataFrame({"h3": np.concatenate([cells[:300], np.array(outside, np.uint64)]),
                          "habitat": np.concatenate([habitat[:300], ["forest"] * 5])})
    frame.to_parquet(tmp_path / "labels.parquet")
    features = {"dofa": (cells, backbone), "botaclip": (cells[::-1], adapted[::-1])}  # order must not matter
    report = diagnose(features, labels=tmp_path / "labels.parquet", sample=250, seed=0, out_dir=tmp_path / "out")

    assert report.labels["n_cells_not_in_store"] == 5 and report.labels["n_cells_in_store"] == 300
    assert report.sample["n_sampled"] == 250 and report.sample["n_cells_common"] == len(cells)
    dofa, bota = report.results["dofa"], report.results["botaclip"]
    assert bota["davies_bouldin"] < dofa["davies_bouldin"]
    assert bota["silhouette_cosine"] > dofa["silhouette_cosine"]
    assert bota["knn_accuracy"] >= dofa["knn_accuracy"]
    assert 0 < bota["distance_spearman"] < 1 and 0 < bota["neighbour_overlap"] < 1
    assert "distance_spearman" not in dofa  # the reference is not compared with itself
    assert dofa["morans_i_pc1"] > 0.3  # the smooth gradient and habitat blocks show up in the first PCs

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "diagnostics.json", "diagnostics.md", "embedding_pca.png", "region_pca_rgb.png"]
    saved = json.loads((tmp_path / "out" / "diagnostics.json").read_text())
    assert saved["results"]["botaclip"]["knn_accuracy"] == pytest.approx(bota["knn_accuracy"])
    markdown = (tmp_path / "out" / "diagnostics.md").read_text()
    assert "| botaclip |" in markdown and "![embedding_pca](embedding_pca.png)" in markdown
    assert report.to_table().splitlines()[0].startswith("feature set")

    # same seed, same numbers
    again = diagnose(features, labels=tmp_path / "labels.parquet", sample=250, seed=0)
    assert again.results["botaclip"]["knn_accuracy"] == bota["knn_accuracy"]


def test_diagnose_without_labels_and_bad_inputs(disk_cells):
    cells, latlng = disk_cells
    _, backbone, _ = _landscape(cells, latlng)
    report = diagnose({"dofa": (cells, backbone)}, sample=100)
    assert "davies_bouldin" not in report.results["dofa"]
    assert report.sample["n_spatial_pairs"] > 0 and np.isfinite(report.results["dofa"]["morans_i_pc1"])
    with pytest.raises(BotaclipError, match="unknown feature set 'nope'.*available: dofa"):
        diagnose({"dofa": (cells, backbone)}, ["nope"])
    with pytest.raises(BotaclipError, match="share no cells"):
        diagnose({"a": (cells[:100], backbone[:100]), "b": (cells[200:], backbone[200:])})


# --- through a real store, and the CLI ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def landscape_store(tmp_path_factory, disk_cells):
    """A real store with a backbone, an adapted set and a covariate set over the disk, plus a labels file."""
    from botaclip.store import Store

    cells, latlng = disk_cells
    habitat, backbone, adapted = _landscape(cells, latlng)
    root = tmp_path_factory.mktemp("diag")
    store = Store.create(root / "alps.store", resolution=10)
    for name, kind, X in (("dofa", "backbone", backbone), ("bota", "botaclip", adapted)):
        with store.writer(name, kind=kind, dim=X.shape[1], provenance={"model": name}) as writer:
            writer.write(h3=cells, embedding=X / np.linalg.norm(X, axis=1, keepdims=True))
    with store.writer("terrain", kind="covariates", columns=["elevation_m", "slope_deg"]) as writer:
        # metres and degrees: very different scales, standardised before cosine geometry
        writer.write(h3=cells, columns={"elevation_m": 1500 + 2e4 * (latlng[:, 0] - 45.19),
                                        "slope_deg": 20 + 1e3 * (latlng[:, 1] - 5.72)})
    labels = pd.DataFrame({"h3": [h3.int_to_str(int(c)) for c in cells], "habitat": habitat})
    labels.to_csv(root / "cells.csv", index=False)
    return root / "alps.store", root / "cells.csv", {"dofa": (cells, backbone), "bota": (cells, adapted)}


def test_diagnose_through_store_matches_arrays(landscape_store):
    from botaclip.store import Store

    path, labels_path, arrays = landscape_store
    store = Store.open(path, read_only=True)
    from_store = diagnose(store, ["dofa", "bota", "terrain"], labels=labels_path, sample=200, seed=3)
    from_arrays = diagnose(arrays, ["dofa", "bota"], labels=labels_path, sample=200, seed=3)
    for name in ("dofa", "bota"):
        for key in ("davies_bouldin", "silhouette_cosine", "knn_accuracy", "morans_i_pc1"):
            assert from_store.results[name][key] == pytest.approx(from_arrays.results[name][key], abs=1e-4)
    terrain = from_store.results["terrain"]
    assert terrain["standardised"] and terrain["dim"] == 2
    assert terrain["morans_i_pc1"] > 0.9  # a planar field is as smooth as it gets
    assert from_store.resolution == 10 and from_store.store == str(Path(path).resolve())
    # default: every feature set, the backbone first (the reference), not alphabetical
    assert diagnose(store, sample=50).feature_sets == ["dofa", "bota", "terrain"]


def test_cli_diagnose_prints_table_and_writes_files(cli_runner, landscape_store, tmp_path):
    from botaclip.cli import cli

    path, labels_path, _ = landscape_store
    out = tmp_path / "diag"
    result = cli_runner.invoke(cli, ["store", "diagnose", str(path), "--feature-sets", "dofa,bota",
                                     "--labels", str(labels_path), "--sample", "150", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "feature set" in result.output and "Davies-Bouldin" in result.output
    assert "0 of them not in the store" in result.output
    saved = json.loads((out / "diagnostics.json").read_text())
    assert saved["feature_sets"] == ["dofa", "bota"] and saved["sample"]["n_sampled"] == 150
    assert (out / "embedding_pca.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["--feature-sets", "dofa,nope"], "unknown feature set 'nope'"),
        (["--labels", "{labels}", "--label-col", "landcover"], "no column 'landcover'"),
        (["--labels", "{one_class}"], "fewer than two classes"),
        (["--labels", "{tmp}/missing.csv"], "labels file not found"),
    ],
)
def test_cli_diagnose_bad_input_is_one_line(cli_runner, landscape_store, tmp_path, args, message):
    from botaclip.cli import cli

    path, labels_path, arrays = landscape_store
    cells = arrays["dofa"][0]
    pd.DataFrame({"h3": cells[:50], "habitat": "forest"}).to_parquet(tmp_path / "one.parquet")
    args = [a.format(labels=labels_path, one_class=tmp_path / "one.parquet", tmp=tmp_path) for a in args]
    result = cli_runner.invoke(cli, ["store", "diagnose", str(path), *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_effective_dimensionality_and_centred_cosine(disk_cells, tmp_path):
    """A collinear cloud (one shared direction plus small structured offsets, like random-init embeddings):
    raw cosine squeezes the habitats together, centred cosine separates them; effective dimensionality is the
    participation ratio of the sample's spectrum."""
    cells, latlng = disk_cells
    habitat, backbone, _ = _landscape(cells, latlng)
    offsets = backbone / np.linalg.norm(backbone, axis=1, keepdims=True)
    collinear = np.r_[40.0, np.zeros(backbone.shape[1] - 1)] + offsets
    pd.DataFrame({"h3": cells, "habitat": habitat}).to_parquet(tmp_path / "labels.parquet")
    frame = {"raw": (cells, collinear)}
    raw = diagnose(frame, labels=tmp_path / "labels.parquet", sample=300)
    centred = diagnose(frame, labels=tmp_path / "labels.parquet", sample=300, centered=True)
    assert centred.centered and "centred" in centred.summary_lines()[0]
    # Raw cosine is about 1 for every pair; centred, the pairs spread around 0 (ratios such as the silhouette's
    # are scale-free and barely move, but anything that reads cosine values - R, SigLIP logits - does).
    assert raw.results["raw"]["mean_cosine"] > 0.99
    assert abs(centred.results["raw"]["mean_cosine"]) < 0.05
    # Effective dimensionality against numpy on the same sample of unit rows.
    X = collinear / np.linalg.norm(collinear, axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(np.cov(X.T))
    assert raw.results["raw"]["effective_dim"] == pytest.approx(eig.sum() ** 2 / (eig**2).sum(), rel=0.3)
    assert 1.0 <= raw.results["raw"]["effective_dim"] <= X.shape[1]
    assert raw.results["raw"]["pc1_share"] == pytest.approx(eig.max() / eig.sum(), rel=0.3)
    assert "eff dim" in centred.to_table() and "PC1 share" in centred.to_table()
