"""Nothing stored is lost: replacements are built aside and swapped in only when they succeeded, outputs are
never written over a store, and a partition file deleted behind the store's back is named on every read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from botaclip.cli import cli
from botaclip.errors import BotaclipError, InvalidInputError, StoreDamagedError
from botaclip.store import Store
from botaclip.store.catalog import CATALOG_NAME, read_catalog
from botaclip.store.outputs import check_output_path

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(store_path: Path) -> dict:
    """Every file of the store but the lock and leftovers: name -> bytes; the catalog by its content (a DuckDB
    file rewritten with the same tables differs in its bytes)."""
    out = {}
    for p in sorted(Path(store_path).rglob("*")):
        rel = p.relative_to(store_path)
        if p.is_file() and rel.parts[0] not in (".tmp",) and rel.name != ".writer.lock":
            out[str(rel)] = p.read_bytes()
    state = read_catalog(Path(store_path) / CATALOG_NAME)
    out[CATALOG_NAME] = repr((state.meta, state.feature_sets, state.partitions, state.runs))
    return out


def _assert_unchanged(store_path: Path, before: dict) -> None:
    after = _snapshot(store_path)
    assert sorted(after) == sorted(before)
    assert all(after[k] == before[k] for k in before), [k for k in before if after[k] != before[k]]
    tmp = Path(store_path) / ".tmp"
    assert not tmp.exists() or not any(tmp.iterdir())  # no half-written temporary file left behind
    assert Store.open(store_path).verify().ok


def _one_line_error(cli_runner, args, *needles):
    """The command fails with one `error:` line (after any `note:` lines), no traceback, holding `needles`."""
    r = cli_runner.invoke(cli, [str(a) for a in args])
    assert r.exit_code != 0, r.output
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:"), r.stderr
    assert all(line.startswith("note:") for line in lines[:-1]), r.stderr
    assert "Traceback" not in r.output + r.stderr and r.exc_info[0] is SystemExit
    for n in needles:
        assert n in lines[-1], lines[-1]
    return lines[-1]


# ---- replacements built aside -----------------------------------------------------------------------------


def test_failed_replacement_keeps_the_old_set(two_sets):
    store, cells = two_sets
    before = _snapshot(store.path)
    with pytest.raises(RuntimeError, match="reading failed"):
        with store.writer("emb", kind="backbone", dim=3, overwrite=True) as w:
            w.write(cells[:10], np.ones((10, 3)))
            w.flush()  # some of the replacement is on disk (aside) when it fails
            raise RuntimeError("reading failed")
    _assert_unchanged(store.path, before)
    assert store.spec("emb").dim == 8 and store.info("emb")["rows"] == len(cells)


def test_empty_replacement_keeps_the_old_set(two_sets):
    store, cells = two_sets
    before = _snapshot(store.path)
    with pytest.raises(BotaclipError, match=r"'emb' was not replaced: the new data holds no rows.*\(200 rows\)"):
        with store.writer("emb", kind="backbone", dim=3, overwrite=True):
            pass
    _assert_unchanged(store.path, before)


def test_successful_replacement_swaps_in_whole(two_sets):
    store, cells = two_sets
    with store.writer("emb", kind="backbone", dim=3, overwrite=True) as w:
        w.write(cells[:7], np.ones((7, 3)))
        assert len(store.existing_cells("emb")) == len(cells)  # readers see the old set until the swap
    assert store.spec("emb").dim == 3
    np.testing.assert_array_equal(store.existing_cells("emb"), np.sort(cells[:7]))
    assert not (store.path / ".swap").exists() or not any((store.path / ".swap").iterdir())
    assert store.verify().ok


def test_cli_replacements_that_fail_or_write_nothing_keep_the_old_set(cli_runner, two_sets, tmp_path):
    """add-raster and import --overwrite with an all-nodata raster, a VRT whose source is gone, a bad table."""
    store, cells = two_sets
    nodata = _raster(tmp_path / "nodata.tif", np.zeros((1, 60, 60), "float32"))
    gone = _raster(tmp_path / "gone.tif", np.ones((1, 60, 60), "float32"))
    vrt = _vrt(tmp_path / "mosaic.vrt", gone)
    os.unlink(gone)
    before = _snapshot(store.path)
    _one_line_error(cli_runner, ["store", "add-raster", store.path, nodata, "--name", "cov", "--overwrite"],
                    "holds only nodata", "nothing was written")
    _one_line_error(cli_runner, ["store", "add-raster", store.path, vrt, "--name", "cov", "--overwrite"],
                    "mosaic.vrt failed", "gone.tif: No such file or directory")
    pd.DataFrame({"h3": ["zz"], "v": [1.0]}).to_csv(tmp_path / "bad.csv", index=False)
    _one_line_error(cli_runner, ["store", "import", store.path, tmp_path / "bad.csv", "--name", "cov",
                                 "--overwrite"], "does not hold H3 cell ids")
    _assert_unchanged(store.path, before)
    assert store.info("cov")["rows"] == len(cells)


def test_writer_killed_between_the_renames_of_a_swap_is_repaired(two_sets):
    """A real kill (os._exit) right after the new set was moved in, before the catalog commit: the next writer
    puts the old set back; readers meanwhile name the damage instead of mixing old catalog and new files."""
    store, _ = two_sets
    old = store.features_numpy("emb")
    code = f"""
import os, numpy as np
import botaclip.store.writer as wr
from botaclip.store import Store
real = wr.write_catalog
def dying(path, state, root):
    if state.feature_sets["emb"]["dim"] == 3:
        os._exit(9)
    real(path, state, root)
wr.write_catalog = dying
s = Store.open({str(store.path)!r})
with s.writer("emb", kind="backbone", dim=3, overwrite=True) as w:
    w.write(s.existing_cells("emb")[:5], np.ones((5, 3)))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert (store.path / ".swap" / "emb.json").is_file()  # died inside the window
    with pytest.raises(StoreDamagedError, match="of feature set 'emb' is missing"):
        store.features_numpy("emb")
    rep = store.verify()
    assert not rep.ok and any("replacement was interrupted" in p for p in rep.problems)
    with store.writer("cov", kind="covariates", columns=["a"]):  # any writer repairs it first
        pass
    new = store.features_numpy("emb")
    np.testing.assert_array_equal(new.h3, old.h3)
    np.testing.assert_array_equal(new.X, old.X)
    assert store.verify().ok and not (store.path / ".swap" / "emb.json").exists()


# ---- outputs never written over a store --------------------------------------------------------------------


def test_output_paths_inside_a_store_are_refused_everywhere(cli_runner, two_sets, tmp_path):
    store, _ = two_sets
    s = store.path
    part = next((s / "features" / "emb").glob("parent=*/data.parquet"))
    link = tmp_path / "link"
    link.symlink_to(s / "features", target_is_directory=True)
    before = _snapshot(s)
    inside = "is inside store"
    cases = [
        ["sql", s, "SELECT 1", "--out", s / "catalog.duckdb"],
        ["sql", s, "SELECT 1 AS a", "--format", "parquet", "--out", link / "x.parquet"],  # through a symlink
        ["store", "export", s, "--feature-set", "emb", "--out", s / "features" / "e.parquet"],
        ["store", "create", s / "features" / "nested"],
        ["sdm", "fit", "--store", s, "--occurrences", tmp_path / "o.csv", "--species", "x", "--features", "emb",
         "--out", s],
        ["sdm", "compare", "--store", s, "--occurrences", tmp_path / "o.csv", "--species", "x", "--features",
         "emb", "--out", s / "cmp"],
        ["store", "diagnose", s, "--out", link / "diag"],
        ["demo", "--out", s],
        ["train", "--releves", tmp_path / "r.csv", "--imagery", tmp_path / "i.tif", "--out", s / "a.pt"],
        ["sample", "make", "--out", s, "--overwrite"],
        ["weights", "download", "dofa-base", "--to", s / "weights"],
    ]
    for args in cases:
        _one_line_error(cli_runner, args, inside)
    with pytest.raises(InvalidInputError, match=inside):
        check_output_path(part)
    _assert_unchanged(s, before)


def test_predict_refuses_to_write_over_a_partition(cli_runner, fitted):
    store_path, model_dir = fitted
    part = next((store_path / "features" / "emb").glob("parent=*/data.parquet"))
    before = _snapshot(store_path)
    _one_line_error(cli_runner, ["sdm", "predict", "--model", model_dir, "--store", store_path, "--out", part],
                    "is inside store")
    _assert_unchanged(store_path, before)


# ---- a partition deleted behind the store's back -----------------------------------------------------------


def test_deleted_partition_is_named_by_every_read(cli_runner, two_sets, tmp_path):
    store, cells = two_sets
    s = store.path
    victim = sorted((s / "features" / "emb").glob("parent=*/data.parquet"))[0]
    os.unlink(victim)
    rel = str(victim.relative_to(s))
    for read in (lambda: store.features_numpy("emb"), lambda: store.features("emb", cells=cells[:3]),
                 lambda: store.existing_cells("emb"), lambda: list(store.iter_partitions("emb")),
                 lambda: store.partitions("emb")):
        with pytest.raises(StoreDamagedError, match=f"{rel} of feature set 'emb' is missing"):
            read()
    pd.DataFrame({"species": "P a", "decimalLatitude": [45.19] * 12, "decimalLongitude": [5.72] * 12}).to_csv(
        tmp_path / "o.csv", index=False)
    for args in (["sql", s, "SELECT count(*) FROM emb"],
                 ["sql", s, "SELECT count(*) FROM emb WHERE h3 = 5"],
                 ["store", "similar", s, "--feature-set", "emb", "--cell", format(int(cells[-1]), "x")],
                 ["store", "export", s, "--feature-set", "emb", "--out", tmp_path / "e.parquet"],
                 ["store", "diagnose", s],
                 ["sdm", "fit", "--store", s, "--occurrences", tmp_path / "o.csv", "--species", "P a",
                  "--features", "emb", "--out", tmp_path / "m"]):
        _one_line_error(cli_runner, args, rel, "'emb'", "is missing", "--repair")
    assert not (tmp_path / "e.parquet").exists()
    info = cli_runner.invoke(cli, ["store", "info", str(s)])
    assert info.exit_code == 0 and f"MISSING: 1 partition file(s), e.g. {rel}" in info.stdout
    # the other feature set still answers
    assert cli_runner.invoke(cli, ["sql", str(s), "SELECT count(*) AS n FROM cov", "--format", "json"]).stdout \
        .strip() == json.dumps([{"n": len(cells)}])


# ---- helpers ------------------------------------------------------------------------------------------------


def _raster(path: Path, data: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=str(data.dtype), crs="EPSG:4326", transform=from_origin(5.715, 45.195, 1e-4, 1e-4),
                       nodata=0) as ds:
        ds.write(data)
    return path


def _vrt(path: Path, source: Path) -> Path:
    """A VRT over every band of `source` (written by hand: no gdalbuildvrt needed)."""
    with rasterio.open(source) as ds:
        t, w, h, crs, count = ds.transform, ds.width, ds.height, ds.crs.to_wkt(), ds.count
        gdal_type = {"uint8": "Byte", "float32": "Float32"}[ds.dtypes[0]]
    bands = "".join(
        f'<VRTRasterBand dataType="{gdal_type}" band="{b}"><NoDataValue>0</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/><DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
        "</SimpleSource></VRTRasterBand>" for b in range(1, count + 1))
    path.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{crs.replace("<", "&lt;")}</SRS>'
                    f"<GeoTransform>{t.c},{t.a},{t.b},{t.f},{t.d},{t.e}</GeoTransform>{bands}</VRTDataset>")
    return path
