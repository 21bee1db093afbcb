"""Embedding raster products into the store (`store add-raster --embedding`): AlphaEarth's int8 COGs (both
GeoTIFF orientations, two UTM zones), float embedding rasters, masking, per-cell means, resume, bad input.

Every expected value is computed here by hand from the pixels: each pixel centre through rasterio's affine and
pyproj to (lat, lng), h3-py's cell, the published dequantisation, a plain Python sum per cell."""

from __future__ import annotations

import h3.api.basic_int as h3i
import numpy as np
import pytest
import rasterio
from pyproj import Transformer

from botaclip.cli import cli
from botaclip.errors import Interrupted, InvalidInputError, MissingFileError
from botaclip.store import Store
from botaclip.store import raster_grid as rg
from botaclip.store.external import add_raster_embedding

RES = 11  # ~2150 m2 cells: ~21 pixels of 10 m each
LAT0 = 45.0


def deq(q) -> np.ndarray:
    """AlphaEarth's published dequantisation, written out."""
    q = np.asarray(q, dtype=np.float64)
    return np.sign(q) * (np.abs(q) / 127.5) ** 2


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def utm(epsg: int, lng: float, lat: float = LAT0) -> tuple[float, float]:
    return Transformer.from_crs(4326, epsg, always_xy=True).transform(lng, lat)


def write(path, data, epsg, west, north, *, bottom_up=False, nodata=-128, descriptions=None):
    """A GeoTIFF of ``data`` [bands, rows, cols] (row 0 = north) with 10 m pixels, top-down (the usual layout:
    origin top-left, negative y resolution) or bottom-up (origin bottom-left, positive y resolution, rows stored
    south first) as some public AlphaEarth copies are."""
    count, h, w = data.shape
    if bottom_up:
        transform = rasterio.Affine(10.0, 0.0, west, 0.0, 10.0, north - 10.0 * h)
        data = data[:, ::-1, :]
    else:
        transform = rasterio.Affine(10.0, 0.0, west, 0.0, -10.0, north)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=str(data.dtype),
                       crs=f"EPSG:{epsg}", transform=transform, nodata=nodata) as ds:
        ds.write(np.ascontiguousarray(data))
        if descriptions:
            ds.descriptions = tuple(descriptions)
    return str(path)


def by_hand(paths, fmt="alphaearth", res=RES):
    """{cell: (sum vector, valid pixel count)} over every pixel of every file, in plain Python."""
    acc: dict[int, list] = {}
    for path in paths:
        with rasterio.open(path) as ds:
            data = ds.read()
            to_ll = Transformer.from_crs(ds.crs, 4326, always_xy=True)
            for r in range(ds.height):
                for c in range(ds.width):
                    px = data[:, r, c]
                    if fmt == "alphaearth":
                        if (px == -128).any():
                            continue
                        v = deq(px)
                    else:
                        if not np.isfinite(px).all() or (ds.nodata is not None and (px == ds.nodata).any()):
                            continue
                        v = px.astype(np.float64)
                    t = ds.transform
                    x, y = t.a * (c + 0.5) + t.b * (r + 0.5) + t.c, t.d * (c + 0.5) + t.e * (r + 0.5) + t.f
                    lng, lat = to_ll.transform(x, y)
                    cell = h3i.latlng_to_cell(lat, lng, res)
                    s = acc.setdefault(cell, [np.zeros(len(px)), 0])
                    s[0] = s[0] + v
                    s[1] += 1
    return acc


def check_against_hand(store, name, hand, pixel_area=100.0):
    cells = np.array(sorted(hand), dtype=np.uint64)
    t = store.features(name, cells=cells).to_pandas()
    fm = store.features_numpy(name, cells=cells)
    assert fm.found.all() and store.info(name)["rows"] == len(cells)
    expected = unit(np.array([hand[int(c)][0] / hand[int(c)][1] for c in cells]))
    np.testing.assert_allclose(fm.X, expected, atol=2e-6)
    assert t["n_obs"].tolist() == [hand[int(c)][1] for c in cells]
    vf = [min(1.0, hand[int(c)][1] / (h3i.cell_area(int(c), "m^2") / pixel_area)) for c in cells]
    np.testing.assert_allclose(t["valid_fraction"], vf, rtol=1e-3 if pixel_area == 100.0 else 2e-2)


@pytest.fixture
def store(tmp_path):
    return Store.create(tmp_path / "s.store", resolution=RES)


def test_alphaearth_codes_dequantised_masked_and_averaged_per_cell(store, tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, size=(64, 30, 30)).astype(np.int8)
    q[:, 4:9, 4:9] = -128  # a hole: every band -128
    q[17, 20, 20] = -128  # one band at -128 masks the whole pixel (the product masks bands together)
    x0, y0 = utm(32631, 5.7)
    path = write(tmp_path / "ae_2023_31T.tif", q, 32631, x0, y0)
    r = add_raster_embedding(store, "alphaearth_2023", [path])
    hand = by_hand([path])
    assert r.cells == len(hand) and r.valid_pixels == 30 * 30 - 25 - 1
    check_against_hand(store, "alphaearth_2023", hand)
    info = store.info("alphaearth_2023")
    assert info["kind"] == "external" and info["dim"] == 64
    prov = info["provenance"]
    assert prov["product"] == "AlphaEarth Foundations Satellite Embedding" and prov["year"] == 2023
    assert prov["files"] == [str((tmp_path / "ae_2023_31T.tif").resolve())] and prov["crs"] == ["EPSG:32631"]
    assert prov["dequantisation"] == "value = sign(q) * (|q| / 127.5)^2"


def test_constant_code_gives_its_dequantised_direction_and_known_values(store, tmp_path):
    # Worked by hand: q = 127 -> (127/127.5)^2 = 0.992172; q = -64 -> -(64/127.5)^2 = -0.251980; q = 0 -> 0.
    code = np.zeros(64, dtype=np.int8)
    code[0], code[1], code[2] = 127, -64, 1
    q = np.broadcast_to(code[:, None, None], (64, 20, 20)).copy()
    x0, y0 = utm(32631, 5.7)
    add_raster_embedding(store, "ae", [write(tmp_path / "c.tif", q, 32631, x0, y0)])
    v = np.zeros(64)
    v[0], v[1], v[2] = 0.99217224, -0.25196463, 0.0000615148
    X = store.features_numpy("ae").X
    np.testing.assert_allclose(X, np.broadcast_to(unit(v), X.shape), atol=2e-6)


def test_bottom_up_geotiff_reads_like_top_down(store, tmp_path):
    rng = np.random.default_rng(1)
    q = rng.integers(-127, 128, size=(64, 25, 35)).astype(np.int8)
    q[:, :3, :] = -128
    x0, y0 = utm(32631, 5.7)
    top = write(tmp_path / "top.tif", q, 32631, x0, y0)
    bottom = write(tmp_path / "bottom.tif", q, 32631, x0, y0, bottom_up=True)
    with rasterio.open(bottom) as ds:
        assert ds.transform.e > 0  # really stored bottom-up
    add_raster_embedding(store, "top", [top])
    add_raster_embedding(store, "bottom", [bottom])
    hand = by_hand([top])
    assert by_hand([bottom]).keys() == hand.keys()
    check_against_hand(store, "top", hand)
    check_against_hand(store, "bottom", hand)


def _marked_tile(epsg, lng_w, lng_e, marker_cell, background, marker):
    """Codes of a 10 m tile in UTM ``epsg`` from ``lng_w`` to ``lng_e`` at LAT0: ``background`` everywhere, a
    5 x 5 block of ``marker`` centred on the centre of ``marker_cell``; returns (codes, west, north)."""
    west, _ = utm(epsg, lng_w)
    east, _ = utm(epsg, lng_e)
    _, north = utm(epsg, (lng_w + lng_e) / 2, LAT0 + 0.002)
    w, h = int((east - west) // 10), 45
    q = np.broadcast_to(background[:, None, None], (64, h, w)).copy()
    lat, lng = h3i.cell_to_latlng(marker_cell)
    mx, my = utm(epsg, lng, lat)
    col, row = int((mx - west) // 10), int((north - my) // 10)
    if 2 <= col < w - 2 and 2 <= row < h - 2:
        q[:, row - 2:row + 3, col - 2:col + 3] = marker[:, None, None]
    return q, west, north


@pytest.mark.parametrize("bottom_up", [False, True])
def test_two_utm_zones_mosaic_and_zone_edge_cell(store, tmp_path, bottom_up):
    # Zone 31 ends at 6 E: its file holds -128 east of the edge, zone 32's west of it; a cell on the edge takes
    # pixels from both. Each file has its own constant code, and a marker block on a known cell.
    rng = np.random.default_rng(2)
    qa, qb, qm = (rng.integers(-127, 128, size=64).astype(np.int8) for _ in range(3))
    edge_cell = min((h3i.latlng_to_cell(LAT0 + d, 6.0, RES) for d in np.linspace(0, 0.0015, 40)),
                    key=lambda c: abs(h3i.cell_to_latlng(c)[1] - 6.0))  # a cell centred on the zone edge
    mark_a = h3i.latlng_to_cell(LAT0 + 0.0008, 5.9975, RES)
    mark_b = h3i.latlng_to_cell(LAT0 + 0.0008, 6.0025, RES)
    paths = []
    for epsg, lo, hi, code, mark in ((32631, 5.996, 6.0015, qa, mark_a), (32632, 5.9985, 6.004, qb, mark_b)):
        q, west, north = _marked_tile(epsg, lo, hi, mark, code, qm)
        to_ll = Transformer.from_crs(epsg, 4326, always_xy=True)
        cols = np.arange(q.shape[2])
        for r in range(q.shape[1]):  # outside its zone, a file is nodata (as published)
            lng, _ = to_ll.transform(west + 10 * (cols + 0.5), np.full(cols.shape, north - 10 * (r + 0.5)))
            q[:, r, (lng >= 6.0) if epsg == 32631 else (lng < 6.0)] = -128
        paths.append(write(tmp_path / f"ae_{epsg}.tif", q, epsg, west, north, bottom_up=bottom_up))
    add_raster_embedding(store, "ae", paths)
    hand = by_hand(paths)
    check_against_hand(store, "ae", hand)
    # The edge cell mixes both files: its count is the sum of each file's pixels there, both non-zero.
    na, nb = by_hand(paths[:1]).get(edge_cell, [0, 0])[1], by_hand(paths[1:]).get(edge_cell, [0, 0])[1]
    assert na > 0 and nb > 0
    got = store.features_numpy("ae", cells=[edge_cell]).X[0]
    np.testing.assert_allclose(got, unit((na * deq(qa) + nb * deq(qb)) / (na + nb)), atol=2e-6)
    # Geolocation: the cell most like the marker is the cell the marker was put on, in each zone.
    fm = store.features_numpy("ae")
    sims = fm.X @ unit(deq(qm))
    for mark, zone in ((mark_a, 31), (mark_b, 32)):
        in_zone = np.array([(h3i.cell_to_latlng(int(c))[1] < 6.0) == (zone == 31) for c in fm.h3])
        assert int(fm.h3[in_zone][np.argmax(sims[in_zone])]) == mark


def test_float_embedding_nan_and_nodata_masked(store, tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(5, 24, 24)).astype(np.float32)
    data[:, :2, :] = np.nan  # NaN rows
    data[3, 10, 10] = -9999.0  # nodata in one band masks the pixel
    data[:, 15:18, 15:18] = -9999.0
    x0, y0 = utm(32631, 5.7)
    path = write(tmp_path / "tessera_2024.tif", data, 32631, x0, y0, nodata=-9999.0)
    r = add_raster_embedding(store, "tessera", [path], fmt="float", product="TESSERA", version="v1")
    hand = by_hand([path], fmt="float")
    assert r.valid_pixels == 24 * 24 - 48 - 1 - 9
    check_against_hand(store, "tessera", hand)
    prov = store.info("tessera")["provenance"]
    assert (prov["product"], prov["version"], prov["year"], prov["format"]) == ("TESSERA", "v1", 2024, "float")


def test_float_embedding_in_degrees(store, tmp_path):
    # A geographic-CRS export (e.g. from Earth Engine): 0.0001 degree pixels, about 7.9 m x 11.1 m at 45 N.
    rng = np.random.default_rng(8)
    data = rng.normal(size=(8, 30, 30)).astype(np.float32)
    path = tmp_path / "gee.tif"
    with rasterio.open(path, "w", driver="GTiff", width=30, height=30, count=8, dtype="float32", crs="EPSG:4326",
                       transform=rasterio.Affine(1e-4, 0, 5.7, 0, -1e-4, 45.003)) as ds:
        ds.write(data)
    add_raster_embedding(store, "gee", [str(path)], fmt="float")
    check_against_hand(store, "gee", by_hand([str(path)], fmt="float"), pixel_area=(1e-4 * 111_195) ** 2 * np.cos(
        np.radians(45.0015)))


def test_min_valid_skips_cells_at_the_edge_and_in_holes(store, tmp_path):
    rng = np.random.default_rng(4)
    q = rng.integers(-127, 128, size=(64, 30, 30)).astype(np.int8)
    q[:, 10:20, 10:20] = -128
    x0, y0 = utm(32631, 5.7)
    path = write(tmp_path / "ae.tif", q, 32631, x0, y0)
    r = add_raster_embedding(store, "ae", [path], min_valid=0.8)
    hand = by_hand([path])
    vf = {c: min(1.0, n / (h3i.cell_area(c, "m^2") / 100.0)) for c, (_, n) in hand.items()}
    keep = {c for c, f in vf.items() if f >= 0.8}
    assert 0 < len(keep) < len(hand) and r.skipped_low_valid == len(hand) - len(keep)
    check_against_hand(store, "ae", {c: hand[c] for c in keep})
    assert store.info("ae")["provenance"]["min_valid"] == 0.8


class _StopAfter:
    """A progress reporter whose bar is interrupted (Ctrl-C) after ``n`` chunks, as a user would."""

    def __init__(self, n: int) -> None:
        self.n = n

    def step(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def bar(self, total: int, unit: str = "it", desc: str = ""):
        outer = self

        class Bar:
            def update(self, k: int = 1) -> None:
                outer.n -= k
                if outer.n < 0:
                    raise KeyboardInterrupt

            def close(self) -> None:
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                pass

        return Bar()


def test_interrupted_run_resumes_finished_partitions(store, tmp_path):
    rng = np.random.default_rng(5)
    q = rng.integers(-127, 128, size=(64, 150, 150)).astype(np.int8)
    x0, y0 = utm(32631, 5.7)
    path = write(tmp_path / "ae.tif", q, 32631, x0, y0)
    with pytest.raises(Interrupted, match=r"interrupted after \d+ partition\(s\); the partitions finished so far "
                                          "are kept; run the same command to resume"):
        # small windows: several chunks per partition, so the interruption falls inside one
        add_raster_embedding(store, "ae", [path], progress=_StopAfter(30), window_pixels=2000)
    kept = store.partitions("ae")
    assert kept  # finished partitions survived the interruption
    r = add_raster_embedding(store, "ae", [path], window_pixels=2000)
    assert r.partitions_done_before == len(kept) and r.partitions >= 1
    check_against_hand(store, "ae", by_hand([path]))
    again = add_raster_embedding(store, "ae", [path])  # nothing left to do
    assert again.cells == 0 and again.partitions_done_before == len(store.partitions("ae"))
    other = write(tmp_path / "other.tif", q, 32631, x0 + 5000, y0)
    with pytest.raises(InvalidInputError, match="made differently") as bad:
        add_raster_embedding(store, "ae", [other])
    assert "overwrite" in bad.value.params
    add_raster_embedding(store, "ae", [other], overwrite=True)
    assert store.info("ae")["provenance"]["files"] == [str((tmp_path / "other.tif").resolve())]


def test_band_names_put_bands_in_axis_order(store, tmp_path):
    rng = np.random.default_rng(6)
    q = rng.integers(-127, 128, size=(64, 20, 20)).astype(np.int8)
    x0, y0 = utm(32631, 5.7)
    plain = write(tmp_path / "plain.tif", q, 32631, x0, y0)
    perm = rng.permutation(64)  # band i of the file holds axis perm[i], and says so in its name
    shuffled = np.empty_like(q)
    shuffled[np.arange(64)] = q[perm]
    named = write(tmp_path / "named.tif", shuffled, 32631, x0, y0, descriptions=[f"A{p:02d}" for p in perm])
    add_raster_embedding(store, "plain", [plain])
    add_raster_embedding(store, "named", [named])
    np.testing.assert_allclose(store.features_numpy("named").X, store.features_numpy("plain").X, atol=1e-7)


def test_bad_inputs_give_one_clear_error(store, tmp_path):
    x0, y0 = utm(32631, 5.7)
    q = np.ones((64, 10, 10), dtype=np.int8)
    few = write(tmp_path / "few.tif", q[:32], 32631, x0, y0)
    with pytest.raises(InvalidInputError, match="has 32 int8 band.*64 int8 bands"):
        add_raster_embedding(store, "ae", [few])
    as_float = write(tmp_path / "f.tif", q.astype(np.float32), 32631, x0, y0, nodata=None)
    with pytest.raises(InvalidInputError, match="float32 band.*use embedding float"):
        add_raster_embedding(store, "ae", [as_float])
    with pytest.raises(InvalidInputError, match="unknown embedding format 'tessera'") as bad:
        add_raster_embedding(store, "ae", [as_float], fmt="tessera")
    assert bad.value.params == ["embedding"]
    codes = write(tmp_path / "codes.tif", q, 32631, x0, y0)
    with pytest.raises(InvalidInputError, match="int8 pixels.*use alphaearth"):
        add_raster_embedding(store, "ae", [codes], fmt="float")
    holes = write(tmp_path / "holes.tif", np.full((64, 10, 10), -128, np.int8), 32631, x0, y0)
    with pytest.raises(InvalidInputError, match="no valid pixel"):
        add_raster_embedding(store, "ae", [holes])
    three = write(tmp_path / "d3.tif", np.ones((3, 10, 10), np.float32), 32631, x0, y0, nodata=None)
    four = write(tmp_path / "d4.tif", np.ones((4, 10, 10), np.float32), 32631, x0, y0, nodata=None)
    with pytest.raises(InvalidInputError, match="d4.tif has 4 bands but .*d3.tif has 3"):
        add_raster_embedding(store, "emb", [three, four], fmt="float")
    with pytest.raises(MissingFileError, match="no such raster"):
        add_raster_embedding(store, "ae", [str(tmp_path / "nope.tif")])
    assert store.feature_sets() == []  # nothing half-written


def test_cli_add_raster_embedding(store, tmp_path, cli_runner):
    x0, y0 = utm(32631, 5.7)
    rng = np.random.default_rng(7)
    path = write(tmp_path / "ae.tif", rng.integers(-127, 128, size=(64, 20, 20)).astype(np.int8), 32631, x0, y0)
    res = cli_runner.invoke(cli, ["store", "add-raster", str(store.path), path, "--name", "ae_2023",
                                   "--embedding", "alphaearth", "--year", "2023", "--product-version", "v1"])
    assert res.exit_code == 0, res.output
    assert "cells of 'ae_2023' (64-d external embedding" in res.stdout
    assert store.info("ae_2023")["provenance"]["version"] == "v1"
    res = cli_runner.invoke(cli, ["store", "add-raster", str(store.path), path, "--name", "x",
                                   "--embedding", "float"])
    assert res.exit_code != 0
    assert "int8 pixels" in res.stderr and "--embedding float" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = cli_runner.invoke(cli, ["store", "add-raster", str(store.path), path, "--name", "x",
                                   "--embedding", "alphaearth", "--stat", "median"])
    assert res.exit_code != 0 and "--stat is for covariates" in res.stderr


def test_chunks_count_every_pixel_exactly_once(tmp_path):
    # The invariant the streaming rests on: over the footprint's chunks, each pixel is kept by exactly one.
    x0, y0 = utm(32631, 5.7)
    path = write(tmp_path / "t.tif", np.zeros((1, 120, 90), np.float32), 32631, x0, y0, nodata=None)
    with rasterio.open(path) as ds:
        grid = rg.RasterGrid.of(ds)
        assert grid.pixel_area_m2() == pytest.approx(100.0, rel=0.01)  # 10 m UTM pixels (scale factor ~1)
        chunk_res = rg.chunk_resolution(RES, 7, grid.pixel_area_m2(), window_pixels=2000)
        assert chunk_res == 9  # the coarsest level whose cells hold <= 2000 pixels of 100 m2
        counts = np.zeros(120 * 90, int)
        for chunk in rg.footprint_chunks(grid, chunk_res, RES):
            w = grid.window_of(int(chunk))
            if w is None:
                continue
            keep = rg.in_chunk(grid.window_cells(w, RES), int(chunk), chunk_res)
            rr, cc = np.mgrid[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
            np.add.at(counts, (rr.ravel() * 90 + cc.ravel())[keep], 1)
    assert (counts == 1).all()
