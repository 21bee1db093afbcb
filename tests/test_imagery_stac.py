"""STAC items as imagery (``--stac``/``--assets``): items and ItemCollections written by the tests, their assets
single-band COGs on disk or behind the local HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from botaclip.cli import cli
from botaclip.errors import InvalidInputError, MissingFileError
from botaclip.imagery import ChipReader
from botaclip.imagery.stac import stac_imagery

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

X0, Y0 = 915_000.0, 6_455_000.0  # Lambert-93
WAVELENGTHS = {"red": 0.665, "green": 0.56, "blue": 0.49, "nir": 0.842}
SCALE, OFFSET, NODATA = 0.0001, -0.1, 0
TINY_CLI = ["--backbone", "dofa-tiny", "--size-px", "32", "--batch-size", "8", "--workers", "2", "--quiet"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTACLIP_CACHE_DIR", str(tmp_path / "cache"))


def _dn(seed: int, size: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1000, 9000, (size // 8, size // 8))
    return np.repeat(np.repeat(coarse, 8, 0), 8, 1).astype("uint16")


def _write_assets(folder, write_cog, seed=0, keys=("red", "green", "blue", "nir"), pixel=10.0, size=128,
                  fill=None):
    """Single-band uint16 COGs ``<key>.tif`` in ``folder`` (nodata 0 in the top-left 8 x 8 px); their DNs."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, key in enumerate(keys):
        dn = np.full((size, size), fill, dtype="uint16") if fill is not None else _dn(seed * 10 + i, size)
        dn[:8, :8] = NODATA
        write_cog(folder / f"{key}.tif", dn[None], "EPSG:2154", from_origin(X0, Y0, pixel, pixel), nodata=NODATA,
                  blocksize=64)
        out[key] = dn
    return out


def _item(item_id, hrefs: dict, version="1.0.0", when="2024-06-01T10:00:00Z", cloud=None, wavelengths=True,
          self_href=None) -> dict:
    """A STAC item whose assets are ``hrefs`` (key -> href), with the eo/raster metadata of ``version``."""
    assets = {}
    for key, href in hrefs.items():
        asset = {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]}
        if version == "1.0.0":
            band = {"name": key, "common_name": key}
            if wavelengths:
                band["center_wavelength"] = WAVELENGTHS[key]
            asset["eo:bands"] = [band]
            asset["raster:bands"] = [{"nodata": NODATA, "scale": SCALE, "offset": OFFSET, "data_type": "uint16"}]
        else:  # STAC 1.1: `bands` with namespaced fields
            band = {"name": key, "eo:common_name": key, "nodata": NODATA, "raster:scale": SCALE,
                    "raster:offset": OFFSET, "data_type": "uint16"}
            if wavelengths:
                band["eo:center_wavelength"] = WAVELENGTHS[key]
            asset["bands"] = [band]
        assets[key] = asset
    props = {"datetime": when}
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    lng, lat = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True).transform(X0, Y0)
    item = {"type": "Feature", "stac_version": version, "id": item_id, "properties": props,
            "geometry": {"type": "Point", "coordinates": [lng, lat]}, "bbox": [lng, lat, lng, lat],
            "links": [], "assets": assets,
            "stac_extensions": [] if version != "1.0.0" else [
                "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                "https://stac-extensions.github.io/raster/v1.1.0/schema.json"]}
    if self_href:
        item["links"].append({"rel": "self", "href": self_href})
    return item


def _latlng(x, y):
    lng, lat = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True).transform(x, y)
    return lat, lng


def _bbox(x, y, half):
    t = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True)
    (w, e), (s, n) = t.transform([x - half, x + half], [y - half, y + half])
    return f"{w},{s},{e},{n}"


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_item_assets_stack_with_wavelengths_nodata_and_scale(tmp_path, write_cog, version):
    dns = _write_assets(tmp_path / "scene" / "data", write_cog)
    item = tmp_path / "scene" / "item.json"
    # Relative hrefs resolve against the item's own location.
    item.write_text(json.dumps(_item("S1", {k: f"./data/{k}.tif" for k in ("nir", "red")}, version)))
    found = stac_imagery(str(item), "nir,red")
    assert found.wavelengths == (0.842, 0.665) and found.items == ("S1",) and len(found.paths) == 1
    assert not found.eight_bit and not found.band_spec().has_fixed_stats
    with rasterio.open(found.paths[0]) as ds:
        assert ds.count == 2 and ds.dtypes[0] == "float32" and ds.crs.to_epsg() == 2154
        data = ds.read(masked=True)
    expect = dns["nir"] * SCALE + OFFSET
    np.testing.assert_allclose(data[0].filled(np.nan)[8:, 8:], expect[8:, 8:], rtol=1e-5)
    assert data.mask[0, :8, :8].all() and not data.mask[0, 8:, 8:].any()  # nodata DN 0 -> masked
    np.testing.assert_allclose(data[1][8:, 8:], dns["red"][8:, 8:] * SCALE + OFFSET, rtol=1e-5)
    # The VRT is an ordinary raster for the chip reader (custom wavelengths: per-raster statistics).
    reader = ChipReader(list(found.paths), found.band_spec(), chip_m=200, size_px=16)
    chip = reader.read(*_latlng(X0 + 600, Y0 - 600))
    assert chip.valid_fraction == 1.0 and reader.normalization == "stats"
    reader.close()


def test_item_served_over_http_resolves_relative_hrefs_against_its_url(http_server, write_cog):
    dns = _write_assets(http_server.root / "s2" / "data", write_cog, keys=("red", "green", "blue"))
    (http_server.root / "s2" / "item.json").write_text(json.dumps(
        _item("S2", {k: f"data/{k}.tif" for k in ("red", "green", "blue")}, "1.1.0")))
    found = stac_imagery(http_server.url("s2/item.json"), ["red", "green", "blue"])
    vrt = open(found.paths[0]).read()
    assert f"/vsicurl/{http_server.url('s2/data/red.tif')}" in vrt
    with rasterio.open(found.paths[0]) as ds:
        np.testing.assert_allclose(ds.read(3)[8:, 8:], dns["blue"][8:, 8:] * SCALE + OFFSET, rtol=1e-5)
    assert found.wavelengths == (0.665, 0.56, 0.49)


def test_item_collection_mosaic_most_recent_or_least_cloudy_first(tmp_path, write_cog):
    old = _write_assets(tmp_path / "old", write_cog, keys=("red", "green", "blue"), fill=2000)
    new = _write_assets(tmp_path / "new", write_cog, keys=("red", "green", "blue"), fill=6000)
    assert old and new
    items = [
        _item("old", {k: str(tmp_path / "old" / f"{k}.tif") for k in ("red", "green", "blue")},
              when="2023-05-01T00:00:00Z", cloud=2.0),
        _item("new", {k: str(tmp_path / "new" / f"{k}.tif") for k in ("red", "green", "blue")},
              when="2024-05-01T00:00:00Z", cloud=40.0),
    ]
    path = tmp_path / "search.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items, "links": []}))
    newest = stac_imagery(str(path), "red,green,blue")
    clearest = stac_imagery(str(path), "red,green,blue", sort="cloud")
    assert newest.items == ("new", "old") and clearest.items == ("old", "new")
    # The first item wins where they overlap: its reflectance is in the chip.
    for found, value in ((newest, 6000 * SCALE + OFFSET), (clearest, 2000 * SCALE + OFFSET)):
        with rasterio.open(found.paths[0]) as ds:
            assert math.isclose(float(ds.read(1)[50, 50]), value, rel_tol=1e-5)
        reader = ChipReader(list(found.paths), "rgb", chip_m=100, size_px=8, normalization="preset")
        chip = reader.read(*_latlng(X0 + 600, Y0 - 600))
        mean = reader.describe()["normalization_stats"][0]["mean"][0]
        std = reader.describe()["normalization_stats"][0]["std"][0]
        np.testing.assert_allclose(chip.data[0] * std + mean, value, rtol=1e-4)
        reader.close()


def test_assets_of_different_pixel_sizes_share_the_finest_grid(tmp_path, write_cog):
    _write_assets(tmp_path / "a", write_cog, keys=("red",), pixel=10.0, size=128)
    _write_assets(tmp_path / "a", write_cog, keys=("nir",), pixel=20.0, size=64, fill=5000)
    item = tmp_path / "a" / "item.json"
    item.write_text(json.dumps(_item("mixed", {"red": "red.tif", "nir": "nir.tif"})))
    found = stac_imagery(str(item), "red,nir")
    with rasterio.open(found.paths[0]) as ds:
        assert (ds.width, ds.height, ds.res) == (128, 128, (10.0, 10.0))
        nir = ds.read(2)
    assert math.isclose(float(nir[64, 64]), 5000 * SCALE + OFFSET, rel_tol=1e-5)


# -- bad input ------------------------------------------------------------------------------------------------


def test_missing_asset_says_which_and_what_there_is(tmp_path, write_cog):
    _write_assets(tmp_path, write_cog, keys=("red", "green"))
    item = tmp_path / "item.json"
    item.write_text(json.dumps(_item("S3", {"red": "red.tif", "green": "green.tif"})))
    with pytest.raises(InvalidInputError, match=r"STAC item S3 has no asset 'swir' \(its assets: green, red\)"):
        stac_imagery(str(item), "red,swir")


def test_item_without_wavelengths_says_how_to_pass_them(tmp_path, write_cog):
    _write_assets(tmp_path, write_cog, keys=("red", "green", "blue"))
    item = tmp_path / "item.json"
    item.write_text(json.dumps(_item("S4", {k: f"{k}.tif" for k in ("red", "green", "blue")}, wavelengths=False)))
    with pytest.raises(InvalidInputError) as err:
        stac_imagery(str(item), "red,green,blue")
    text = err.value.render(lambda name: "--" + name)
    assert "no centre wavelength for asset(s) blue, green, red" in text and "--wavelengths 0.665,0.56,0.49" in text
    found = stac_imagery(str(item), "red,green,blue", wavelengths=(0.665, 0.56, 0.49))
    assert found.wavelengths == (0.665, 0.56, 0.49)
    with pytest.raises(InvalidInputError, match="has 2 value"):
        stac_imagery(str(item), "red,green,blue", wavelengths=(0.665, 0.56))


def test_not_stac_missing_file_and_404(tmp_path, http_server):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"type": "Catalog", "id": "c"}))
    with pytest.raises(InvalidInputError, match="is not a STAC item"):
        stac_imagery(str(bad), "red")
    bad.write_text("{not json")
    with pytest.raises(InvalidInputError, match="is not JSON"):
        stac_imagery(str(bad), "red")
    with pytest.raises(MissingFileError, match="STAC file not found"):
        stac_imagery(str(tmp_path / "none.json"), "red")
    with pytest.raises(MissingFileError, match=r"was not found on the server \(HTTP 404\)"):
        stac_imagery(http_server.url("items.json"), "red")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InvalidInputError, match="holds no STAC items"):
        stac_imagery(str(empty), "red")


def test_asset_href_that_404s(http_server, write_cog):
    _write_assets(http_server.root, write_cog, keys=("red",))
    (http_server.root / "item.json").write_text(json.dumps(_item("S5", {"red": "red.tif", "nir": "nir.tif"})))
    with pytest.raises(MissingFileError, match=r"nir.tif was not found on the server \(HTTP 404\)"):
        stac_imagery(http_server.url("item.json"), "red,nir")


# -- the CLI ----------------------------------------------------------------------------------------------------


def test_index_from_a_stac_url(http_server, write_cog, tmp_path, cli_runner):
    from botaclip.store import Store

    _write_assets(http_server.root / "data", write_cog)
    (http_server.root / "item.json").write_text(json.dumps(
        _item("S6", {k: f"data/{k}.tif" for k in ("red", "green", "blue", "nir")})))
    res = cli_runner.invoke(cli, ["index", "--region", _bbox(X0 + 600, Y0 - 600, 150), "--stac",
                                  http_server.url("item.json"), "--assets", "red,green,blue,nir", "--store",
                                  str(tmp_path / "s"), "--resolution", "11", "--chip-m", "100", *TINY_CLI])
    assert res.exit_code == 0, res.output
    assert "imagery: 1 STAC item(s)" in res.stderr
    store = Store.open(tmp_path / "s")
    name = store.feature_sets()[0]
    assert len(store.existing_cells(name)) > 3
    assert store.info(name)["provenance"]["wavelengths"] == [0.665, 0.56, 0.49, 0.842]


@pytest.mark.parametrize("args, fragment", [
    (["--stac", "item.json"], "--stac needs --assets"),
    (["--assets", "red"], "--assets picks the assets of a STAC item; give --stac too"),
    (["--stac", "item.json", "--assets", "red", "--imagery", "a.tif"], "give either --imagery or --stac"),
    (["--stac", "nope.json", "--assets", "red"], "STAC file not found: nope.json"),
])
def test_index_stac_option_errors(tmp_path, cli_runner, write_cog, args, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_assets(tmp_path, write_cog, keys=("red",))
    (tmp_path / "item.json").write_text(json.dumps(_item("S7", {"red": "red.tif"})))
    res = cli_runner.invoke(cli, ["index", "--region", _bbox(X0 + 600, Y0 - 600, 100), "--store",
                                  str(tmp_path / "s"), *TINY_CLI, *args])
    assert res.exit_code != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.stderr
    assert not (tmp_path / "s").exists()


def test_without_pystac_says_which_extra_to_install(tmp_path, write_cog, monkeypatch):
    import sys

    from botaclip.errors import MissingDependencyError

    _write_assets(tmp_path, write_cog, keys=("red",))
    (tmp_path / "item.json").write_text(json.dumps(_item("S8", {"red": "red.tif"})))
    monkeypatch.setitem(sys.modules, "pystac", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'botaclip\[stac\]'"):
        stac_imagery(str(tmp_path / "item.json"), "red")


def torch_load(path):
    import torch

    return torch.load(path, weights_only=True)


def test_train_from_a_stac_item_equals_train_from_the_file(releve_landscape, tmp_path, cli_runner):
    with rasterio.open(releve_landscape["tif"]) as ds:
        assert ds.count == 4
        nodata = ds.nodata
    rgbn = [("red", 0.665), ("green", 0.56), ("blue", 0.49), ("nir", 0.842)]
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "plots-ortho", "geometry": None, "links": [],
            "properties": {"datetime": "2024-06-01T00:00:00Z"},
            "assets": {"ortho": {"href": str(releve_landscape["tif"]),
                                 "eo:bands": [{"name": n, "center_wavelength": w} for n, w in rgbn],
                                 "raster:bands": [{"nodata": nodata}] * 4 if nodata is not None else []}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    args = ["train", "--releves", str(releve_landscape["releves"]), "--backbone", "dofa-tiny", "--chip-m", "40",
            "--size-px", "32", "--views", "2", "--batch-size", "32", "--block-res", "9", "--min-plots", "3",
            "--device", "cpu", "--epochs", "1", "--cache-dir", str(tmp_path / "features")]
    logs = []
    for name, source in (("stac", ["--stac", str(tmp_path / "item.json"), "--assets", "ortho"]),
                         ("file", ["--imagery", str(releve_landscape["tif"])])):
        out = tmp_path / f"{name}.pt"
        res = cli_runner.invoke(cli, [*args, *source, "--out", str(out)])
        assert res.exit_code == 0, res.stderr
        logs.append(json.loads(out.with_suffix(".jsonl").read_text().splitlines()[-1]))
        if name == "stac":
            assert "imagery: 1 STAC item(s)" in res.stderr
            assert torch_load(out)["backbone"]["bands"] == "rgbn"  # 8-bit, unscaled: the rgbn preset as the file
    # The same pixels and bands: the item's VRT is float32, so resampled chip values are not rounded to whole
    # 8-bit levels as they are from the uint8 file; the losses agree to well under 1 %.
    assert logs[0]["val_siglip"] == pytest.approx(logs[1]["val_siglip"], rel=5e-3)
    res = cli_runner.invoke(cli, [*args, "--stac", str(tmp_path / "item.json"), "--out", str(tmp_path / "x.pt")])
    assert res.exit_code != 0 and "--stac needs --assets" in res.stderr and "Traceback" not in res.stderr


def test_index_stac_without_wavelengths_then_with_them(tmp_path, write_cog, cli_runner):
    from botaclip.store import Store

    _write_assets(tmp_path, write_cog, keys=("red", "green", "blue"))
    (tmp_path / "item.json").write_text(json.dumps(
        _item("S9", {k: f"{k}.tif" for k in ("red", "green", "blue")}, "1.1.0", wavelengths=False)))
    args = ["index", "--region", _bbox(X0 + 600, Y0 - 600, 100), "--stac", str(tmp_path / "item.json"), "--assets",
            "red,green,blue", "--store", str(tmp_path / "s"), "--resolution", "11", *TINY_CLI]
    res = cli_runner.invoke(cli, args)
    assert res.exit_code != 0 and "Traceback" not in res.stderr
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")][0]
    assert "STAC item S9 gives no centre wavelength for asset(s) blue, green, red" in line
    assert "pass --wavelengths with one value in µm per band in --assets order" in line
    assert not (tmp_path / "s").exists()
    res = cli_runner.invoke(cli, [*args, "--wavelengths", "0.665,0.56,0.49"])
    assert res.exit_code == 0, res.stderr
    store = Store.open(tmp_path / "s")
    assert store.feature_sets() == ["dofa_tiny_rgb"]  # the rgb wavelengths: the rgb preset's name
    # ... but not its ImageNet 0-255 statistics: scaled reflectances get per-raster statistics.
    assert store.info("dofa_tiny_rgb")["provenance"]["normalization"] == "stats"
