"""The index job end to end: real GeoTIFFs, a tiny real DOFA, a real store; resume, shards, adapter, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h3
import numpy as np
import pytest
import rasterio
import torch
from pyproj import Transformer
from rasterio.transform import from_origin

from botaclip.imagery import ChipReader
from botaclip.model import Embedder
from botaclip.pipeline import run_index
from botaclip.pipeline.train import make_backbone
from botaclip.store import Store

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*has random weights"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning"),  # inside rasterio.transform
]

LAT, LNG = 45.19, 5.72
BBOX = f"{LNG - 0.004},{LAT - 0.003},{LNG + 0.004},{LAT + 0.003}"
TINY = dict(backbone="dofa-tiny", size_px=32, batch_size=8, workers=2, progress=False)
TINY_CLI = ["--backbone", "dofa-tiny", "--size-px", "32", "--batch-size", "8", "--workers", "2", "--quiet"]
ROOT = Path(__file__).resolve().parents[1]


def _write(path, data, crs, transform, nodata=None):
    count, height, width = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=str(data.dtype),
                       crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data)
    return str(path)


def _texture(rng, shape):
    # Smooth-ish 8-bit texture in 1..255 so that neighbouring chips differ.
    coarse = rng.integers(1, 255, (shape[0], shape[1] // 10 + 1, shape[2] // 10 + 1)).astype("float32")
    return np.clip(np.repeat(np.repeat(coarse, 10, 1), 10, 2)[:, : shape[1], : shape[2]], 1, 255).astype("uint8")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A Lambert-93 orthophoto (1 m, nodata strip on its west side) and a WGS84 one east of it."""
    d = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True).transform(LNG, LAT)
    west = _texture(rng, (3, 700, 400))
    west[:, :, :120] = 0
    l93 = _write(d / "west_l93.tif", west, "EPSG:2154", from_origin(x - 360, y + 350, 1.0, 1.0), nodata=0)
    dx = 1.2e-5  # ~0.94 m of longitude, ~1.33 m of latitude
    east = _texture(rng, (3, 560, 400))
    wgs = _write(d / "east_4326.tif", east, "EPSG:4326", from_origin(LNG + 0.0004, LAT + 0.0035, dx, dx), nodata=0)
    return {"l93": l93, "wgs": wgs, "dir": d}


def _subprocess_env() -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _cells(store_path, name):
    return Store.open(store_path).existing_cells(name)


def test_index_writes_embeddings_of_valid_chips_with_provenance_and_resumes(scene, tmp_path, monkeypatch):
    monkeypatch.setenv("BOTACLIP_CACHE_DIR", str(tmp_path / "cache"))
    store = tmp_path / "store"
    s1 = run_index(BBOX, [scene["l93"]], store, **TINY)
    assert s1.feature_set == "dofa_tiny_rgb" and s1.kind == "backbone"
    assert s1.written > 5 and s1.skipped_nodata > 0
    assert s1.written + s1.skipped_nodata + s1.skipped_outside + s1.skipped_present == s1.planned
    st = Store.open(store)
    info = st.info("dofa_tiny_rgb")
    assert info["rows"] == s1.written and info["dim"] == 64
    prov = info["provenance"]
    assert prov["model"] == "dofa-tiny" and prov["weights"] == "random init"
    assert prov["weights_sha256"] == "random-init:seed=0" and prov["adapter_sha256"] is None
    assert prov["wavelengths"] == [0.665, 0.56, 0.49] and prov["chip_m"] == 100 and prov["size_px"] == 32
    assert prov["resolution"] == 10 and prov["code_version"]
    (img,) = prov["imagery"]
    assert img["path"] == os.path.abspath(scene["l93"]) and img["size_bytes"] == os.path.getsize(scene["l93"])
    assert img["mtime_ns"] == os.stat(scene["l93"]).st_mtime_ns

    # What is stored is exactly the model's unit embedding of the cell's chip.
    table = st.features("dofa_tiny_rgb")
    cells = table.column("h3").to_numpy()
    assert len(np.unique(cells)) == len(cells)
    assert table.column("valid_fraction").to_numpy().min() >= 0.9
    stored = np.stack(table.column("embedding").to_pylist())
    embedder = Embedder(make_backbone("dofa-tiny", None, 0, 32), [0.665, 0.56, 0.49], device="cpu", normalize=True)
    with ChipReader([scene["l93"]], "rgb", chip_m=100, size_px=32) as reader:
        chips = np.stack([reader.read_cell(int(c)).data for c in cells[:6]])
    np.testing.assert_allclose(stored[:6], embedder.embed(chips), atol=1e-5)

    # Idempotent: a second run writes nothing new.
    s2 = run_index(BBOX, [scene["l93"]], store, **TINY)
    assert s2.written == 0 and s2.skipped_present == s1.written
    assert np.array_equal(_cells(store, "dofa_tiny_rgb"), np.sort(cells))


def test_mosaic_of_two_crs_covers_more_cells_than_either_raster(scene, tmp_path):
    only_west = run_index(BBOX, [scene["l93"]], tmp_path / "a", **TINY)
    both = run_index(BBOX, [scene["l93"], scene["wgs"]], tmp_path / "b", **TINY)
    assert both.written > only_west.written
    west_cells = set(_cells(tmp_path / "a", "dofa_tiny_rgb").tolist())
    mosaic_cells = set(_cells(tmp_path / "b", "dofa_tiny_rgb").tolist())
    assert west_cells < mosaic_cells
    lng = np.array([h3.cell_to_latlng(h3.int_to_str(c))[1] for c in mosaic_cells - west_cells])
    assert (lng > LNG).all()  # the extra cells come from the eastern (WGS84) raster


def test_killed_run_resumes_to_the_exact_cell_set(scene, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    # Res-11 cells in res-10 partitions: many small partitions, committed one by one.
    for path in (ref, killed):
        Store.create(path, resolution=11, partition_resolution=10)
    imagery = [scene["l93"], scene["wgs"]]
    expected = run_index(BBOX, imagery, ref, chip_m=50, **TINY)
    want = _cells(ref, "dofa_tiny_rgb")
    assert expected.written > 100

    cmd = [sys.executable, "-m", "botaclip.cli", "index", "--region", BBOX, "--imagery", *imagery,
           "--store", str(killed), "--chip-m", "50", *TINY_CLI, "--batch-size", "2", "--workers", "1"]
    env = _subprocess_env()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = killed / "features" / "dofa_tiny_rgb"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("parent=*/data.parquet"))) >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    before = _cells(killed, "dofa_tiny_rgb")
    assert 0 < len(before) < len(want)

    resumed = run_index(BBOX, imagery, killed, chip_m=50, **TINY)
    got = _cells(killed, "dofa_tiny_rgb")
    assert resumed.skipped_present == len(before)
    assert resumed.written + len(before) == len(want)
    assert len(np.unique(got)) == len(got)  # no duplicate
    np.testing.assert_array_equal(got, want)  # no missing cell
    a = Store.open(ref).features_numpy("dofa_tiny_rgb", cells=want).X
    b = Store.open(killed).features_numpy("dofa_tiny_rgb", cells=want).X
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_concurrent_shards_into_one_store_equal_a_single_run(scene, tmp_path):
    import threading

    from botaclip.pipeline.index import shard_of
    from botaclip.store.lock import WriterLock

    single, sharded = tmp_path / "single", tmp_path / "sharded"
    for path in (single, sharded):
        Store.create(path, resolution=10, partition_resolution=9)
    imagery = [scene["l93"], scene["wgs"]]
    run_index(BBOX, imagery, single, **TINY)
    want = _cells(single, "dofa_tiny_rgb")

    # The store admits one writer at a time. Hold its lock so that shard 1 (another process) must wait for it
    # to commit, then run shard 0 here while shard 1 commits.
    lock = WriterLock(sharded).acquire()
    proc = subprocess.Popen(
        [sys.executable, "-m", "botaclip.cli", "index", "--region", BBOX, "--imagery", *imagery,
         "--store", str(sharded), *TINY_CLI, "--shard", "1/2", "--json"],
        env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stderr: list[str] = []
    waiting = threading.Event()

    def follow() -> None:
        for line in proc.stderr:
            stderr.append(line)
            if "waiting for another writer" in line:
                waiting.set()

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        assert waiting.wait(timeout=180), "".join(stderr)[-2000:]
    finally:
        lock.release()
    shard0 = run_index(BBOX, imagery, sharded, shard="0/2", **TINY)
    out, _ = proc.communicate(timeout=300)
    follower.join(timeout=10)
    assert proc.returncode == 0, "".join(stderr)[-2000:]
    shard1 = json.loads(out)
    assert shard0.written > 0 and shard1["written"] > 0  # both shards had work

    got = _cells(sharded, "dofa_tiny_rgb")
    assert shard0.written + shard1["written"] == len(want)
    np.testing.assert_array_equal(got, want)  # union of shards == single run, no duplicates
    # Each shard wrote exactly the cells of its partitions.
    shard_of_cell = shard_of(Store.open(sharded).partition_of(got), 2)
    assert (shard_of_cell == 0).sum() == shard0.written and (shard_of_cell == 1).sum() == shard1["written"]
    a = Store.open(single).features_numpy("dofa_tiny_rgb", cells=want).X
    b = Store.open(sharded).features_numpy("dofa_tiny_rgb", cells=want).X
    np.testing.assert_allclose(a, b, atol=1e-6)


def _adapter(path, backbone_name, sha, dim=64):
    from botaclip.model.adapter import save_checkpoint
    from botaclip.model.train import TrainConfig, build_model

    config = TrainConfig(seed=0)
    model = build_model(dim, 3, config)
    with torch.no_grad():  # move away from the identity so that adapted != backbone
        for p in model.image_adapter.parameters():
            p.add_(0.1 * torch.randn_like(p))
    backbone = {"name": backbone_name, "dim": dim, "sha256": sha, "wavelengths": [0.665, 0.56, 0.49],
                "bands": "rgb", "chip_m": 100.0, "size_px": 32}
    save_checkpoint(path, {"backbone": backbone, "config": config.to_dict(), "vocabulary": ["a", "b", "c"],
                           "model": model.state_dict(), "history": [], "summary": {}, "state": {}})
    return str(path)


def test_adapter_set_is_derived_from_the_stored_backbone_set(scene, tmp_path):
    name = make_backbone("dofa-tiny", None, 0, 32).name
    ckpt = _adapter(tmp_path / "adapter.pt", name, "random-init:seed=0")
    store, fresh = tmp_path / "store", tmp_path / "fresh"
    backbone = run_index(BBOX, [scene["l93"]], store, **TINY)
    derived = run_index(BBOX, [scene["l93"]], store, adapter=ckpt, **TINY)
    assert derived.feature_set == "botaclip_dofa_tiny_rgb" and derived.kind == "botaclip"
    assert derived.derived == derived.written == backbone.written
    assert derived.embedded == 0  # no chip went through the backbone
    # Computed from imagery in a store without the backbone set: the same embeddings.
    direct = run_index(BBOX, [scene["l93"]], fresh, adapter=ckpt, **TINY)
    assert direct.derived == 0 and direct.written == direct.embedded == derived.written
    cells = _cells(store, "botaclip_dofa_tiny_rgb")
    a = Store.open(store).features_numpy("botaclip_dofa_tiny_rgb", cells=cells).X
    b = Store.open(fresh).features_numpy("botaclip_dofa_tiny_rgb", cells=cells).X
    raw = Store.open(store).features_numpy("dofa_tiny_rgb", cells=cells).X
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - raw).max() > 0.01
    info = Store.open(store).info("botaclip_dofa_tiny_rgb")["provenance"]
    assert len(info["adapter_sha256"]) == 64 and info["weights_sha256"] == "random-init:seed=0"


def test_config_with_keyword_overrides_is_the_keyword_call(scene, tmp_path):
    from botaclip.pipeline import ChipConfig, IndexConfig, ModelConfig, OutputConfig, RuntimeConfig

    config = IndexConfig(model=ModelConfig(backbone="dofa-tiny"), chips=ChipConfig(size_px=32),
                         runtime=RuntimeConfig(batch_size=8, workers=2, progress=False),
                         output=OutputConfig(name="from_config"))
    a = run_index(BBOX, [scene["l93"]], tmp_path / "a", config, name="renamed", limit=6)
    b = run_index(BBOX, [scene["l93"]], tmp_path / "b", name="renamed", limit=6, **TINY)
    assert a.feature_set == b.feature_set == "renamed" and a.written == b.written > 0
    cells = _cells(tmp_path / "a", "renamed")
    np.testing.assert_array_equal(cells, _cells(tmp_path / "b", "renamed"))
    np.testing.assert_array_equal(Store.open(tmp_path / "a").features_numpy("renamed", cells=cells).X,
                                  Store.open(tmp_path / "b").features_numpy("renamed", cells=cells).X)


# -- bad input via the CLI: one line starting `error:`, non-zero exit, store untouched --------------------------


def _run_cli(cli_runner, args):
    from botaclip.cli import cli

    result = cli_runner.invoke(cli, ["index", *args])
    return result


def _assert_error(result, fragment):
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_bad_input_errors(scene, tmp_path, cli_runner):
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True).transform(LNG, LAT)
    no_crs = _write(tmp_path / "nocrs.tif", np.ones((3, 50, 50), "uint8"), None, from_origin(x, y, 1, 1))
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    store = tmp_path / "new_store"
    base = ["--region", BBOX, "--store", str(store), *TINY_CLI]
    cases = [
        (["--imagery", str(tmp_path / "missing.tif")], "not found"),
        (["--imagery", str(text)], "not a raster"),
        (["--imagery", no_crs], "no coordinate reference system"),
        (["--imagery", scene["l93"], "--bands", "rgbn"], "band"),
        (["--imagery", scene["l93"], "--wavelengths", "0.665,0.56"], "band"),
        (["--imagery", scene["l93"], "--resolution", "16"], "0 to 15"),
        (["--imagery", scene["l93"], "--chip-m", "0.4"], "smaller than one pixel"),
    ]
    for extra, fragment in cases:
        _assert_error(_run_cli(cli_runner, [*base, *extra]), fragment)
        assert not store.exists()
    far = ["--region", "2.0,48.0,2.01,48.01", "--store", str(store), "--imagery", scene["l93"], *TINY_CLI]
    _assert_error(_run_cli(cli_runner, far), "does not intersect the imagery")
    assert not store.exists()

    not_a_store = tmp_path / "somedir"
    not_a_store.mkdir()
    (not_a_store / "data.csv").write_text("a,b\n")
    args = ["--region", BBOX, "--store", str(not_a_store), "--imagery", scene["l93"], *TINY_CLI]
    _assert_error(_run_cli(cli_runner, args), "not a botaclip store")
    assert sorted(p.name for p in not_a_store.iterdir()) == ["data.csv"]

    ckpt = _adapter(tmp_path / "other.pt", make_backbone("dofa-tiny", None, 0, 32).name, "ab" * 32)
    _assert_error(_run_cli(cli_runner, [*base, "--imagery", scene["l93"], "--adapter", ckpt]), "trained on backbone")
    assert not store.exists()


def test_store_resolution_must_match(scene, tmp_path, cli_runner):
    store = tmp_path / "s"
    Store.create(store, resolution=9)
    args = ["--region", BBOX, "--store", str(store), "--imagery", scene["l93"], "--resolution", "10", *TINY_CLI]
    _assert_error(_run_cli(cli_runner, args), "resolution 9")
    ok = _run_cli(cli_runner, ["--region", BBOX, "--store", str(store), "--imagery", scene["l93"], *TINY_CLI])
    assert ok.exit_code == 0, ok.stderr
    assert "written:" in ok.stdout
    cells = _cells(store, "dofa_tiny_rgb")
    assert len(cells) and {h3.get_resolution(h3.int_to_str(int(c))) for c in cells} == {9}


def test_cell_list_region_counts_cells_outside_the_imagery(scene, tmp_path):
    inside = [h3.latlng_to_cell(LAT + d, LNG - 0.0012, 10) for d in (-0.001, 0.0, 0.001)]
    outside = h3.latlng_to_cell(LAT + 0.5, LNG, 10)
    cells_file = tmp_path / "cells.txt"
    cells_file.write_text("\n".join([*inside, outside]) + "\n")
    summary = run_index(str(cells_file), [scene["l93"]], tmp_path / "s", **TINY)
    assert summary.planned == 4 and summary.skipped_outside == 1
    assert summary.written + summary.skipped_nodata == 3
    stored = set(_cells(tmp_path / "s", "dofa_tiny_rgb").tolist())
    assert stored <= {h3.str_to_int(c) for c in inside} and len(stored) == summary.written


def test_region_sample_indexes_the_sample_footprint(tmp_path, cli_runner):
    import pyarrow.parquet as pq

    from botaclip.sample import make_sample

    sample = make_sample(tmp_path / "sample", seed=0, size_km=1.0, plots=30)
    store = tmp_path / "store"
    result = _run_cli(cli_runner, ["--region", "sample", "--imagery", str(sample.ortho), "--store", str(store),
                                   *TINY_CLI, "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["feature_set"] == "dofa_tiny_rgbn"  # 4-band imagery: the rgbn preset by default
    # The sample's own list of its H3 cells is exactly what was planned.
    assert summary["planned"] == pq.read_metadata(sample.cells).num_rows
    assert summary["written"] > 0.8 * summary["planned"]


def test_dtype_int8_and_float16_store_compact_embeddings_close_to_float32(scene, tmp_path, cli_runner):
    """`index --dtype`: the same run stored as float16 / int8 reads back within their rounding of float32."""
    ref = run_index(BBOX, [scene["l93"]], tmp_path / "f32", limit=8, **TINY)
    cells = _cells(tmp_path / "f32", ref.feature_set)
    X = Store.open(tmp_path / "f32").features_numpy(ref.feature_set, cells=cells).X
    for dtype, tol in (("float16", 1e-3), ("int8", 1 / 127)):
        got = run_index(BBOX, [scene["l93"]], tmp_path / dtype, limit=8, dtype=dtype, **TINY)
        store = Store.open(tmp_path / dtype)
        assert store.info(got.feature_set)["dtype"] == dtype
        fm = store.features_numpy(got.feature_set, cells=cells)
        assert fm.found.all() and np.abs(fm.X - X).max() <= tol + 1e-6
    # a second run with another dtype is refused (the set's layout is fixed) unless --overwrite
    args = ["--region", BBOX, "--imagery", scene["l93"], "--store", str(tmp_path / "int8"), *TINY_CLI,
            "--dtype", "float32"]
    _assert_error(_run_cli(cli_runner, args), "dtype int8 vs float32")
