"""Regions -> H3 cells partition by partition, and the prefetching chip reader."""

from __future__ import annotations

import geopandas as gpd
import h3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from botaclip.errors import InvalidInputError
from botaclip.imagery import ChipReader, PrefetchStats, iter_region_cells, parse_region, prefetch_chips
from botaclip.imagery.regions import cell_centres

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),  # inside rasterio.transform
]

LAT, LNG = 45.19, 5.72
TO_L93 = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True)
BBOX = f"{LNG - 0.004},{LAT - 0.003},{LNG + 0.004},{LAT + 0.003}"


def collect(region, footprint, res=10, pres=7):
    parts = list(iter_region_cells(region, footprint, res, pres))
    cells = np.concatenate([c for _, c in parts])
    return parts, cells


def test_bbox_region_cells_have_centres_inside_and_are_grouped_by_parent():
    region = parse_region(BBOX)
    footprint = shapely.box(-180, -90, 180, 90)
    parts, cells = collect(region, footprint, pres=9)
    assert len(parts) >= 3  # res-9 parents are ~0.1 km²; the ~0.4 km² bbox spans several
    lat, lng = cell_centres(cells)
    assert shapely.contains_xy(region.geometry, lng, lat).all()
    assert len(np.unique(cells)) == len(cells)
    # The same set as H3's own polygon fill of the bbox.
    expected = {h3.str_to_int(c) for c in h3.geo_to_cells(region.geometry.__geo_interface__, 10)}
    assert set(cells.tolist()) == expected
    for parent, part in parts:
        assert all(h3.cell_to_parent(h3.int_to_str(int(c)), 9) == h3.int_to_str(parent) for c in part.tolist())
        assert np.all(np.diff(part.astype("int64")) > 0)


def test_region_is_limited_to_the_imagery_footprint():
    region = parse_region(BBOX)
    footprint = shapely.box(LNG, LAT, LNG + 1, LAT + 1)  # north-east quarter only
    _, cells = collect(region, footprint)
    lat, lng = cell_centres(cells)
    assert (lat >= LAT).all() and (lng >= LNG).all()
    with pytest.raises(InvalidInputError, match="does not intersect the imagery"):
        collect(region, shapely.box(0, 0, 1, 1))


def test_polygon_files_in_any_crs(tmp_path):
    x, y = TO_L93.transform(LNG, LAT)
    square = shapely.box(x - 300, y - 300, x + 300, y + 300)
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:2154").to_file(tmp_path / "r.gpkg")
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:2154").to_parquet(tmp_path / "r.parquet")
    gpd.GeoDataFrame(geometry=[square], crs="EPSG:2154").to_crs(4326).to_file(tmp_path / "r.geojson")
    world = shapely.box(-180, -90, 180, 90)
    sets = [set(collect(parse_region(str(tmp_path / f)), world)[1].tolist()) for f in ("r.gpkg", "r.parquet", "r.geojson")]
    assert sets[0] == sets[1] == sets[2]
    # ~0.36 km² at ~0.015 km² per res-10 cell.
    assert 15 < len(sets[0]) < 35


def test_cell_files_text_and_parquet_and_coarser_cells(tmp_path):
    cells = [h3.latlng_to_cell(LAT + d, LNG, 10) for d in (0.0, 0.002, 0.004)]
    (tmp_path / "cells.txt").write_text("h3\n" + "\n".join(cells) + "\n" + cells[0] + "\n")
    pq.write_table(pa.table({"h3": [h3.str_to_int(c) for c in cells]}), tmp_path / "cells.parquet")
    world = shapely.box(-180, -90, 180, 90)
    want = sorted(h3.str_to_int(c) for c in cells)
    for name in ("cells.txt", "cells.parquet"):
        _, got = collect(parse_region(str(tmp_path / name)), world)
        assert sorted(got.tolist()) == want
    (tmp_path / "coarse.txt").write_text(h3.latlng_to_cell(LAT, LNG, 8) + "\n")
    _, got = collect(parse_region(str(tmp_path / "coarse.txt")), world)
    assert len(got) == 49  # a res-8 cell has 7² res-10 children
    (tmp_path / "bad.txt").write_text("not-a-cell\n")
    with pytest.raises(InvalidInputError, match="not an H3 cell"):
        parse_region(str(tmp_path / "bad.txt"))


@pytest.mark.parametrize("spec", ["1,2,3", "10,50,5,60", "a,b,c,d", "/no/such/file.gpkg"])
def test_bad_region_specs(spec):
    with pytest.raises(InvalidInputError):
        parse_region(spec)


def test_invalid_resolution():
    with pytest.raises(InvalidInputError, match="0 to 15"):
        collect(parse_region(BBOX), shapely.box(-180, -90, 180, 90), res=16)


def test_prefetching_matches_a_plain_read_in_order_and_bounds_the_lookahead(write_raster):
    x, y = TO_L93.transform(LNG, LAT)
    data = np.random.default_rng(0).integers(1, 255, (3, 500, 500), dtype="uint8")
    data[:, :, :200] = 0  # west part is nodata
    path = write_raster("ortho.tif", data, "EPSG:2154", from_origin(x - 250, y + 250, 1, 1), nodata=0)
    with ChipReader([path], "rgb", chip_m=100, size_px=16) as reader:
        region = parse_region(BBOX)  # larger than the raster: some chips fall outside
        parts = list(iter_region_cells(region, shapely.box(-180, -90, 180, 90), 10, 8))
        parts.insert(1, (123, np.zeros(0, dtype="uint64")))  # an empty partition is still acknowledged
        stats = PrefetchStats()
        threaded = list(prefetch_chips(reader, parts, batch_size=5, workers=3, min_valid=0.9, stats=stats))
        inline = list(prefetch_chips(reader, parts, batch_size=5, workers=0, min_valid=0.9))
    assert len(threaded) == len(inline)
    for a, b in zip(threaded, inline):
        assert a.partition == b.partition and a.partition_done == b.partition_done
        np.testing.assert_array_equal(a.h3, b.h3)
        np.testing.assert_array_equal(a.chips, b.chips)
        assert len(a.h3) + len(a.nodata) + len(a.outside) <= 5
    done = [b.partition for b in threaded if b.partition_done]
    assert done == [p for p, _ in parts]
    all_cells = np.concatenate([c for _, c in parts])
    seen = np.concatenate([np.concatenate([b.h3, b.nodata, b.outside]) for b in threaded])
    np.testing.assert_array_equal(np.sort(seen), np.sort(all_cells))
    ok = np.concatenate([b.h3 for b in threaded])
    nodata = np.concatenate([b.nodata for b in threaded])
    outside = np.concatenate([b.outside for b in threaded])
    assert len(ok) > 0 and len(nodata) > 0 and len(outside) > 0
    assert all(b.valid_fraction.min() >= 0.9 for b in threaded if len(b.h3))
    assert stats.chips_read == len(ok) + len(nodata)
