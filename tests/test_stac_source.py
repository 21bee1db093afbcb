"""StacSource, the STAC imagery options (stac, assets, sort) that `botaclip index` and `botaclip train` share:
validated in one place with the same one-line errors for both jobs, reached by the same flat option names, and
turned into rasters and bands by one function (stac_inputs) that both pipelines call."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from botaclip.config import build, field_names, with_options
from botaclip.errors import InvalidInputError
from botaclip.pipeline import ChipConfig, IndexConfig, run_index
from botaclip.pipeline.stac_source import SORTS, StacSource, stac_inputs
from botaclip.pipeline.train_config import FeatureConfig, TrainJobConfig, TrainOptions

ROOT = Path(__file__).resolve().parents[1]
IO = dict(releves="r.csv", out="a.pt")


@pytest.mark.parametrize("options, params, message", [
    (dict(stac="item.json"), ["stac", "assets"],
     "stac needs assets: the asset keys to read, in band order, e.g. red,green,blue,nir"),
    (dict(assets="red"), ["assets", "stac"], "assets picks the assets of a STAC item; give stac too"),
    (dict(stac="item.json", assets="red", sort="newest"), ["sort"],
     "sort must be one of datetime, cloud, got 'newest'"),
])
def test_one_validation_one_message_for_both_jobs(options, params, message):
    errors = []
    for make in (lambda: StacSource(**options), lambda: build(IndexConfig, **options),
                 lambda: TrainOptions(**IO, imagery=[] if "stac" in options else ["o.tif"], **options)):
        with pytest.raises(InvalidInputError) as info:
            make()
        errors.append(info.value)
    assert [str(e) for e in errors] == [message] * 3
    assert all(e.params == params and isinstance(e, ValueError) for e in errors)


def test_imagery_and_stac_together_are_refused_alike_by_both_jobs(tmp_path):
    stac = dict(stac=str(tmp_path / "item.json"), assets="red")
    with pytest.raises(InvalidInputError) as train:
        TrainOptions(**IO, imagery=["o.tif"], **stac)
    with pytest.raises(InvalidInputError) as index:
        run_index("sample", [str(tmp_path / "o.tif")], tmp_path / "store", **stac)
    assert str(train.value) == str(index.value) == "give either imagery or stac, not both"
    assert train.value.params == index.value.params == ["imagery", "stac"]
    assert not (tmp_path / "store").exists()


def test_flat_options_and_the_nested_source_are_one_config():
    source = StacSource("search.json", "red,green,blue,nir", "cloud")
    flat = dict(stac="search.json", assets="red,green,blue,nir", sort="cloud")
    assert build(IndexConfig, **flat) == IndexConfig(chips=ChipConfig(stac_source=source))
    assert build(ChipConfig, **flat) == ChipConfig(stac_source=source)
    assert TrainOptions(**IO, imagery=[], **flat) == TrainJobConfig(
        "r.csv", (), "a.pt", features=FeatureConfig(stac_source=source))
    # one leaf overridden, the others kept; the group's own name is no option of either job (nor of the CLIs)
    cfg = with_options(build(IndexConfig, **flat), sort="datetime", chip_m=50)
    assert cfg.chips.stac_source == StacSource("search.json", "red,green,blue,nir") and cfg.chips.chip_m == 50.0
    for job in (IndexConfig, TrainJobConfig):
        assert {"stac", "assets", "sort"} <= field_names(job) and "stac_source" not in field_names(job)
    assert not StacSource().given and source.given
    assert ChipConfig().stac_source == FeatureConfig().stac_source == StacSource()


def test_sorts_mirror_the_imagery_module_and_both_commands_offer_them():
    from botaclip.commands.index import index
    from botaclip.commands.train import train
    from botaclip.imagery import stac

    assert SORTS == stac.SORTS  # mirrored, not imported: the config modules stay free of rasterio
    for command in (index, train):
        option = {p.name: p for p in command.params}["sort"]
        assert list(option.type.choices) == list(SORTS) and option.default == StacSource().sort


def _item(folder: Path, write_cog) -> Path:
    """A STAC item of two single-band 8-bit COGs (red, nir) with their eo:bands centre wavelengths."""
    assets = {}
    for i, (key, wavelength) in enumerate((("red", 0.665), ("nir", 0.842))):
        data = np.random.default_rng(i).integers(1, 255, (1, 64, 64)).astype("uint8")
        href = write_cog(folder / f"{key}.tif", data, "EPSG:2154", from_origin(915_000.0, 6_455_000.0, 10, 10))
        assets[key] = {"href": href, "eo:bands": [{"name": key, "center_wavelength": wavelength}]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "S1", "geometry": None, "links": [],
            "properties": {"datetime": "2024-06-01T00:00:00Z"}, "assets": assets}
    path = folder / "item.json"
    path.write_text(json.dumps(item))
    return path


def test_stac_inputs_turns_a_source_into_rasters_and_bands(tmp_path, write_cog):
    item = _item(tmp_path, write_cog)
    said: list[str] = []
    paths, spec = stac_inputs(StacSource(str(item), "nir,red"), [], said.append, cache=tmp_path / "vrt")
    assert len(paths) == 1 and Path(paths[0]).parent == tmp_path / "vrt"
    with rasterio.open(paths[0]) as ds:  # one VRT, the assets in the order asked
        assert ds.count == 2
        with rasterio.open(tmp_path / "nir.tif") as nir:
            assert np.array_equal(ds.read(1), nir.read(1).astype(ds.dtypes[0]))
    assert spec.wavelengths == (0.842, 0.665)
    assert said == [f"imagery: 1 STAC item(s) from {item} (S1)"]
    # index's --wavelengths replace the item's; a band preset replaces them too (train without --bands: none)
    _, given = stac_inputs(StacSource(str(item), "nir,red"), [], said.append, wavelengths=[0.85, 0.66],
                           cache=tmp_path / "vrt")
    assert given.wavelengths == (0.85, 0.66)
    # without STAC: the raster files as given, no bands, nothing said
    assert stac_inputs(StacSource(), ("a.tif", "b.tif"), said.append) == (["a.tif", "b.tif"], None)
    assert len(said) == 2


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """The botaclip modules ``path`` imports at module level, and those it imports anywhere."""
    tree = ast.parse(path.read_text())
    top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("botaclip")}
    anywhere = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                and (n.module or "").startswith("botaclip")}
    return top, anywhere


def test_both_pipelines_resolve_stac_through_stac_inputs_and_the_configs_stay_light():
    pipeline = ROOT / "botaclip" / "pipeline"
    for job in ("index.py", "train.py"):
        top, anywhere = _imports(pipeline / job)
        assert "botaclip.pipeline.stac_source" in top and "botaclip.imagery.stac" not in anywhere, job
        assert "stac_inputs(" in (pipeline / job).read_text(), job
    for config in ("stac_source.py", "index_config.py", "train_config.py"):
        top, _ = _imports(pipeline / config)
        assert not {m for m in top if m.startswith("botaclip.imagery")}, config
