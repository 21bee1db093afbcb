"""Damaged stores answered in one line: damaged partition files named by every read path, `verify --repair`,
a full disk, a read-only store, a lock file that is a directory, a `features/` that is a file."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from botaclip.cli import cli
from botaclip.errors import StoreDamagedError, StoreWriteError
from botaclip.store import Store
from botaclip.store.io import import_table
from test_store_safety import _assert_unchanged, _one_line_error, _snapshot


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"this is not parquet " * 20)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
def test_damaged_partition_is_named_by_every_read_path(cli_runner, two_sets, tmp_path, how):
    store, cells = two_sets
    s = store.path
    victim = sorted((s / "features" / "emb").glob("parent=*/data.parquet"))[1]
    _damage(victim, how)
    rel = str(victim.relative_to(s))
    with pytest.raises(StoreDamagedError, match=f"{rel} of feature set 'emb' is damaged"):
        store.features_numpy("emb")
    for args in (["store", "export", s, "--feature-set", "emb", "--out", tmp_path / "e.parquet"],
                 ["store", "similar", s, "--feature-set", "emb", "--cell", format(int(cells[0]), "x")],
                 ["store", "diagnose", s]):
        _one_line_error(cli_runner, args, rel, "'emb'", "is damaged", "--repair")
    _one_line_error(cli_runner, ["sql", s, "SELECT count(*) FROM emb"], "'emb'", "damaged", "--repair")
    info = cli_runner.invoke(cli, ["store", "info", str(s)])
    assert info.exit_code == 0 and f"DAMAGED: 1 partition file(s), e.g. {rel}" in info.stdout
    # writing another set still works (the catalog's views cannot be built over the damaged file)
    pd.DataFrame({"lat": [45.19], "lng": [5.72], "v": [1.0]}).to_csv(tmp_path / "p.csv", index=False)
    r = cli_runner.invoke(cli, ["store", "import", str(s), str(tmp_path / "p.csv"), "--name", "plots"])
    assert r.exit_code == 0, r.stderr
    assert cli_runner.invoke(cli, ["sql", str(s), "SELECT v FROM plots", "--format", "csv"]).stdout == "v\n1.0\n"
    v = cli_runner.invoke(cli, ["store", "verify", str(s)])
    assert v.exit_code == 1 and f"problem: {rel}: unreadable" in v.stderr


def test_sdm_fit_names_a_damaged_partition(cli_runner, two_sets, tmp_path):
    store, cells = two_sets
    victim = sorted((store.path / "features" / "emb").glob("parent=*/data.parquet"))[0]
    _damage(victim, "garbage")
    pd.DataFrame({"species": "P a", "decimalLatitude": [45.19] * 12, "decimalLongitude": [5.72] * 12}).to_csv(
        tmp_path / "o.csv", index=False)
    _one_line_error(cli_runner, ["sdm", "fit", "--store", store.path, "--occurrences", tmp_path / "o.csv",
                                 "--species", "P a", "--features", "emb", "--out", tmp_path / "m"],
                    str(victim.relative_to(store.path)), "is damaged")


def test_verify_repair_quarantines_damaged_and_forgets_missing_partitions(cli_runner, two_sets):
    store, cells = two_sets
    s = store.path
    damaged, other = sorted((s / "features" / "emb").glob("parent=*/data.parquet"))
    _damage(damaged, "truncated")
    damaged_bytes = damaged.read_bytes()
    gone = sorted((s / "features" / "cov").glob("parent=*/data.parquet"))[0]
    os.unlink(gone)
    (s / "features" / "stray").mkdir()  # data of no catalogued set
    r = cli_runner.invoke(cli, ["store", "verify", str(s), "--repair"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("ok:")
    repaired = [line for line in r.stderr.splitlines() if line.startswith("repaired: ")]
    assert len(repaired) == 3 and "Traceback" not in r.stderr
    moved = list((s / "quarantine").rglob("*.parquet"))
    assert len(moved) == 1 and moved[0].read_bytes() == damaged_bytes  # set aside, not deleted
    assert not damaged.exists() and not (s / "features" / "stray").exists()
    # the rest is usable again and the catalog agrees with the files
    assert store.info("emb")["rows"] == pq.read_metadata(other).num_rows == 100
    assert store.features_numpy("cov").X.shape == (100, 1)
    out = cli_runner.invoke(cli, ["sql", str(s), "SELECT count(*) AS n FROM emb", "--format", "json"])
    assert json.loads(out.stdout) == [{"n": 100}]
    assert store.verify().ok


def test_full_disk_leaves_the_store_as_it_was(two_sets, tmp_path, monkeypatch):
    """ENOSPC in the middle of a partition file, then in DuckDB's checkpoint of the catalog: every write ends
    in one StoreWriteError, the store is byte for byte as before, and no temporary file is left."""
    import botaclip.store.catalog as catalog
    import botaclip.store.layout as layout

    store, cells = two_sets
    table = tmp_path / "t.parquet"
    pd.DataFrame({"h3": [format(int(c), "x") for c in cells], "v": np.arange(len(cells), dtype=float)}).to_parquet(
        table)
    import_table(store, "plots", str(table))
    before = _snapshot(store.path)
    real_write = layout.pq.write_table
    calls = []

    def full_disk(tbl, where, **kw):
        calls.append(where)
        if len(calls) == 2:  # the second partition: half a file, then the disk is full
            Path(where).write_bytes(b"PAR1" + b"\0" * 100)
            raise OSError(errno.ENOSPC, "Error writing bytes to file")
        return real_write(tbl, where, **kw)

    monkeypatch.setattr(layout.pq, "write_table", full_disk)
    for name, kw in (("fresh", {}), ("plots", {}), ("emb", {"overwrite": True})):  # new, append, replace
        calls.clear()
        with pytest.raises(StoreWriteError, match="No space left on device.*the store is unchanged"):
            import_table(store, name, str(table), **kw)
        _assert_unchanged(store.path, before)
    monkeypatch.setattr(layout.pq, "write_table", real_write)

    real_build = catalog._build_catalog

    def full_at_checkpoint(tmp, state, root):
        real_build(tmp, state, root)
        raise duckdb.IOException('Could not write file "x": No space left on device')

    monkeypatch.setattr(catalog, "_build_catalog", full_at_checkpoint)
    with pytest.raises(StoreWriteError, match="catalog.*No space left on device"):
        import_table(store, "fresh", str(table))
    with pytest.raises(StoreWriteError, match="No space left on device"):
        with store.writer("emb", kind="backbone", dim=8, provenance={"model": "test"}) as w:
            w.write(cells[:3], np.ones((3, 8)))
    monkeypatch.undo()
    assert sorted(_snapshot(store.path)) == sorted(before)
    assert store.verify().ok and store.info("emb")["rows"] == len(cells)


def test_unwritable_store_and_blocked_paths_are_one_line(cli_runner, two_sets, tmp_path, monkeypatch):
    store, cells = two_sets
    s = store.path
    pd.DataFrame({"lat": [45.19], "lng": [5.72], "v": [1.0]}).to_csv(tmp_path / "p.csv", index=False)
    imp = ["store", "import", s, tmp_path / "p.csv", "--name", "plots"]
    before = _snapshot(s)

    (s / ".writer.lock").unlink()
    (s / ".writer.lock").mkdir()
    _one_line_error(cli_runner, imp, ".writer.lock is a directory", "rmdir")
    (s / ".writer.lock").rmdir()

    os.replace(s / "features", tmp_path / "features.moved")
    (s / "features").write_text("")
    for args in (imp, ["store", "info", s], ["sql", s, "SELECT 1"]):
        _one_line_error(cli_runner, args, "features is a file")
    (s / "features").unlink()
    os.replace(tmp_path / "features.moved", s / "features")

    import botaclip.store.lock as lock

    def read_only(path, flags, mode=0o777):  # what the kernel answers on a read-only mount
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(lock.os, "open", read_only)
    _one_line_error(cli_runner, imp, "cannot write to store", "Read-only file system")
    _one_line_error(cli_runner, ["store", "verify", s, "--repair"], "Read-only file system")
    monkeypatch.undo()
    real_access = os.access  # the output folder answers as on a read-only mount (root may write anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not (mode & os.W_OK and Path(p) == tmp_path)
                        and real_access(p, mode, **kw))
    _one_line_error(cli_runner, ["sql", s, "SELECT 1", "--out", tmp_path / "x.csv"], "not writable")
    monkeypatch.undo()
    _one_line_error(cli_runner, ["sql", s, "SELECT 1", "--out", tmp_path / "no" / "x.csv"], "does not exist")
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    monkeypatch.setenv("BOTACLIP_HOME", str(home))
    _one_line_error(cli_runner, ["weights", "download", "dofa-base"], "weights folder", "is a file")
    _assert_unchanged(s, before)
