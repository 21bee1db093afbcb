"""`botaclip store ...` and `botaclip sql`: parse, call botaclip.store, print."""

from __future__ import annotations

import csv
import io
import json
import sys

import click

from botaclip.config import default
from botaclip.errors import BotaclipError
from botaclip.pipeline.location_config import LocationConfig


def _open(path: str, read_only: bool = True):
    from botaclip.store import Store

    return Store.open(path, read_only=read_only)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group("store")
def store_group() -> None:
    """Create, inspect, fill and export an H3 feature store (Parquet feature sets + a DuckDB catalog)."""


@store_group.command("create")
@click.argument("store", type=click.Path())
@click.option("--resolution", type=click.IntRange(0, 15), default=10, show_default=True,
              help="H3 resolution of the store's cells (10 = about 0.015 km2).")
@click.option("--partition-resolution", type=click.IntRange(0, 15), default=None,
              help="Resolution of the coarse parent cells that partition the files (default: resolution - 4).")
def create_cmd(store: str, resolution: int, partition_resolution: int | None) -> None:
    """Create an empty store in a new directory STORE."""
    from botaclip.store import Store

    s = Store.create(store, resolution=resolution, partition_resolution=partition_resolution)
    click.echo(f"created store {s.path} (resolution {s.resolution}, partitions at resolution "
               f"{s.partition_resolution}); query it with `duckdb {s.catalog_path}` or `botaclip sql {store} ...`")


@store_group.command("info")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info_cmd(store: str, as_json: bool) -> None:
    """Show the feature sets of STORE: kind, dims or columns, dtype, rows, size on disk, provenance."""
    s = _open(store)
    infos = [s.info(n) for n in s.feature_sets()]
    if as_json:
        click.echo(json.dumps({"path": str(s.path), "resolution": s.resolution,
                               "partition_resolution": s.partition_resolution, "feature_sets": infos},
                              indent=2, default=str))
        return
    click.echo(f"store {s.path}: resolution {s.resolution}, partitions at resolution {s.partition_resolution}, "
               f"{len(infos)} feature set(s)")
    for i in infos:
        shape = f"dim {i['dim']}" if "dim" in i else f"columns {', '.join(i['columns'])}"
        click.echo(f"  {i['name']}: {i['kind']}, {shape}, {i['dtype']}, {i['rows']} rows in {i['partitions']} "
                   f"partitions, {_human(i['bytes'])}")
        for what in ("damaged", "missing"):
            if i[what]:
                click.echo(f"    {what.upper()}: {len(i[what])} partition file(s), e.g. {i[what][0]}; run "
                           f"`botaclip store verify {store} --repair`")
        prov = {k: v for k, v in i["provenance"].items() if v not in (None, "", [], {})}
        if prov:
            click.echo("    provenance: " + json.dumps(prov, default=str, sort_keys=True))


@store_group.command("verify")
@click.argument("store", type=click.Path())
@click.option("--repair", is_flag=True,
              help="Move damaged partition files to STORE/quarantine/ and drop them (and missing ones) from the "
                   "catalog, so the rest stays usable; `botaclip index` then recomputes their cells.")
def verify_cmd(store: str, repair: bool) -> None:
    """Check STORE: every file readable, catalog counts match, no duplicate cell (exit 1 on a problem)."""
    rep = _open(store, read_only=not repair).verify(repair=repair)
    for line in rep.repairs:
        click.echo(f"repaired: {line}", err=True)
    for w in rep.warnings:
        click.echo(f"warning: {w}", err=True)
    for p in rep.problems:
        click.echo(f"problem: {p}", err=True)
    click.echo(f"{'ok' if rep.ok else 'INVALID'}: {rep.files} files, {rep.rows} rows checked, "
               f"{len(rep.problems)} problem(s), {len(rep.warnings)} warning(s)")
    if not rep.ok:
        sys.exit(1)


@store_group.command("import")
@click.argument("store", type=click.Path())
@click.argument("file", type=click.Path())
@click.option("--name", required=True, help="Name of the feature set to create (lower-case identifier).")
@click.option("--lat", "lat_col", help="Latitude / y column (default: lat, latitude, decimalLatitude, y).")
@click.option("--lng", "lng_col", help="Longitude / x column (default: lng, lon, longitude, decimalLongitude, x).")
@click.option("--h3", "h3_col", help="Column of H3 cell ids (default: h3, h3_cell, cell) instead of coordinates.")
@click.option("--crs", help="CRS of the coordinates (e.g. EPSG:2154) when the file does not say (CSV).")
@click.option("--columns", help="Comma-separated value columns (default: every numeric column).")
@click.option("--embedding", "as_embedding", is_flag=True,
              help="Pack the value columns into one unit-normalised embedding (other models' embeddings).")
@click.option("--kind", type=click.Choice(["imported", "covariates"]), default="imported", show_default=True,
              help="Kind recorded in the catalog.")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature set of that name.")
def import_cmd(store, file, name, lat_col, lng_col, h3_col, crs, columns, as_embedding, kind, overwrite) -> None:
    """Import FILE (points in any CRS, or H3 cells, with numeric columns) into STORE, averaged per cell."""
    from botaclip.store.io import import_table

    s = _open(store, read_only=False)
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    r = import_table(s, name, file, lat_col=lat_col, lng_col=lng_col, h3_col=h3_col, crs=crs, columns=cols,
                     as_embedding=as_embedding, kind=kind, overwrite=overwrite)
    what = f"an embedding of dim {r['dim']}" if r["dim"] else f"columns {', '.join(r['columns'])}"
    click.echo(f"imported {r['rows_read']} rows into {r['cells']} cells of {name!r} ({what})")


@store_group.command("add-raster")
@click.argument("store", type=click.Path())
@click.argument("rasters", nargs=-1, required=True, type=click.Path())
@click.option("--name", required=True, help="Name of the covariate feature set to create.")
@click.option("--stat", type=click.Choice(["mean", "median"]), default="mean", show_default=True,
              help="Summary of the pixels whose centre falls in each hexagon.")
@click.option("--like", help="Summarise for the cells of this feature set (default: cells the rasters cover).")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature set of that name.")
def add_raster_cmd(store, rasters, name, stat, like, overwrite) -> None:
    """Summarise covariate RASTERS (elevation, climate, ...) per cell into a covariate feature set."""
    from botaclip.store.io import add_raster

    r = add_raster(_open(store, read_only=False), name, list(rasters), stat=stat, like=like, overwrite=overwrite)
    click.echo(f"wrote {r['cells']} cells of {name!r} (columns {', '.join(r['columns'])})")


@store_group.command("add-location")
@click.argument("store", type=click.Path())
@click.option("--name", required=True, help="Name of the location feature set to create (lower-case identifier).")
@click.option("--model", default=default(LocationConfig, "model"), show_default=True,
              help="Pretrained location encoder: geoclip (GeoCLIP, 512-d; needs the botaclip[geoclip] extra).")
@click.option("--like", help="Embed the cells of this feature set.")
@click.option("--region", help="Or embed the cells of a region: sample, a bbox west,south,east,north (WGS84 degrees), "
                               "a polygon file or an H3 cell file.")
@click.option("--batch-size", type=int, default=default(LocationConfig, "batch_size"), show_default=True,
              help="Cells per forward pass.")
@click.option("--device", default=default(LocationConfig, "device"), show_default=True,
              help="auto, cpu or cuda[:N] (the encoder is small: a CPU does millions of cells in minutes).")
@click.option("--limit", type=int, help="Embed at most this many new cells (a trial run; rerun to complete).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing feature set of that name (built aside, swapped in when complete).")
def add_location_cmd(store, name, model, like, region, batch_size, device, limit, overwrite) -> None:
    """Embed the centre (lat, lng) of every cell of a feature set (--like) or a region (--region) with a pretrained
    location encoder into a unit-length embedding feature set of kind "location" (no imagery needed).

    Resumable: cells already in the set are skipped, so rerun the same command after a kill. The provenance
    records the package, its version and the sha256 of the weights file; nothing is downloaded.
    """
    from botaclip.pipeline.location import add_location, location_summary_line
    from botaclip.progress import Echo

    config = LocationConfig(model=model, like=like, region=region, batch_size=batch_size, device=device, limit=limit,
                            overwrite=overwrite)
    summary = add_location(_open(store, read_only=False), name, config, progress=Echo(lambda m: click.echo(m, err=True)))
    click.echo(location_summary_line(summary))


@store_group.command("export")
@click.argument("store", type=click.Path())
@click.option("--feature-set", "name", required=True, help="Feature set to export.")
@click.option("--out", required=True, type=click.Path(), help="Output .parquet (GeoParquet) or .gpkg (GeoPackage).")
def export_cmd(store, name, out) -> None:
    """Export a feature set with hexagon geometries to GeoParquet or GeoPackage (for QGIS)."""
    from botaclip.store.io import export

    r = export(_open(store), name, out)
    click.echo(f"wrote {r['rows']} cells to {r['path']}")


def _parse_point(text: str) -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise BotaclipError(f"--point {text!r} must be LAT,LNG in degrees, e.g. 45.19,5.72") from None
    return lat, lng


@store_group.command("similar")
@click.argument("store", type=click.Path())
@click.option("--feature-set", "name", required=True, help="Embedding feature set to search.")
@click.option("--cell", help="Query H3 cell (hex).")
@click.option("--point", help="Query point LAT,LNG in degrees (its containing cell is used).")
@click.option("-k", "k", type=click.IntRange(1, 100000), default=10, show_default=True, help="Number of results.")
@click.option("--within", help="Region: an H3 cell (hex), a bbox west,south,east,north (WGS84 degrees), or a polygon file.")
@click.option("--method", type=click.Choice(["brute", "hnsw"]), default="brute", show_default=True,
              help="Exact brute force, or an HNSW index (needs the vss extension: botaclip[ann]).")
@click.option("--centered", is_flag=True,
              help="Rank by centred cosine (the set's mean vector subtracted; exact search only): raw cosine over a "
                   "nearly collinear set is about 1 for every cell.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="Output format.")
def similar_cmd(store, name, cell, point, k, within, method, centered, fmt) -> None:
    """List the k cells whose embeddings are most similar (cosine) to a cell's or a point's."""
    from botaclip.store.similarity import similar

    table = similar(_open(store), name, cell=cell, point=_parse_point(point) if point else None, k=k,
                    within=within, method=method, centered=centered)
    _emit(table.drop(["h3"]), fmt, None)


def _emit(table, fmt: str, out: str | None) -> None:
    """Print or write an Arrow table as table, csv, json or parquet."""
    import pyarrow.parquet as pq

    if fmt == "parquet":
        if not out:
            raise BotaclipError("--format parquet needs --out FILE")
        pq.write_table(table, out, compression="zstd")
        click.echo(f"wrote {table.num_rows} rows to {out}")
        return
    if fmt == "json":
        text = json.dumps(table.to_pylist(), default=str, indent=None) + "\n"
    elif fmt == "csv":
        rows = table.to_pylist()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(table.column_names)
        for r in rows:
            w.writerow([json.dumps(v) if isinstance(v, (list, dict)) else v for v in r.values()])
        text = buf.getvalue()
    else:
        text = _format_table(table)
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"wrote {table.num_rows} rows to {out}")
    else:
        click.echo(text, nl=False)


def _format_table(table, max_rows: int = 200, max_width: int = 40) -> str:
    names = table.column_names
    rows = table.slice(0, max_rows).to_pylist()

    def cell(v) -> str:
        s = "NULL" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
        return s if len(s) <= max_width else s[: max_width - 3] + "..."

    grid = [[cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n)] + [len(g[j]) for g in grid]) for j, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(g, widths)) for g in grid]
    more = table.num_rows - len(rows)
    lines.append(f"({table.num_rows} rows" + (f", {more} not shown; use --format csv/--out" if more > 0 else "") + ")")
    return "\n".join(lines) + "\n"


@click.command("sql")
@click.argument("store", type=click.Path())
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format.")
@click.option("--out", type=click.Path(), help="Write the result to this file (outside the store) instead of stdout.")
def sql_cmd(store: str, query: str, fmt: str, out: str | None) -> None:
    """Run a read-only SQL query on STORE with every feature-set view and the H3 functions available.

    Read-only: only queries run (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN); statements
    that would change the catalog or write files (CREATE, DROP, INSERT, COPY, ATTACH, SET, ...) are refused.
    """
    from botaclip.store.outputs import check_output_path
    from botaclip.store.query import run_query

    if out:
        check_output_path(out)
    _emit(run_query(_open(store), query), fmt, out)


# `botaclip store diagnose` lives in its own module (embedding-space diagnostics, botaclip/diagnostics).
from botaclip.commands.diagnose import diagnose as _diagnose_cmd  # noqa: E402

store_group.add_command(_diagnose_cmd)

