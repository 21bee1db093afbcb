"""Shared fixtures. Tests build their own small data and models; nothing is downloaded."""

from __future__ import annotations

import os

# Tests share two cores; one intra-op thread per process keeps them from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Ray starts its worker processes at niceness 15. While the other xdist worker keeps a core busy they then get a
# few per cent of a CPU: an index actor took 190 s instead of 16 s to import torch and timm. Every Ray instance the
# tests start (their ray.init, `ray start` subprocesses) inherits this.
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

_UNGROUPED = pytest.StashKey[bool]()


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which tags grouped tests "<node id>@<group>"
def pytest_collection_modifyitems(config, items):
    """Under `make test` (`--dist loadgroup`), the tests marked `xdist_group` that pytest-xdist failed to group
    (pytest-dev/pytest-xdist#1386: pytest 9 ignores its tags) fail with the reason, rather than run two Ray
    instances at once or build the demo fixture in every worker."""
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid:
                item.stash[_UNGROUPED] = True


def pytest_runtest_setup(item):
    if item.stash.get(_UNGROUPED, False):
        pytest.fail("pytest-xdist did not group this xdist_group test with the others (pytest 9, "
                    "pytest-dev/pytest-xdist#1386); install the dev extra's pytest: pip install 'pytest>=8,<9'",
                    pytrace=False)


@pytest.fixture
def cli_runner() -> CliRunner:
    """A Click runner for `botaclip` commands; stderr is kept separate from stdout."""
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:  # click >= 8.2 always separates the streams
        return CliRunner()


@pytest.fixture
def write_raster(tmp_path):
    """Write a GeoTIFF with rasterio: ``write_raster(name, data[C,H,W], crs, transform, nodata=None) -> path``.

    ``transform`` is a rasterio Affine (e.g. ``rasterio.transform.from_origin(west, north, xres, yres)``);
    ``crs=None`` writes a raster without a CRS.
    """
    import rasterio

    def write(name, data, crs, transform, nodata=None, driver="GTiff"):
        path = tmp_path / name
        count, height, width = data.shape
        with rasterio.open(
            path, "w", driver=driver, width=width, height=height, count=count, dtype=str(data.dtype),
            crs=crs, transform=transform, nodata=nodata,
        ) as ds:
            ds.write(data)
        return str(path)

    return write


SDM_LAT0, SDM_LNG0 = 45.2, 6.1
SDM_RES = 9


def _sigmoid(x):
    import numpy as np

    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="session")
def landscape(tmp_path_factory):
    """A store (res 9) over ~1,900 cells with an environmental gradient, and occurrence files whose species
    follow it: 'good' features carry the gradient, 'noise' features do not."""
    import h3
    import numpy as np
    import pandas as pd

    from botaclip.sdm.cells import cells_to_latlng
    from botaclip.store import Store

    root = tmp_path_factory.mktemp("sdm")
    rng = np.random.default_rng(42)
    centre = h3.latlng_to_cell(SDM_LAT0, SDM_LNG0, SDM_RES)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(centre, 25)), dtype=np.uint64)
    lat, lng = cells_to_latlng(cells)
    env = (lat - lat.min()) / np.ptp(lat) * 0.7 + 0.3 * np.sin(8 * (lng - lng.min()) / np.ptp(lng))
    env = (env - env.min()) / np.ptp(env)

    store = Store.create(root / "s.store", resolution=SDM_RES)
    n = cells.size
    with store.writer("good", kind="covariates", columns=["env", "env2", "wiggle", "flat"],
                      provenance={"source": "test"}) as w:
        w.write(h3=cells, columns={"env": env, "env2": env**2 + 0.05 * rng.normal(size=n),
                                   "wiggle": rng.normal(size=n), "flat": np.ones(n)})
    with store.writer("noise", kind="covariates", columns=["a", "b", "c"], provenance={"source": "test"}) as w:
        w.write(h3=cells, columns={"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.normal(size=n)})
    emb = np.column_stack([env, 1 - env, rng.normal(scale=0.2, size=(n, 6))])
    with store.writer("emb", kind="backbone", dim=8, provenance={"model": "test"}) as w:
        w.write(h3=cells, embedding=emb, valid_fraction=np.ones(n))

    # Relevés: 600 plots; every plot lists the species present there.
    plots = rng.choice(n, 600, replace=False)
    rows = []
    p_alpha = _sigmoid(10 * (env - 0.5))
    p_beta = _sigmoid(-10 * (env - 0.4))
    for i, p in enumerate(plots):
        plat, plng = lat[p], lng[p]
        rows.append((f"r{i}", plat, plng, "Commonia ubiquita", 5.0))
        if rng.random() < p_alpha[p]:
            rows.append((f"r{i}", plat, plng, "Alpha prima", 10.0))
        if rng.random() < p_beta[p]:
            rows.append((f"r{i}", plat, plng, "Beta secunda", 3.0))
        if i < 4:
            rows.append((f"r{i}", plat, plng, "Rara tertia", 1.0))
    releves = pd.DataFrame(rows, columns=["releve_id", "decimalLatitude", "decimalLongitude", "species", "cover"])
    releves.to_csv(root / "plots.csv", index=False)

    # Presence-only butterflies (Darwin Core), presences concentrated at high env.
    pres = rng.choice(n, 80, replace=False, p=p_alpha**2 / (p_alpha**2).sum())
    bf = pd.DataFrame({"species": "Papilio alpinus", "decimalLatitude": lat[pres], "decimalLongitude": lng[pres],
                       "occurrenceStatus": "PRESENT", "coordinateUncertaintyInMeters": 10.0})
    bf.to_csv(root / "butterflies.csv", index=False)

    # Soil abundance at 300 sites.
    sites = rng.choice(n, 300, replace=False)
    counts = rng.poisson(np.exp(3 * env[sites]))
    soil = pd.DataFrame({"site_id": [f"s{i}" for i in range(300)], "decimalLatitude": lat[sites],
                         "decimalLongitude": lng[sites], "species": "Collembola", "individualCount": counts})
    soil.to_csv(root / "soil.csv", index=False)
    return {"root": root, "store": root / "s.store", "cells": cells, "env": env}


# ---------------------------------------------------------------- a tiny landscape with relevés (training tests)

X0, Y0, SIDE = 900_000.0, 6_450_000.0, 600  # Lambert-93 corner (west, north), metres; 1 m pixels
CELL = 60  # habitat patches, metres
HABITATS = 3
SPECIES = {
    0: ["Festuca rubra", "Nardus stricta", "Arnica montana"],
    1: ["Carex flacca", "Bromus erectus", "Briza media"],
    2: ["Vaccinium myrtillus", "Picea abies", "Oxalis acetosella"],
}
SHARED = ["Poa alpina", "Trifolium repens"]


def _habitat_grid(rng):
    n = SIDE // CELL
    return rng.integers(0, HABITATS, size=(n, n))


@pytest.fixture(scope="session")
def releve_landscape(tmp_path_factory):
    """A 600 m x 600 m 4-band orthophoto (EPSG:2154, 1 m, nodata 0) with three habitats in 60 m patches, and
    relevés whose species follow the habitat under each plot; three plots lie outside the image."""
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    root = tmp_path_factory.mktemp("landscape")
    rng = np.random.default_rng(0)
    grid = _habitat_grid(rng)
    colours = np.array([[60, 140, 60, 200], [170, 160, 90, 120], [30, 70, 40, 90]], dtype=float)
    hab = np.kron(grid, np.ones((CELL, CELL), dtype=int))
    img = colours[hab].transpose(2, 0, 1) + rng.normal(0, 12, size=(4, SIDE, SIDE))
    img = np.clip(img, 1, 255).astype(np.uint8)
    tif = root / "ortho.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=SIDE, height=SIDE, count=4, dtype="uint8", crs="EPSG:2154",
                       transform=from_origin(X0, Y0, 1.0, 1.0), nodata=0) as dst:
        dst.write(img)

    to_wgs = Transformer.from_crs(2154, 4326, always_xy=True)
    rows, plots = [], []
    n_plots = 160
    for i in range(n_plots):
        if i < 3:  # outside the image
            x, y = X0 + SIDE + 500 + 30 * i, Y0 - 300
        else:
            x, y = X0 + rng.uniform(25, SIDE - 25), Y0 - rng.uniform(25, SIDE - 25)
        lng, lat = to_wgs.transform(x, y)
        h = grid[int((Y0 - y) // CELL) % grid.shape[0], int((x - X0) // CELL) % grid.shape[1]]
        rid = f"R{i:04d}"
        plots.append({"releve_id": rid, "decimalLatitude": lat, "decimalLongitude": lng, "x_l93": x, "y_l93": y})
        for sp in SPECIES[h] + SHARED:
            if rng.random() < 0.85:
                rows.append({"releve_id": rid, "decimalLatitude": lat, "decimalLongitude": lng, "species": sp,
                             "cover": float(rng.integers(1, 60))})
    long = pd.DataFrame(rows)
    releves_csv = root / "releves.csv"
    long.to_csv(releves_csv, index=False)
    plots_csv = root / "plots.csv"
    pd.DataFrame(plots).to_csv(plots_csv, index=False)
    return {"root": root, "tif": tif, "releves": releves_csv, "plots": plots_csv, "long": long,
            "plots_df": pd.DataFrame(plots)}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _processes_under(temp: str) -> list[int]:
    """PIDs of processes whose command line mentions our Ray temp dir (this cluster's processes only)."""
    from pathlib import Path

    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if temp in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on loopback: head and worker node (1 CPU each) on 127.0.0.1, started with
    the `ray` CLI of this environment; its address. Stopped at the end, even on failure."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    pytest.importorskip("ray")  # part of the dev extra: installed wherever the suite runs
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp = tempfile.mkdtemp(prefix="brc", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port = _free_port()
    # A throwaway loopback cluster: no token authentication (else every client needs the generated token).
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp}",
              "--disable-usage-stats", f"--object-store-memory={100 * 1024**2}"]
    nodes = []
    try:
        nodes.append(subprocess.Popen([ray_cli, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       "--block", *common], env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert time.monotonic() < deadline and nodes[0].poll() is None, "the Ray head did not start"
            time.sleep(0.2)
        nodes.append(subprocess.Popen([ray_cli, "start", f"--address={address}", "--block", *common], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        yield address
    finally:
        # Every process of this cluster mentions its temp dir: stop them all (SIGTERM, then SIGKILL), no others.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in set(_processes_under(temp)) | {p.pid for p in nodes if p.poll() is None}:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (_processes_under(temp) or any(p.poll() is None for p in nodes)):
                time.sleep(0.1)
        for p in nodes:
            p.wait(timeout=5)
        shutil.rmtree(temp, ignore_errors=True)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture
def two_sets(tmp_path):
    """A real store with an 8-d embedding set `emb` and a covariate set `cov` on the same 200 cells, which lie
    in two partitions (100 each): ``(store, cells)``."""
    import h3.api.basic_int as h3i
    import numpy as np

    from botaclip.store import Store

    store = Store.create(tmp_path / "s.store")
    cells = np.array([c for lat in (45.19, 45.5) for c in sorted(h3i.cell_to_children(
        h3i.latlng_to_cell(lat, 5.72, 6), 10))[:100]], dtype=np.uint64)
    rng = np.random.default_rng(0)
    with store.writer("emb", kind="backbone", dim=8, provenance={"model": "test"}) as w:
        w.write(cells, rng.normal(size=(len(cells), 8)), valid_fraction=np.ones(len(cells)))
    with store.writer("cov", kind="covariates", columns=["a"]) as w:
        w.write(cells, columns={"a": rng.normal(size=len(cells))})
    return store, cells


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A resolution-9 store with a 4-d embedding set `emb` (~1,300 cells) and a logistic SDM fitted on it
    (presence-only): ``(store path, model directory)``. Shared by a module: tests must not change them."""
    import h3
    import numpy as np
    import pandas as pd

    from botaclip.sdm import fit_species
    from botaclip.sdm.cells import cells_to_latlng
    from botaclip.store import Store

    root = tmp_path_factory.mktemp("fitted")
    rng = np.random.default_rng(1)
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.latlng_to_cell(45.2, 6.1, 9), 20)),
                     dtype=np.uint64)
    lat, lng = cells_to_latlng(cells)
    store = Store.create(root / "s.store", resolution=9)
    with store.writer("emb", kind="backbone", dim=4) as w:
        w.write(cells, np.column_stack([lat - 45.2, lng - 6.1, rng.normal(size=(len(cells), 2))]))
    pick = rng.choice(len(cells), 60, replace=False)
    pd.DataFrame({"species": "P a", "decimalLatitude": lat[pick], "decimalLongitude": lng[pick]}).to_csv(
        root / "po.csv", index=False)
    fit_species(store.path, root / "po.csv", "P a", features="emb", model="logistic", folds=3,
                out=root / "model", predictions=False, write_map=False)
    return store.path, root / "model"


# -- a local HTTP server for remote rasters (127.0.0.1 only) -----------------------------------------------------

_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "GDAL_HTTP_PROXY",
               "GDAL_HTTPS_PROXY")


def _range_server_class():
    """tools/range_server.py's RangeServer (a tool, not a package: loaded from its file)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "range_server.py"
    spec = importlib.util.spec_from_file_location("range_server", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RangeServer


@pytest.fixture
def no_proxy(monkeypatch):
    """No proxy for urllib and GDAL (libcurl): requests to 127.0.0.1 go straight to the test server."""
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def http_server(tmp_path, no_proxy):
    """A RangeServer (tools/range_server.py) on 127.0.0.1 serving ``tmp_path / "www"`` (created empty), closed
    after the test: honours Range (``honour_range = False`` ignores it), 404s for a missing file or one in
    ``missing``, 500 for one in ``failing``, counts ``bytes_served`` and ``requests``, sends ETag/Last-Modified."""
    root = tmp_path / "www"
    root.mkdir()
    server = _range_server_class()(root)
    yield server
    server.close()


@pytest.fixture
def write_cog(tmp_path):
    """Write a Cloud-Optimised GeoTIFF with rasterio's COG driver (tiled, with overviews):
    ``write_cog(path, data[C,H,W], crs, transform, nodata=None, blocksize=256) -> path``."""
    import rasterio
    import rasterio.shutil

    def write(path, data, crs, transform, nodata=None, blocksize=256, compress="DEFLATE"):
        count, height, width = data.shape
        # MEM -> COG: the COG driver only creates by copy.
        with rasterio.MemoryFile() as mem:
            with mem.open(driver="GTiff", width=width, height=height, count=count, dtype=str(data.dtype), crs=crs,
                          transform=transform, nodata=nodata) as ds:
                ds.write(data)
            with mem.open() as src:
                rasterio.shutil.copy(src, str(path), driver="COG", BLOCKSIZE=blocksize, COMPRESS=compress,
                                     OVERVIEWS="AUTO")
        return str(path)

    return write
