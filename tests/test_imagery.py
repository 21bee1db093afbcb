"""Chip reading: geometry in projected and geographic rasters, nodata, mosaics, normalisation, bad input."""

from __future__ import annotations

import json

import h3
import numpy as np
import pytest
from pyproj import Transformer
from rasterio.transform import from_origin

from botaclip.errors import BotaclipError, InvalidInputError
from botaclip.imagery import BandSpec, ChipReader, band_spec
from botaclip.imagery.bands import IMAGENET_MEAN_255, IMAGENET_STD_255
from botaclip.imagery.stats import cache_dir

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),  # inside rasterio.transform
]

LAT, LNG = 45.19, 5.72  # near Grenoble, inside EPSG:2154's area of use
TO_L93 = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True)
# Bands that hold raw coordinates: mean 0, std 1 leaves values untouched.
COORDS = BandSpec("coords", (0.665, 0.56), (0.0, 0.0), (1.0, 1.0))


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTACLIP_CACHE_DIR", str(tmp_path / "cache"))


def coordinate_raster_l93(write_raster, name="coords_l93.tif", size=400, px=1.0, lat=LAT, lng=LNG):
    """A Lambert-93 raster whose band 1 is the column index and band 2 the row index, centred near (lat, lng)."""
    x, y = TO_L93.transform(lng, lat)
    west, north = np.floor(x) - size * px / 2 + 0.37, np.floor(y) + size * px / 2 - 0.21  # off-grid origin
    cols, rows = np.meshgrid(np.arange(size, dtype="float32"), np.arange(size, dtype="float32"))
    path = write_raster(name, np.stack([cols, rows]), "EPSG:2154", from_origin(west, north, px, px))
    return path, west, north


def test_presets_and_explicit_wavelengths():
    assert band_spec("rgb").wavelengths == (0.665, 0.56, 0.49)
    assert band_spec("RGBN").count == 4
    assert band_spec("sentinel2").count == 12 and not band_spec("sentinel2").has_fixed_stats
    # Explicit wavelengths equal to a preset pick up its statistics; others are custom.
    assert band_spec(wavelengths="0.665,0.56,0.49").mean == IMAGENET_MEAN_255
    custom = band_spec(wavelengths=[0.665, 0.842])
    assert custom.name == "custom" and custom.mean is None
    for bad in ("665,560,490", "a,b", ""):
        with pytest.raises(InvalidInputError):
            band_spec(wavelengths=bad)
    with pytest.raises(InvalidInputError, match="unknown band preset"):
        band_spec("hyperspectral")


@pytest.mark.parametrize("resampling", ["average", "bilinear"])
def test_chip_centre_maps_back_to_cell_centre_projected(write_raster, resampling):
    path, west, north = coordinate_raster_l93(write_raster)
    cell = h3.latlng_to_cell(LAT, LNG, 10)
    lat, lng = h3.cell_to_latlng(cell)
    x, y = TO_L93.transform(lng, lat)
    col_c, row_c = x - west, north - y  # 1 m pixels: pixel coordinates of the cell centre
    with ChipReader([path], COORDS, chip_m=100, size_px=33, resampling=resampling) as reader:
        chip = reader.read_cell(h3.str_to_int(cell))
        ((_, (left, bottom, right, top)),) = reader.chip_bounds(lat, lng)
    assert chip.data.shape == (2, 33, 33) and chip.valid_fraction == 1.0
    # A pixel holding value j spans [j, j+1): its centre is j + 0.5.
    centre_col, centre_row = chip.data[0, 16, 16] + 0.5, chip.data[1, 16, 16] + 0.5
    assert abs(centre_col - col_c) <= 0.5 and abs(centre_row - row_c) <= 0.5
    # 100 m square in the CRS, centred on the cell; rows run north to south, columns west to east.
    assert right - left == pytest.approx(100) and top - bottom == pytest.approx(100)
    assert (left + right) / 2 == pytest.approx(x) and (bottom + top) / 2 == pytest.approx(y)
    assert chip.data[0, 16, 0] < chip.data[0, 16, 32] and chip.data[1, 0, 16] < chip.data[1, 32, 16]
    assert chip.data[0, 16, 32] - chip.data[0, 16, 0] == pytest.approx(100 * 32 / 33, abs=1.0)


def test_chip_in_geographic_raster_is_metres_at_its_latitude(write_raster):
    dx = dy = 1e-5  # degrees: ~0.79 m of longitude and ~1.11 m of latitude at 45°
    size = 300
    west, north = LNG - size * dx / 2 + 3e-7, LAT + size * dy / 2 - 2e-7
    cols, rows = np.meshgrid(np.arange(size, dtype="float32"), np.arange(size, dtype="float32"))
    path = write_raster("coords_4326.tif", np.stack([cols, rows]), "EPSG:4326", from_origin(west, north, dx, dy))
    cell = h3.latlng_to_cell(LAT, LNG, 11)
    lat, lng = h3.cell_to_latlng(cell)
    with ChipReader([path], COORDS, chip_m=100, size_px=33, resampling="bilinear") as reader:
        chip = reader.read(lat, lng)
        ((_, (left, bottom, right, top)),) = reader.chip_bounds(lat, lng)
    assert chip.valid_fraction == 1.0
    assert abs(chip.data[0, 16, 16] + 0.5 - (lng - west) / dx) <= 0.5
    assert abs(chip.data[1, 16, 16] + 0.5 - (north - lat) / dy) <= 0.5
    # The square is 100 m on the ground: fewer degrees of latitude than of longitude at 45°N.
    assert (top - bottom) * 111_132 == pytest.approx(100, rel=0.01)
    assert (right - left) * 111_320 * np.cos(np.radians(lat)) == pytest.approx(100, rel=0.01)


def test_nodata_gives_valid_fraction_and_outside_chips_are_flagged(write_raster):
    x, y = TO_L93.transform(LNG, LAT)
    data = np.full((3, 300, 300), 120, dtype="uint8")
    data[:, :, :150] = 0  # west half is nodata
    path = write_raster("half.tif", data, "EPSG:2154", from_origin(x - 150, y + 150, 1, 1), nodata=0)
    with ChipReader([path], "rgb", chip_m=100, size_px=32) as reader:
        straddling = reader.read(LAT, LNG)  # chip centred on the nodata edge
        to_wgs = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True)
        lng_w, lat_w = to_wgs.transform(x - 90, y)
        lng_e, lat_e = to_wgs.transform(x + 90, y)
        west, east = reader.read(lat_w, lng_w), reader.read(lat_e, lng_e)
        far = reader.read(LAT + 1.0, LNG)
    assert straddling.valid_fraction == pytest.approx(0.5, abs=0.04)
    assert west.valid_fraction < 0.05 and east.valid_fraction == 1.0
    assert far.outside and far.valid_fraction == 0.0
    # Invalid pixels are zero after normalisation (the band mean), never raw nodata.
    assert np.all(straddling.data[:, :, :8] == 0)
    expected = (120 - np.array(IMAGENET_MEAN_255)) / np.array(IMAGENET_STD_255)
    np.testing.assert_allclose(east.data[:, 10, 10], expected, rtol=1e-5)


def test_mosaic_of_rasters_in_two_crs_fills_a_chip_across_the_seam(write_raster):
    x, y = TO_L93.transform(LNG, LAT)
    rng = np.random.default_rng(0)
    # West tile in Lambert-93; east tile in WGS84; they meet at the chip centre's meridian (approximately).
    west_tile = write_raster(
        "west.tif", rng.integers(1, 255, (3, 200, 120), dtype="uint8"), "EPSG:2154", from_origin(x - 120, y + 100, 1, 1),
        nodata=0,
    )
    dx = 1e-5
    east_tile = write_raster(
        "east.tif", rng.integers(1, 255, (3, 200, 150), dtype="uint8"), "EPSG:4326",
        from_origin(LNG - 2e-4, LAT + 9e-4, dx, dx), nodata=0,
    )
    with ChipReader([west_tile], "rgb", chip_m=100, size_px=32) as only_west:
        part = only_west.read(LAT, LNG)
    with ChipReader([west_tile, east_tile], "rgb", chip_m=100, size_px=32) as mosaic:
        whole = mosaic.read(LAT, LNG)
        assert len(mosaic.chip_bounds(LAT, LNG)) == 2
    assert 0.4 < part.valid_fraction < 1.0
    assert whole.valid_fraction == 1.0
    # The first raster wins where both have data.
    covered = np.any(part.data != 0, axis=0)
    np.testing.assert_array_equal(whole.data[:, covered], part.data[:, covered])


def test_per_raster_statistics_are_computed_once_and_cached(write_raster):
    x, y = TO_L93.transform(LNG, LAT)
    rng = np.random.default_rng(1)
    data = rng.normal([[[1000.0]], [[3000.0]]], [[[100.0]], [[300.0]]], (2, 200, 200)).astype("float32")
    path = write_raster("ms.tif", data, "EPSG:2154", from_origin(x - 100, y + 100, 1, 1))
    spec = band_spec(wavelengths="0.842,1.61")
    with ChipReader([path], spec, chip_m=100, size_px=32) as reader:
        assert reader.normalization == "stats"
        chip = reader.read(LAT, LNG)
    files = list(cache_dir().glob("*.json"))
    assert len(files) == 1
    cached = json.loads(files[0].read_text())
    np.testing.assert_allclose(cached["mean"], [1000, 3000], rtol=0.01)
    np.testing.assert_allclose(cached["std"], [100, 300], rtol=0.05)
    # Normalised chips are centred and scaled; the cache is reused as is (even if edited, to prove it is read).
    assert abs(chip.data.mean()) < 0.2 and 0.1 < chip.data.std() < 1.0
    cached["mean"] = [0.0, 0.0]
    files[0].write_text(json.dumps(cached))
    with ChipReader([path], spec, chip_m=100, size_px=32) as reader:
        assert reader.read(LAT, LNG).data.mean() > 5


def test_rgb_preset_normalises_with_imagenet_statistics(write_raster):
    x, y = TO_L93.transform(LNG, LAT)
    data = np.stack([np.full((150, 150), v, dtype="uint8") for v in (124, 116, 104)])
    path = write_raster("flat.tif", data, "EPSG:2154", from_origin(x - 75, y + 75, 1, 1))
    with ChipReader([path], "rgb", chip_m=100, size_px=16) as reader:
        chip = reader.read(LAT, LNG)
    np.testing.assert_allclose(chip.data[:, 8, 8], (np.array([124, 116, 104]) - IMAGENET_MEAN_255) / IMAGENET_STD_255,
                               atol=1e-5)


def test_bad_rasters_raise_one_line_errors(write_raster, tmp_path):
    x, y = TO_L93.transform(LNG, LAT)
    good = write_raster("good.tif", np.ones((3, 50, 50), "uint8"), "EPSG:2154", from_origin(x, y, 1, 1))
    no_crs = write_raster("nocrs.tif", np.ones((3, 50, 50), "uint8"), None, from_origin(x, y, 1, 1))
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    cases = {
        str(tmp_path / "missing.tif"): "not found",
        str(text): "not a raster",
        no_crs: "no coordinate reference system",
    }
    for path, message in cases.items():
        with pytest.raises(BotaclipError, match=message):
            ChipReader([path], "rgb")
    with pytest.raises(InvalidInputError, match="3 band") as bands:
        ChipReader([good], "rgbn")
    assert bands.value.params == ["bands", "wavelengths"]
    with pytest.raises(InvalidInputError, match="smaller than one pixel") as small:
        ChipReader([good], "rgb", chip_m=0.5)
    assert small.value.params == ["chip_m"]
    for chip_m in (0, -5, float("nan")):
        with pytest.raises(InvalidInputError, match="chip size") as bad:
            ChipReader([good], "rgb", chip_m=chip_m)
        assert bad.value.params == ["chip_m"]


def test_many_tiles_keep_a_bounded_number_of_open_handles(write_raster, monkeypatch):
    import botaclip.imagery.chips as chips_module

    monkeypatch.setattr(chips_module, "MAX_OPEN_PER_THREAD", 2)
    x, y = TO_L93.transform(LNG, LAT)
    # Four 30 m tiles in a row (120 m); the 100 m chip at the row's centre needs all four.
    tiles = [
        write_raster(f"tile{i}.tif", np.full((3, 100, 30), 10 * (i + 1), "uint8"), "EPSG:2154",
                     from_origin(x - 60 + 30 * i, y + 50, 1, 1))
        for i in range(4)
    ]
    raw = BandSpec("raw", (0.665, 0.56, 0.49), (0.0,) * 3, (1.0,) * 3)
    with ChipReader(tiles, raw, chip_m=100, size_px=20) as reader:
        chip = reader.read(LAT, LNG)
        assert len(reader._local.handles) == 2 and len(reader._handles) == 2
        assert chip.valid_fraction == 1.0
        # West to east the chip crosses tiles 1..4 (values 10..40), never mixing them up.
        assert chip.data[0, 10, 0] == 10 and chip.data[0, 10, -1] == 40
        assert set(np.unique(chip.data[0])) <= {10.0, 20.0, 30.0, 40.0}
