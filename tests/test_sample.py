"""The built-in sample region: files valid, world sane, generation deterministic, CLI errors clean."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
from shapely.geometry import Point, shape

from botaclip.cli import cli
from botaclip.errors import InvalidInputError, MissingFileError
from botaclip.sample import SampleRegion, default_sample_dir, ensure_sample, make_sample
from botaclip.sample.landscape import HABITATS
from botaclip.sample.region import FILES
from botaclip.sample.taxa import BUTTERFLIES, PLANT_GUILDS

SIZE_KM, PLOTS = 1.0, 300


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> SampleRegion:
    return make_sample(tmp_path_factory.mktemp("a") / "sample", seed=0, size_km=SIZE_KM, plots=PLOTS)


@pytest.fixture(scope="module")
def tables(region):
    read = lambda p: pd.read_csv(p)  # noqa: E731
    return {
        "plots": read(region.plots), "releves": read(region.releves), "butterflies": read(region.butterflies),
        "soil": read(region.soil), "species": read(region.species),
        "truth": pd.read_parquet(region.truth), "cells": pd.read_parquet(region.cells),
    }


def _pixels(path):
    with rasterio.open(path) as src:
        return src.read()


# --- files ------------------------------------------------------------------------------------------------


def test_every_file_is_written_and_described_in_the_readme(region):
    assert SampleRegion.open(region.root) == region
    readme = region.readme.read_text()
    for filename in FILES.values():
        assert (region.root / filename).is_file()
        if filename not in ("README",):
            assert f"`{filename}`" in readme
    assert "seed 0" in readme or "--seed 0" in readme
    assert not [p for p in region.root.parent.iterdir() if ".partial-" in p.name]


def test_orthophoto_is_a_tiled_4_band_lambert93_geotiff_with_nodata(region):
    with rasterio.open(region.ortho) as src:
        assert (src.count, src.dtypes[0], src.crs.to_epsg(), src.nodata) == (4, "uint8", 2154, 0)
        assert src.res == (1.0, 1.0) and src.width == src.height == 1000
        assert src.block_shapes[0] == (256, 256)
        assert src.compression.name.lower() in ("deflate", "zstd")
        assert src.descriptions == ("red", "green", "blue", "nir")
        left, bottom, right, top = src.bounds
        assert abs((left + right) / 2 - 930_000) < 1 and abs((top + bottom) / 2 - 6_450_000) < 1
        image = src.read()
    empty = (image == 0).all(axis=0)
    assert 0.02 < empty.mean() < 0.3, "a no-data border strip, not more"
    assert ((image == 0).any(axis=0) == empty).all(), "a valid pixel is never 0 in any band"
    assert empty[:, -1].all() and not empty[0, :500].any(), "the strip runs along the east edge"
    valid = image[:, ~empty].astype(np.float64)
    assert valid.std(axis=1).min() > 10, "an image, not a flat fill"


def test_dem_and_habitat_rasters(region):
    with rasterio.open(region.dem) as src:
        assert src.crs.to_epsg() == 2154 and src.nodata is not None and src.dtypes[0] == "float32"
        dem = src.read(1)
    assert 790 <= dem.min() < 1000 and 2200 < dem.max() <= 2510
    with rasterio.open(region.habitat) as src:
        assert src.crs.to_epsg() == 2154 and src.nodata == 255 and src.res == (1.0, 1.0)
        assert src.colormap(1)[1][:3] != (0, 0, 0)
        habitat = src.read(1)
    codes = set(np.unique(habitat).tolist())
    assert codes == set(range(1, 8)) | {255}, "every habitat present"
    ortho_empty = (_pixels(region.ortho) == 0).all(axis=0)
    assert ((habitat == 255) == ortho_empty).all(), "habitat no-data exactly where the imagery has none"
    table = pd.read_csv(region.habitat_table)
    assert table["name"].tolist() == list(HABITATS) and table["code"].tolist() == list(range(1, 8))


def test_footprint_geojson_is_one_wgs84_polygon_around_the_cells(region, tables):
    frame = gpd.read_file(region.region_geojson)
    assert frame.crs.to_epsg() == 4326 and len(frame) == 1
    polygon = frame.geometry.iloc[0]
    assert polygon.is_valid and polygon.geom_type == "Polygon"
    assert 45.0 < polygon.centroid.y < 45.3 and 5.7 < polygon.centroid.x < 6.1
    cells = tables["cells"]
    assert all(polygon.contains(Point(lng, lat)) for lat, lng in zip(cells["lat"], cells["lng"]))


# --- tables -----------------------------------------------------------------------------------------------


def test_plots_and_releves_are_consistent_darwin_core_tables(region, tables):
    plots, releves = tables["plots"], tables["releves"]
    assert list(plots.columns) == ["releve_id", "decimalLatitude", "decimalLongitude", "x_l93", "y_l93",
                                   "elevation_m", "habitat", "moisture"]
    assert list(releves.columns) == ["releve_id", "decimalLatitude", "decimalLongitude", "species", "cover"]
    assert len(plots) == PLOTS and plots["releve_id"].is_unique
    assert set(releves["releve_id"]) == set(plots["releve_id"]), "every plot has vegetation"
    assert (releves["cover"] > 0).all() and (releves["cover"] <= 100).all()
    assert not releves.duplicated(["releve_id", "species"]).any()
    merged = releves.merge(plots, on="releve_id", suffixes=("", "_plot"))
    assert (merged["decimalLatitude"] == merged["decimalLatitude_plot"]).all()
    assert plots["moisture"].between(0, 1).all() and plots["elevation_m"].between(790, 2510).all()
    assert "water" not in set(plots["habitat"])
    # The habitat recorded at a plot is the habitat map's pixel under it.
    with rasterio.open(region.habitat) as src:
        codes = np.array([v[0] for v in src.sample(zip(plots["x_l93"], plots["y_l93"]))])
    assert (np.array(HABITATS)[codes - 1] == plots["habitat"].to_numpy()).all()


def test_every_plant_is_present_in_some_plots_and_absent_in_others(tables):
    species, releves = tables["species"], tables["releves"]
    plants = species.loc[species["group"] == "plant", "taxon"]
    assert len(plants) >= 80 and len(plants) == sum(len(g["species"]) for g in PLANT_GUILDS.values())
    frequency = releves.groupby("species").size().reindex(plants, fill_value=0) / PLOTS
    assert (frequency > 0).all(), list(frequency[frequency == 0].index)
    assert (frequency < 1).all()
    assert all(len(name.split()) == 2 and name[0].isupper() for name in plants)


def test_species_follow_their_habitats_and_co_occur_in_guilds(tables):
    plots, releves, species = tables["plots"], tables["releves"], tables["species"]
    habitat = plots.set_index("releve_id")["habitat"]
    guild = species.set_index("taxon")["guild"]
    rows = releves.assign(habitat=releves["releve_id"].map(habitat), guild=releves["species"].map(guild))
    share = pd.crosstab(rows["guild"], rows["habitat"], normalize="index")
    assert share.loc["conifer_forest"].idxmax() == "coniferous_forest"
    assert share.loc["broadleaf_forest"].idxmax() == "deciduous_forest"
    assert share.loc["alpine_pasture"].idxmax() == "alpine_pasture"
    # Members of one guild co-occur more often than members of different guilds.
    table = pd.crosstab(releves["releve_id"], releves["species"]).clip(upper=1)
    corr = np.corrcoef(table.to_numpy().T)
    guilds = guild.reindex(table.columns).to_numpy()
    same = guilds[:, None] == guilds[None, :]
    off_diagonal = ~np.eye(len(guilds), dtype=bool)
    assert np.nanmean(corr[same & off_diagonal]) > np.nanmean(corr[~same]) + 0.05


def test_butterflies_are_few_presence_only_records_near_roads(tables):
    records = tables["butterflies"]
    assert list(records.columns) == ["occurrenceID", "species", "decimalLatitude", "decimalLongitude",
                                     "occurrenceStatus", "coordinateUncertaintyInMeters"]
    counts = records["species"].value_counts()
    assert set(counts.index) == set(BUTTERFLIES) and len(counts) >= 10
    assert counts.between(20, 80).all()
    assert (records["occurrenceStatus"] == "PRESENT").all() and records["occurrenceID"].is_unique
    assert (records["coordinateUncertaintyInMeters"] > 0).all()
    species = tables["species"].set_index("taxon")
    plants = set(species.index[species["group"] == "plant"])
    for name in BUTTERFLIES:
        assert set(species.loc[name, "hosts"].split(";")) <= plants


def test_soil_counts_cover_every_group_at_every_site(tables):
    soil = tables["soil"]
    assert list(soil.columns) == ["site_id", "decimalLatitude", "decimalLongitude", "species", "individualCount"]
    sites, groups = soil["site_id"].nunique(), soil["species"].nunique()
    assert sites >= 150 and groups >= 5 and len(soil) == sites * groups
    assert pd.api.types.is_integer_dtype(soil["individualCount"]) and (soil["individualCount"] >= 0).all()
    assert (soil.groupby("species")["individualCount"].sum() > 0).all()


def test_truth_covers_every_taxon_in_every_cell(tables):
    truth, cells, species = tables["truth"], tables["cells"], tables["species"]
    assert str(truth["h3"].dtype) == "uint64" and str(cells["h3"].dtype) == "uint64"
    assert cells["h3"].is_unique and len(cells) > 30
    assert len(truth) == len(cells) * len(species)
    assert set(truth["taxon"]) == set(species["taxon"]) and set(truth["h3"]) == set(cells["h3"])
    probability = truth[truth["group"].isin(["plant", "butterfly"])]["suitability"]
    assert probability.between(0, 1).all() and probability.max() > 0.5
    assert (truth.loc[truth["group"] == "soil", "suitability"] >= 0).all()
    assert cells["valid_fraction"].between(0, 1).all() and cells["valid_fraction"].median() == 1.0
    assert set(cells["habitat"]) <= set(HABITATS)
    fractions = cells[[f"frac_{h}" for h in HABITATS]].sum(axis=1)
    assert np.allclose(fractions, 1.0)


def test_habitats_are_arranged_by_elevation_and_truth_follows_them(tables):
    cells, truth = tables["cells"], tables["truth"]
    elevation = cells.groupby("habitat")["elevation_m"].mean()
    assert elevation["deciduous_forest"] < elevation["coniferous_forest"] < elevation["alpine_pasture"]
    assert elevation["meadow"] < elevation["alpine_pasture"]
    spruce = truth[truth["taxon"] == "Picea abies"].merge(cells, on="h3")
    assert spruce["suitability"].corr(spruce["frac_coniferous_forest"]) > 0.3
    nardus = truth[truth["taxon"] == "Nardus stricta"].merge(cells, on="h3")
    assert nardus["suitability"].corr(nardus["elevation_m"]) > 0.3


# --- determinism ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_pixels_and_tables(region, tmp_path):
    again = make_sample(tmp_path / "again", seed=0, size_km=SIZE_KM, plots=PLOTS)
    for name in ("ortho", "dem", "habitat"):
        assert np.array_equal(_pixels(getattr(region, name)), _pixels(getattr(again, name)))
    for name in ("plots", "releves", "butterflies", "soil", "species", "habitat_table", "region_geojson", "readme"):
        assert getattr(region, name).read_bytes() == getattr(again, name).read_bytes(), name
    for name in ("truth", "cells"):
        assert pq.read_table(getattr(region, name)).equals(pq.read_table(getattr(again, name)))


def test_another_seed_gives_another_world(region, tmp_path):
    other = make_sample(tmp_path / "other", seed=1, size_km=SIZE_KM, plots=PLOTS)
    assert not np.array_equal(_pixels(region.ortho), _pixels(other.ortho))
    assert region.releves.read_bytes() != other.releves.read_bytes()
    assert not pq.read_table(region.truth).equals(pq.read_table(other.truth))


# --- API and CLI errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(size_km=0), dict(size_km=-1), dict(plots=0), dict(seed=-1),
                                    dict(size_km=float("nan")), dict(size_km=100)])
def test_bad_parameters_are_refused_before_any_work(tmp_path, kwargs):
    with pytest.raises(InvalidInputError):
        make_sample(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_open_refuses_an_incomplete_region(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        SampleRegion.open(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "ortho.tif").write_bytes(b"")
    with pytest.raises(MissingFileError, match="missing"):
        SampleRegion.open(tmp_path / "half")


def test_an_interrupted_build_leaves_nothing_behind(tmp_path, monkeypatch):
    from botaclip.sample import writers

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(writers, "write_parquet", fail)
    with pytest.raises(KeyboardInterrupt):
        make_sample(tmp_path / "out", size_km=0.5, plots=50)
    assert list(tmp_path.iterdir()) == []


def test_existing_directories_are_protected_and_overwrite_replaces_a_region(tmp_path, region):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="not a sample region"):
        make_sample(tmp_path / "data", size_km=0.5, plots=50, overwrite=True)
    assert (tmp_path / "data" / "mine.txt").read_text() == "keep"
    first = make_sample(tmp_path / "s", size_km=0.5, plots=50)
    with pytest.raises(InvalidInputError) as busy:
        make_sample(tmp_path / "s", size_km=0.5, plots=50)
    assert busy.value.params == ["out_dir", "overwrite"]  # the CLI spells them --out and --overwrite
    second = make_sample(tmp_path / "s", seed=3, size_km=0.5, plots=60, overwrite=True)
    assert second.root == first.root and second.metadata()["seed"] == 3 and second.metadata()["plots"] == 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "s"]


def test_ensure_sample_builds_once_into_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTACLIP_HOME", str(tmp_path / "home"))
    target = default_sample_dir(seed=2, size_km=0.5, plots=40)
    assert target.parent == tmp_path / "home" and "2" in target.name
    built = ensure_sample(seed=2, size_km=0.5, plots=40)
    assert built.root == target and built.metadata()["seed"] == 2
    from botaclip.sample import make as make_module

    monkeypatch.setattr(make_module, "generate", lambda *a, **k: pytest.fail("rebuilt a cached region"))
    assert ensure_sample(seed=2, size_km=0.5, plots=40) == built


def test_cli_help(cli_runner):
    result = cli_runner.invoke(cli, ["sample", "make", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--seed", "--size-km", "--plots"):
        assert option in result.output
    assert "sample" in cli_runner.invoke(cli, ["--help"]).output


@pytest.mark.parametrize("args", [["--size-km", "0"], ["--size-km", "-2"], ["--plots", "0"], ["--seed", "-1"]])
def test_cli_bad_numbers_give_one_line_errors(cli_runner, tmp_path, args):
    result = cli_runner.invoke(cli, ["sample", "make", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_refuses_an_existing_file_as_out(cli_runner, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("precious")
    result = cli_runner.invoke(cli, ["sample", "make", "--out", str(target), "--size-km", "0.5"])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "file" in lines[0]
    assert target.read_text() == "precious"


def test_cli_builds_a_region(cli_runner, tmp_path):
    result = cli_runner.invoke(cli, ["sample", "make", "--out", str(tmp_path / "r"), "--size-km", "0.5",
                                     "--plots", "30", "--seed", "4"])
    assert result.exit_code == 0, result.stderr
    assert "30 plots" in result.output
    meta = json.loads((tmp_path / "r" / "sample.json").read_text())
    assert (meta["seed"], meta["size_km"], meta["plots"]) == (4, 0.5, 30)
    assert shape(json.loads((tmp_path / "r" / "region.geojson").read_text())["features"][0]["geometry"]).is_valid
