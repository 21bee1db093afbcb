"""Bad input refused before any work, in one line that names the cause: SDM options and occurrence values,
saved models, raster sizes, imports, add-raster, diagnostics, read-only SQL and the H3 SQL functions."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pandas as pd
import pytest
from test_store_safety import _assert_unchanged, _one_line_error, _raster, _snapshot

from botaclip.cli import cli
from botaclip.store import Store
from botaclip.store.h3sql import register_h3_functions

pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")


def _occurrences(fitted, tmp_path, **columns):
    """The fitted store's presence file with some columns replaced."""
    store_path, _ = fitted
    frame = pd.read_csv(store_path.parent / "po.csv")
    for k, v in columns.items():
        frame[k] = v
    path = tmp_path / "occ.csv"
    frame.to_csv(path, index=False)
    return path


def test_sdm_options_are_validated_before_work(cli_runner, fitted, tmp_path):
    store_path, _ = fitted
    fit = ["sdm", "fit", "--store", store_path, "--occurrences", store_path.parent / "po.csv", "--species", "P a",
           "--features", "emb", "--model", "logistic", "--out", tmp_path / "m"]
    for option, value, message in (("--background", "0", "--background must be a positive count, got 0"),
                                   ("--background", "-5", "--background must be a positive count, got -5"),
                                   ("--seed", "-1", "--seed must be a non-negative integer, got -1"),
                                   ("--jobs", "0", "--jobs must be at least 1"),
                                   ("--max-uncertainty", "-1", "--max-uncertainty must be a non-negative number")):
        _one_line_error(cli_runner, [*fit, option, value], message)
        _one_line_error(cli_runner, ["sdm", "compare", *fit[2:6], "--features", "emb", "--all", option, value],
                        message)
    assert not (tmp_path / "m").exists()


def test_occurrence_values_are_named_when_unusable(cli_runner, fitted, tmp_path):
    store_path, _ = fitted
    n = len(pd.read_csv(store_path.parent / "po.csv"))
    fit = ["sdm", "fit", "--store", store_path, "--species", "P a", "--features", "emb", "--out", tmp_path / "m"]
    occ = _occurrences(fitted, tmp_path, decimalLatitude=["45°06'N"] * n)
    _one_line_error(cli_runner, [*fit, "--occurrences", occ], "'decimalLatitude'", "45°06'N", "decimal degrees")
    occ = _occurrences(fitted, tmp_path, individualCount=["many"] * (n // 2) + [-3] * (n - n // 2))
    _one_line_error(cli_runner, [*fit, "--occurrences", occ, "--kind", "abundance"],
                    "'individualCount'", "holds text such as 'many'", "negative value(s) (first: -3)")
    occ = _occurrences(fitted, tmp_path, coordinateUncertaintyInMeters=5000.0)
    _one_line_error(cli_runner, [*fit, "--occurrences", occ, "--max-uncertainty", "100"],
                    "left after cleaning", f"uncertainty above 100 m: {n}")


def test_damaged_model_arrays_are_named_without_unpickling_advice(cli_runner, fitted, tmp_path):
    store_path, model = fitted
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"\x93NUMPY garbage" * 40):
        copy = tmp_path / "model"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(model, copy)
        arrays = copy / "arrays.npz"
        arrays.write_bytes(damage(arrays.read_bytes()))
        line = _one_line_error(cli_runner, ["sdm", "predict", "--model", copy, "--store", store_path, "--out",
                                            tmp_path / "p.parquet"], "arrays.npz is damaged", "refit the model")
        assert "pickle" not in line


def test_huge_rasters_are_refused_before_predicting(cli_runner, fitted, tmp_path):
    store_path, model = fitted
    predict = ["sdm", "predict", "--model", model, "--store", store_path]
    t0 = time.perf_counter()
    _one_line_error(cli_runner, [*predict, "--out", tmp_path / "x.tif", "--pixel-m", "0.01"],
                    "would have at least", "million pixels", "use a larger --pixel-m", "--force")
    assert time.perf_counter() - t0 < 10
    # with a region the exact extent is known after predicting, still before any pixel is written
    _one_line_error(cli_runner, [*predict, "--out", tmp_path / "x.tif", "--pixel-m", "0.05", "--region",
                                 "6.0,45.1,6.2,45.3"], "would have", "x", "--force")
    assert not list(tmp_path.glob("*.tif"))
    _one_line_error(cli_runner, [*predict, "--out", tmp_path / "x.tif", "--region", "6.0,45.1,6.2,95"],
                    "latitude 95 (north) is outside -90..90")
    r = cli_runner.invoke(cli, [*map(str, predict), "--out", str(tmp_path / "ok.tif")])
    assert r.exit_code == 0 and (tmp_path / "ok.tif").is_file()


def test_import_and_add_raster_refuse_silent_surprises(cli_runner, two_sets, tmp_path):
    store, cells = two_sets
    s = store.path
    hexes = [format(int(c), "x") for c in cells[:3]]
    pd.DataFrame({"h3": hexes, "a": [1.0, 2, 3], "b": ["0.5", "x", "1"]}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"h3": hexes, "a": [1.0, 2, 3], "b": ["0.5", "2", "1"]}).to_parquet(tmp_path / "t.parquet")
    before = _snapshot(s)
    _one_line_error(cli_runner, ["store", "import", s, tmp_path / "t.csv", "--name", "x", "--embedding"],
                    "columns ['b']", "not numeric", "--columns")
    _one_line_error(cli_runner, ["store", "import", s, tmp_path / "t.parquet", "--name", "x", "--columns", "a,b"],
                    "column 'b'", "holds text (first value: '0.5')")
    _one_line_error(cli_runner, ["store", "import", s, tmp_path / "t.csv", "--name", ""],
                    "invalid feature-set name ''")
    far = _raster(tmp_path / "far.tif", np.ones((1, 50, 50), "float32"))  # near 45.19 N but not on these cells
    _one_line_error(cli_runner, ["store", "add-raster", s, far, "--name", "r", "--like", "nosuch"],
                    "no feature set 'nosuch'")
    with Store.open(s).writer("west", kind="covariates", columns=["a"]) as w:
        import h3.api.basic_int as h3i

        w.write(np.array([h3i.latlng_to_cell(45.19, 1.0, 10)], np.uint64), columns={"a": np.ones(1)})
    before = _snapshot(s)
    _one_line_error(cli_runner, ["store", "add-raster", s, far, "--name", "r", "--like", "west"],
                    "no cell of 'west' gets a value", "do not overlap", "nothing was written")
    _assert_unchanged(s, before)


def test_diagnose_refuses_an_empty_list_and_a_negative_seed(cli_runner, two_sets, tmp_path):
    store, _ = two_sets
    for value in ("", ",", " , "):
        _one_line_error(cli_runner, ["store", "diagnose", store.path, "--feature-sets", value, "--out",
                                     tmp_path / "d"], "empty --feature-sets")
    _one_line_error(cli_runner, ["store", "diagnose", store.path, "--seed", "-1"], "--seed must be 0 or more")
    assert not (tmp_path / "d").exists()


def test_sql_is_read_only_and_refuses_empty_queries(cli_runner, two_sets, tmp_path):
    store, cells = two_sets
    s = store.path
    before = _snapshot(s)
    for query in ("", "   ", "-- only a comment", "/* c */"):
        _one_line_error(cli_runner, ["sql", s, "--", query], "the SQL query is empty")
    for query, kind in (("DROP VIEW emb", "DROP"), ("SELECT 1; DROP VIEW emb", "DROP"),
                        ("CREATE TABLE t AS SELECT 1", "CREATE"), (f"COPY emb TO '{tmp_path / 'x.csv'}'", "COPY"),
                        (f"ATTACH '{s / 'catalog.duckdb'}' AS c", "ATTACH"), ("SET threads = 1", "SET"),
                        ("INSERT INTO emb VALUES (1)", "INSERT")):
        _one_line_error(cli_runner, ["sql", s, query], f"read-only: {kind} statements are refused")
    assert not (tmp_path / "x.csv").exists()
    ok = cli_runner.invoke(cli, ["sql", str(s), "DESCRIBE emb", "--format", "csv"])
    assert ok.exit_code == 0 and ok.stdout.startswith("column_name,")
    assert "read-only" in cli_runner.invoke(cli, ["sql", "--help"]).stdout
    _assert_unchanged(s, before)


def test_h3_functions_answer_invalid_input_as_the_duckdb_extension_does():
    """DuckDB's h3 extension returns NULL (it raises for none of these): its own tests have
    h3_latlng_to_cell(0, 0, -1), h3_cell_to_parent(cell, -1), h3_cell_to_children(cell, 30),
    h3_grid_disk(cell, -1), h3_string_to_h3(',,,,,') and h3_cell_to_lat of an invalid cell as NULL."""
    import duckdb

    con = duckdb.connect()
    register_h3_functions(con, prefer_extension=False)
    cell = "h3_string_to_h3('822d57fffffffff')"
    nulls = ["h3_latlng_to_cell(0, 0, -1)", "h3_latlng_to_cell(45.1, 5.9, 99)", "h3_latlng_to_cell_string(0, 0, -1)",
             "h3_string_to_h3('zzzz')", "h3_string_to_h3(',,,,,')", f"h3_cell_to_parent({cell}, -1)",
             f"h3_cell_to_children({cell}, 30)", f"h3_grid_disk({cell}, -1)",
             "h3_cell_to_lat(h3_string_to_h3('ffffffffffffffff'))", "h3_cell_to_latlng(1234)",
             "h3_grid_distance(h3_string_to_h3('86584e9afffffff'), 0)"]
    row = con.execute("SELECT " + ", ".join(nulls)).fetchone()
    assert row == (None,) * len(nulls), dict(zip(nulls, row))
    assert con.execute(f"SELECT h3_h3_to_string(1::UBIGINT), h3_is_valid_cell(1234), {cell}").fetchone() == \
        ("1", False, 586265647244115967)


def test_adapter_or_resume_that_is_not_a_checkpoint(cli_runner, tmp_path):
    from botaclip.errors import BotaclipError
    from botaclip.model.adapter import load_adapter

    text = tmp_path / "adapter.pt"
    text.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(BotaclipError, match="is not a BotaCLIP adapter checkpoint \\(not a PyTorch file") as info:
        load_adapter(text)
    assert "KeyError" not in str(info.value)
    train = ["train", "--releves", tmp_path / "r.csv", "--imagery", tmp_path / "i.tif", "--out", tmp_path / "a.pt"]
    _one_line_error(cli_runner, [*train, "--resume", text], "not a PyTorch file")
    _one_line_error(cli_runner, [*train, "--size-px", "100000"], "--size-px must be between 1 and 2048")
    _one_line_error(cli_runner, [*train, "--seed", "-1"], "--seed must be 0 or more")


def test_similar_within_a_box_beyond_the_poles(cli_runner, two_sets):
    store, cells = two_sets
    _one_line_error(cli_runner, ["store", "similar", store.path, "--feature-set", "emb", "--cell",
                                 format(int(cells[0]), "x"), "--within", "5.7,45.1,5.8,95"],
                    "latitude 95 (north) is outside -90..90")


def test_similar_within_a_swapped_box_is_refused_with_a_hint(cli_runner, two_sets):
    """--within takes west,south,east,north like --region; lat,lng order is refused, the swapped box shown."""
    store, cells = two_sets
    line = _one_line_error(cli_runner, ["store", "similar", store.path, "--feature-set", "emb", "--cell",
                                        format(int(cells[0]), "x"), "--within", "35.6,139.6,35.7,139.8"],
                           "--within", "west,south,east,north", "139.6,35.6,139.8,35.7")
    assert "\n" not in line
