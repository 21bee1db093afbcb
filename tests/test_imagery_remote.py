"""Rasters behind HTTP: URLs and /vsicurl/ paths read with range requests from a local server (127.0.0.1 only).

The server (``http_server`` in conftest) honours Range, can ignore it, returns 404/500 on demand, counts the bytes
it serves and sends ETag / Last-Modified, like a static web server or an object store.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin

from botaclip.cli import cli
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError
from botaclip.imagery import ChipReader
from botaclip.imagery import remote as rm
from botaclip.imagery.stats import cache_dir

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),
]

X0, Y0 = 915_000.0, 6_455_000.0  # Lambert-93, near Grenoble
TINY_CLI = ["--backbone", "dofa-tiny", "--size-px", "32", "--batch-size", "8", "--workers", "2", "--quiet"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BOTACLIP_CACHE_DIR", str(tmp_path / "cache"))


def _texture(seed: int, bands: int, size: int, dtype="uint16") -> np.ndarray:
    """Blocky texture (8 px blocks) so that neighbouring chips differ and DEFLATE keeps most of the bytes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(100, 4000, (bands, size // 8 + 1, size // 8 + 1))
    return np.repeat(np.repeat(coarse, 8, 1), 8, 2)[:, :size, :size].astype(dtype)


def _latlng(x: float, y: float) -> tuple[float, float]:
    lng, lat = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True).transform(x, y)
    return lat, lng


def _bbox(x: float, y: float, half_m: float) -> str:
    t = Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True)
    (w, e), (s, n) = t.transform([x - half_m, x + half_m], [y - half_m, y + half_m])
    return f"{w},{s},{e},{n}"


@pytest.fixture
def cog(http_server, write_cog):
    """A 3-band uint16 COG of 512 x 512 px of 1 m, served over HTTP: (server, file name, local path)."""
    path = write_cog(http_server.root / "ortho.tif", _texture(0, 3, 512), "EPSG:2154", from_origin(X0, Y0, 1, 1))
    return http_server, "ortho.tif", path


# -- reading ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["url", "vsicurl"])
def test_remote_chips_equal_local_chips_with_per_raster_statistics(cog, form):
    server, name, local = cog
    path = server.url(name) if form == "url" else "/vsicurl/" + server.url(name)
    kwargs = dict(chip_m=40, size_px=16, normalization="stats")
    remote = ChipReader([path], _custom3(), **kwargs)
    here = ChipReader([local], _custom3(), **kwargs)
    try:
        lat, lng = _latlng(X0 + 100, Y0 - 150)
        a, b = remote.read(lat, lng), here.read(lat, lng)
        assert a.valid_fraction == b.valid_fraction == 1.0
        np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-6)
        src = remote.describe()["imagery"][0]
        assert src["url"] == server.url(name) and src["etag"] and src["size_bytes"] == os.path.getsize(local)
        assert src["path"] == "/vsicurl/" + server.url(name)
    finally:
        remote.close()
        here.close()


def _custom3():
    from botaclip.imagery.bands import band_spec

    return band_spec(None, "0.665,0.56,0.49")  # custom wavelengths: no preset statistics, so "stats" is used


def test_statistics_cache_keyed_by_url_and_etag_never_stat(cog, monkeypatch):
    server, name, local = cog
    url = server.url(name)
    with monkeypatch.context() as patch:  # os.stat on a URL would raise: it must not be called
        patch.setattr(os, "stat", _no_stat(os.stat, url))
        ChipReader([url], _custom3(), chip_m=40, size_px=16, normalization="stats").close()
    files = list(cache_dir().glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["path"] == url
    assert any(m == "HEAD" for m, _, _ in server.requests)

    # Cached: a second reader reads no pixels for statistics (only the probe and the COG header).
    server.reset()
    first = ChipReader([url], _custom3(), chip_m=40, size_px=16, normalization="stats")
    assert server.bytes_served < 40_000
    # The file changes on the server (new ETag): a new cache entry, kept beside the old one. (This process's GDAL
    # still holds the old bytes in its vsicurl cache, so the values are not compared here.)
    before = rm.identity(url)
    os.remove(local)
    _rewrite(local)
    rm._probed.clear()  # a new process would probe again
    assert rm.identity(url) != before and url in rm.identity(url)
    ChipReader([url], _custom3(), chip_m=40, size_px=16, normalization="stats").close()
    assert len(list(cache_dir().glob("*.json"))) == 2
    first.close()


def _rewrite(path) -> None:
    import rasterio.shutil

    with rasterio.MemoryFile() as mem:
        with mem.open(driver="GTiff", width=512, height=512, count=3, dtype="uint16", crs="EPSG:2154",
                      transform=from_origin(X0, Y0, 1, 1)) as ds:
            ds.write(np.full((3, 512, 512), 7, dtype="uint16"))
        with mem.open() as src:
            rasterio.shutil.copy(src, path, driver="COG")


def _no_stat(real, url):
    def stat(path, *args, **kwargs):
        if "127.0.0.1" in str(path):
            raise AssertionError(f"os.stat called on {path}")
        return real(path, *args, **kwargs)

    return stat


def test_local_file_keeps_its_cache_key(tmp_path, write_cog):
    import hashlib

    from botaclip.imagery.stats import band_stats

    path = write_cog(tmp_path / "a.tif", _texture(1, 3, 64), "EPSG:2154", from_origin(X0, Y0, 1, 1))
    band_stats(path, (1, 2, 3))
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|(1, 2, 3)".encode()).hexdigest()
    assert (cache_dir() / f"{key[:32]}.json").is_file()


def test_small_region_of_a_large_cog_reads_a_small_fraction(http_server, write_cog, tmp_path, cli_runner):
    # 2048 x 2048 px x 3 bands of 1 m; the region is a 60 m square near the north-west corner.
    path = write_cog(http_server.root / "big.tif", _texture(2, 3, 2048, "uint8"), "EPSG:2154",
                     from_origin(X0, Y0, 1, 1), blocksize=256)
    size = os.path.getsize(path)
    store = tmp_path / "s"
    http_server.reset()
    res = cli_runner.invoke(cli, ["index", "--region", _bbox(X0 + 300, Y0 - 300, 30), "--imagery",
                                  http_server.url("big.tif"), "--store", str(store), "--resolution", "12",
                                  "--chip-m", "20", *TINY_CLI])
    assert res.exit_code == 0, res.output
    from botaclip.store import Store

    assert len(Store.open(store).existing_cells("dofa_tiny_rgb")) > 5
    fraction = http_server.bytes_served / size
    assert fraction < 0.1, (http_server.bytes_served, size)
    ranged = [r for m, _, r in http_server.requests if m == "GET"]
    assert ranged and all(r is not None for r in ranged)  # never a whole-file GET


def test_store_add_raster_covariate_and_embedding_from_urls(http_server, write_cog, tmp_path):
    from botaclip.store import Store
    from botaclip.store.external import add_raster_embedding
    from botaclip.store.io import add_raster

    t = from_origin(X0, Y0, 10, 10)
    local = write_cog(http_server.root / "dem.tif", _texture(3, 1, 64, "float32"), "EPSG:2154", t, blocksize=64)
    emb = write_cog(http_server.root / "emb.tif", np.random.default_rng(4).normal(size=(8, 64, 64)).astype("float32"),
                    "EPSG:2154", t, blocksize=64)
    remote_store = Store.create(tmp_path / "r", resolution=10)
    local_store = Store.create(tmp_path / "l", resolution=10)
    r = add_raster(remote_store, "dem", [http_server.url("dem.tif") + "?v=1"])
    add_raster(local_store, "dem", [local])
    assert r["columns"] == ["dem"] and r["cells"] > 10
    a, b = remote_store.features_numpy("dem"), local_store.features_numpy("dem")
    np.testing.assert_array_equal(a.h3, b.h3)
    np.testing.assert_allclose(a.X, b.X)
    assert remote_store.info("dem")["provenance"]["sources"] == [http_server.url("dem.tif") + "?v=1"]

    s = add_raster_embedding(remote_store, "emb", ["/vsicurl/" + http_server.url("emb.tif")], fmt="float")
    add_raster_embedding(local_store, "emb", [emb], fmt="float")
    assert s.cells > 10
    np.testing.assert_allclose(remote_store.features_numpy("emb").X, local_store.features_numpy("emb").X, atol=1e-6)


# -- bad input: one clear line, non-zero exit, no traceback -------------------------------------------------------


def _index(cli_runner, tmp_path, imagery: str, *extra):
    return cli_runner.invoke(cli, ["index", "--region", _bbox(X0 + 100, Y0 - 100, 20), "--imagery", imagery,
                                   "--store", str(tmp_path / "s"), "--resolution", "12", "--chip-m", "20",
                                   *TINY_CLI, *extra])


def _one_error(result, fragment):
    assert result.exit_code != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_url_that_404s(cog, tmp_path, cli_runner):
    server, name, _ = cog
    res = _index(cli_runner, tmp_path, server.url("nope.tif"))
    _one_error(res, "was not found on the server (HTTP 404)")
    assert not (tmp_path / "s").exists()  # nothing created
    with pytest.raises(MissingFileError, match="HTTP 404"):
        ChipReader(["/vsicurl/" + server.url("gone.tif")], "rgb")


def test_server_error_and_unreachable_server(cog, tmp_path, cli_runner):
    server, name, _ = cog
    server.failing.add(name)
    _one_error(_index(cli_runner, tmp_path, server.url(name)), "the server failed (HTTP 500")
    port = server.port
    server.close()
    with pytest.raises(BotaclipError, match="cannot reach"):
        rm.probe(f"http://127.0.0.1:{port}/other.tif")


def test_server_without_range_support(cog, tmp_path, cli_runner):
    server, name, _ = cog
    server.honour_range = False
    res = _index(cli_runner, tmp_path, server.url(name), "--bands", "rgb")
    _one_error(res, "does not support HTTP range requests")
    assert "download it and pass the local path" in res.stderr
    with pytest.raises(InvalidInputError, match="range requests"):
        rm.probe(server.url(name) + "?again")


def test_remote_file_that_is_not_a_cog_works_with_a_warning(http_server, tmp_path, cli_runner):
    # Striped (not tiled) GeoTIFF, no overviews: GDAL reads whole rows for every window.
    data = _texture(5, 3, 1024, "uint8")
    with rasterio.open(http_server.root / "striped.tif", "w", driver="GTiff", width=1024, height=1024, count=3,
                       dtype="uint8", crs="EPSG:2154", transform=from_origin(X0, Y0, 1, 1)) as ds:
        ds.write(data)
    res = _index(cli_runner, tmp_path, http_server.url("striped.tif"))
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.stderr.splitlines() if "not a cloud-optimised GeoTIFF" in ln]
    assert notes and "not tiled" in notes[0] and "gdal_translate -of COG" in notes[0]
    with pytest.warns(rm.RemoteReadWarning, match="not tiled"):
        ChipReader([http_server.url("striped.tif")], "rgb").close()


def test_non_cog_warning_is_one_line_in_store_add_raster(http_server, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from botaclip.store import Store

    with rasterio.open(http_server.root / "cov.tif", "w", driver="GTiff", width=600, height=40, count=1,
                       dtype="float32", crs="EPSG:2154", transform=from_origin(X0, Y0, 10, 10)) as ds:
        ds.write(np.ones((1, 40, 600), dtype="float32"))
    Store.create(tmp_path / "st", resolution=9)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    # A real process: the CLI prints warnings as Python would (pytest would catch them in-process).
    res = subprocess.run([sys.executable, "-m", "botaclip.cli", "store", "add-raster", str(tmp_path / "st"),
                          http_server.url("cov.tif"), "--name", "cov"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    warn = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(warn) == 1 and warn[0].startswith("warning:") and "not tiled" in warn[0], res.stderr


def test_gdal_options_are_scoped_not_global(cog):
    from rasterio._env import get_gdal_config

    server, name, _ = cog
    reader = ChipReader([server.url(name)], "rgb", chip_m=40, size_px=16)
    reader.read(*_latlng(X0 + 50, Y0 - 50))
    reader.close()
    assert "GDAL_HTTP_MAX_RETRY" not in os.environ and get_gdal_config("GDAL_HTTP_MAX_RETRY") is None
    with rm.gdal_env([server.url(name)]):
        assert str(get_gdal_config("GDAL_HTTP_MAX_RETRY")) == "3"
        assert get_gdal_config("GDAL_DISABLE_READDIR_ON_OPEN") == "EMPTY_DIR"
        assert get_gdal_config("CPL_VSIL_CURL_ALLOWED_EXTENSIONS") == ".TIF,.tif"
    with rm.gdal_env(["https://example.org/api/raster?id=3"]):  # no extension: nothing is restricted
        assert get_gdal_config("CPL_VSIL_CURL_ALLOWED_EXTENSIONS") is None


def test_remote_paths_recognised():
    assert rm.remote_url("https://a.org/x.tif") == "https://a.org/x.tif"
    assert rm.remote_url("/vsicurl/http://a.org/x.tif") == "http://a.org/x.tif"
    assert rm.remote_url("/vsicurl?url=https%3A%2F%2Fa.org%2Fx.tif&max_retry=2") == "https://a.org/x.tif"
    assert rm.remote_url("/vsis3/bucket/x.tif") is None and rm.remote_url("x.tif") is None
    assert rm.gdal_path("HTTPS://a.org/x.tif") == "/vsicurl/HTTPS://a.org/x.tif"
    assert rm.display_stem("https://a.org/d/dem_10m.tif?sig=abc") == "dem_10m"


def test_tiled_remote_file_without_overviews_warns_only_for_statistics(http_server, recwarn):
    data = _texture(6, 3, 2112, "uint8")
    with rasterio.open(http_server.root / "flat.tif", "w", driver="GTiff", width=2112, height=2112, count=3,
                       dtype="uint8", crs="EPSG:2154", transform=from_origin(X0, Y0, 1, 1), tiled=True,
                       blockxsize=256, blockysize=256, compress="DEFLATE") as ds:
        ds.write(data)
    url = http_server.url("flat.tif")
    ChipReader([url], "rgb", normalization="preset").close()  # tiled: windows read only their tiles
    assert not [w for w in recwarn if issubclass(w.category, rm.RemoteReadWarning)]
    with pytest.warns(rm.RemoteReadWarning, match="no overviews.*statistics read the whole file once"):
        ChipReader([url], _custom3(), normalization="stats").close()


def test_train_reads_imagery_from_a_url_like_the_local_file(http_server, releve_landscape, tmp_path, cli_runner):
    import shutil

    shutil.copy(releve_landscape["tif"], http_server.root / "ortho.tif")
    args = ["train", "--releves", str(releve_landscape["releves"]), "--backbone", "dofa-tiny", "--chip-m", "40",
            "--size-px", "32", "--views", "2", "--batch-size", "32", "--block-res", "9", "--min-plots", "3",
            "--device", "cpu", "--epochs", "1", "--cache-dir", str(tmp_path / "features")]
    logs = []
    for name, imagery in (("remote", http_server.url("ortho.tif")), ("local", str(releve_landscape["tif"]))):
        out = tmp_path / f"{name}.pt"
        res = cli_runner.invoke(cli, [*args, "--imagery", imagery, "--out", str(out)])
        assert res.exit_code == 0, res.stderr
        logs.append(json.loads(out.with_suffix(".jsonl").read_text().splitlines()[-1]))
    assert http_server.bytes_served > 0
    assert logs[0]["val_siglip"] == pytest.approx(logs[1]["val_siglip"], rel=1e-6)


def test_server_failing_during_the_run_is_one_line(cog, monkeypatch):
    server, name, _ = cog
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")  # the user's setting wins over botaclip's 0.5 s
    reader = ChipReader([server.url(name)], "rgb", chip_m=40, size_px=16)
    try:
        server.failing.add(name)  # the server breaks after the job started (retried, then reported)
        with pytest.raises(BotaclipError) as err:
            reader.read(*_latlng(X0 + 400, Y0 - 400))
        assert str(err.value) == f"reading stopped: {server.url(name)}: the server failed (HTTP 500 Internal " \
                                 "Server Error); try again later or use another copy"
        gets = [r for m, n, r in server.requests if m == "GET" and n == name]
        assert len(gets) >= 2  # GDAL retried before giving up
    finally:
        reader.close()
