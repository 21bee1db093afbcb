"""`botaclip store ...` and `botaclip sql`: parse, call botaclip.store, print."""

from __future__ import annotations

import csv
import io
import json
import sys

import click

from botaclip.config import default
from botaclip.errors import BotaclipError, InvalidInputError
from botaclip.pipeline.location_config import LocationConfig
from botaclip.store.external_config import RasterEmbeddingConfig


def _open(path: str, read_only: bool = True):
    from botaclip.store import Store

    return Store.open(path, read_only=read_only)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


class _StoreGroup(click.Group):
    """`botaclip store`, whose `diagnose` subcommand (embedding-space diagnostics: scipy, pandas, matplotlib) is
    imported only when it runs or a help page lists it, so the other store commands start fast."""

    _lazy = {"diagnose": ("botaclip.commands.diagnose", "diagnose")}

    def get_command(self, ctx: click.Context, name: str):
        if name in self._lazy and name not in self.commands:
            import importlib

            module, attr = self._lazy[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))


@click.group("store", cls=_StoreGroup)
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
              help="One unit-normalised embedding per cell (other models' embeddings): a list/array column "
                   "holding a vector per row (GeoParquet embedding tables), or the numeric value columns packed.")
@click.option("--kind", type=click.Choice(["imported", "covariates", "external"]), default="imported",
              show_default=True, help="Kind recorded in the catalog (external: another product's embeddings).")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature set of that name.")
def import_cmd(store, file, name, lat_col, lng_col, h3_col, crs, columns, as_embedding, kind, overwrite) -> None:
    """Import FILE (points or polygons in any CRS, or H3 cells, with numeric or vector columns) into STORE,
    averaged per cell; a polygon goes to every cell whose centre it contains."""
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
@click.option("--name", required=True, help="Name of the feature set to create.")
@click.option("--embedding", "fmt", type=click.Choice(["alphaearth", "float"]), default=None,
              help="The rasters are one embedding (a mosaic, any CRS, UTM zones mixed) rather than covariates: "
                   "alphaearth = AlphaEarth Satellite Embedding COGs (64 int8 bands, dequantised, -128 masked); "
                   "float = any float embedding raster (TESSERA exports, your model's; nodata/NaN masked). Writes "
                   "a unit-length embedding set of kind 'external': per cell the renormalised mean of its valid "
                   "pixel vectors, with valid_fraction and n_obs. Resumable: run it again to finish.")
@click.option("--min-valid", type=click.FloatRange(0, 1), default=default(RasterEmbeddingConfig, "min_valid"),
              show_default=True, help="With --embedding: skip cells whose valid-pixel fraction is below this.")
@click.option("--product", help="With --embedding: product name kept in the provenance (default for alphaearth: "
                                "AlphaEarth Foundations Satellite Embedding).")
@click.option("--product-version", "version", help="With --embedding: the product's version, kept in the provenance.")
@click.option("--year", type=int, help="With --embedding: the year the embeddings describe (default: the year the "
                                       "file names share).")
@click.option("--stat", type=click.Choice(["mean", "median"]), default="mean", show_default=True,
              help="Covariates: summary of the pixels whose centre falls in each hexagon.")
@click.option("--like", help="Covariates: summarise for the cells of this feature set (default: cells the rasters "
                             "cover).")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature set of that name.")
def add_raster_cmd(store, rasters, name, fmt, min_valid, product, version, year, stat, like, overwrite) -> None:
    """Summarise RASTERS per cell: covariates (elevation, climate, ...; one column per band) or, with
    --embedding, an embedding product (AlphaEarth, TESSERA, ...) as one unit-length embedding per cell."""
    if fmt is None:
        from botaclip.store.io import add_raster

        r = add_raster(_open(store, read_only=False), name, list(rasters), stat=stat, like=like, overwrite=overwrite)
        click.echo(f"wrote {r['cells']} cells of {name!r} (columns {', '.join(r['columns'])})")
        return
    from botaclip.progress import Echo
    from botaclip.store.external import add_raster_embedding

    if stat != "mean" or like:
        raise InvalidInputError(f"{'--stat' if stat != 'mean' else '--like'} is for covariates; with --embedding "
                                "each cell gets the renormalised mean of its pixels, for the cells the rasters cover")
    r = add_raster_embedding(_open(store, read_only=False), name, list(rasters), fmt=fmt, min_valid=min_valid,
                             product=product, version=version, year=year, overwrite=overwrite,
                             progress=Echo(tqdm=True))
    done = f"; {r.partitions_done_before} partition(s) finished before were kept" if r.partitions_done_before else ""
    click.echo(f"wrote {r.cells} cells of {name!r} ({r.dim}-d external embedding, {r.valid_pixels} valid pixels, "
               f"{r.skipped_low_valid} cells below --min-valid skipped){done} in {r.seconds:.1f} s")


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


def _parse_point(text: str, option: str = "--point") -> tuple[float, float]:
    try:
        lat, lng = (float(v) for v in text.split(","))
    except ValueError:
        raise BotaclipError(f"{option} {text!r} must be LAT,LNG in degrees, e.g. 45.19,5.72") from None
    return lat, lng


def _parse_cells(text: str, store) -> list:
    """Cells of `--cells`: comma-separated hex ids, or a file (CSV/Parquet/GeoPackage of points or cells)."""
    import os

    if os.path.isfile(text):
        from botaclip.store.region import cells_of_file

        return list(cells_of_file(store, text))
    return [c.strip() for c in text.split(",") if c.strip()]


@store_group.command("similar")
@click.argument("store", type=click.Path())
@click.option("--feature-set", "name", required=True, help="Embedding feature set to search.")
@click.option("--cell", help="Query by example: an H3 cell (hex).")
@click.option("--point", help="Query by example: a point LAT,LNG in degrees (its containing cell).")
@click.option("--cells", help="Query by example: several cells (their mean embedding), as hex ids separated by "
                              "commas, or a CSV/Parquet/GeoPackage file of points (lat/lng columns or geometry) or "
                              "of cells (an h3 column), e.g. your plots: \"places like these plots\".")
@click.option("--polygon", type=click.Path(), help="Query by example: a polygon file (GeoJSON, GeoPackage, any "
                                                 "CRS): the mean embedding of the stored cells whose centre is inside.")
@click.option("-k", "k", type=click.IntRange(1, 100000), default=10, show_default=True, help="Number of results.")
@click.option("--within", help="Only cells in this region: an H3 cell (hex), a bbox west,south,east,north (WGS84 "
                               "degrees), or a polygon file.")
@click.option("--max-km", type=float, help="Only cells whose centre is within this many km of --near (default: "
                                           "the example's location).")
@click.option("--near", help="LAT,LNG (degrees) that --max-km and the distance_km column measure from.")
@click.option("--exact", is_flag=True, help="Exact search even when an ANN index is present.")
@click.option("--ann", "force_ann", is_flag=True,
              help="Use the ANN index (`botaclip store ann build`); an error if there is none or it is stale.")
@click.option("--centered", is_flag=True,
              help="Rank by centred cosine (the set's mean vector subtracted; exact search only): raw cosine over a "
                   "nearly collinear set is about 1 for every cell.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet", "gpkg"]), default="table",
              show_default=True, help="Output format; parquet and gpkg (hexagons for QGIS) need --out.")
@click.option("--out", type=click.Path(), help="Write the result to this file (outside the store).")
def similar_cmd(store, name, cell, point, cells, polygon, k, within, max_km, near, exact, force_ann, centered,
                fmt, out) -> None:
    """List the k cells whose embeddings are most similar (cosine) to an example: a cell, a point, a set of cells
    or a polygon. Answers from the set's ANN index when one is fresh, else exactly; says which on stderr."""
    from botaclip.store.similarity import similar

    if exact and force_ann:
        raise BotaclipError("give --exact or --ann, not both")
    if fmt in ("parquet", "gpkg") and not out:
        raise BotaclipError(f"--format {fmt} needs --out FILE.{fmt}")
    if out:
        from botaclip.store.outputs import check_output_path

        check_output_path(out)
    s = _open(store)
    table = similar(s, name, cell=cell, point=_parse_point(point) if point else None,
                    cells=tuple(_parse_cells(cells, s)) if cells else None, polygon=polygon, k=k, within=within,
                    max_km=max_km, near=_parse_point(near, "--near") if near else None,
                    method="exact" if exact else ("ann" if force_ann else "auto"), centered=centered)
    meta = table.schema.metadata or {}
    click.echo(f"# {meta.get(b'example', b'').decode()}; answered by {meta.get(b'answered_by', b'').decode()}",
               err=True)
    if fmt == "gpkg":
        _write_gpkg(table, out, name)
    else:
        _emit(table.drop(["h3"]).replace_schema_metadata(None), fmt, out)


def _write_gpkg(table, out: str | None, layer: str) -> None:
    """The result as hexagon polygons (EPSG:4326) in a GeoPackage, h3 as hex text (GDAL has no uint64)."""
    import geopandas as gpd

    from botaclip.store import h3vec

    df = table.drop(["h3"]).replace_schema_metadata(None).to_pandas()
    gdf = gpd.GeoDataFrame(df, geometry=list(h3vec.cells_to_polygons(table.column("h3").to_numpy())),
                           crs="EPSG:4326")
    gdf.to_file(out, layer=f"similar_{layer}", driver="GPKG")
    click.echo(f"wrote {table.num_rows} rows to {out}")


@store_group.group("ann")
def ann_group() -> None:
    """A persistent approximate-nearest-neighbour index per embedding set (faiss IVF; the `ann` extra)."""


@ann_group.command("build")
@click.argument("store", type=click.Path())
@click.option("--feature-set", "name", required=True, help="Embedding feature set to index.")
@click.option("--nlist", type=click.IntRange(1), help="Inverted lists (default: about 2 sqrt(rows)).")
@click.option("--nprobe", type=click.IntRange(1), help="Lists probed per query (default: nlist / 32, at least 8).")
@click.option("--threads", type=click.IntRange(1), help="Threads for the build (default: all cores).")
def ann_build_cmd(store, name, nlist, nprobe, threads) -> None:
    """Build (or rebuild) the ANN index of a feature set; `store similar` then uses it while it is fresh."""
    from botaclip.store import ann

    r = ann.build(_open(store, read_only=False), name, nlist=nlist, nprobe=nprobe, threads=threads)
    click.echo(f"built {r['index_type']} over {r['rows']} rows of {name!r} in {r['build_seconds']:.1f} s "
               f"(nprobe {r['nprobe']}): {r['dir']}")


@ann_group.command("info")
@click.argument("store", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def ann_info_cmd(store, as_json) -> None:
    """List the ANN indexes of STORE and whether each is fresh (built from the set as it is now)."""
    from botaclip.store import ann

    s = _open(store)
    rows = [dict(st, name=n) for n in s.feature_sets() if s.spec(n).is_embedding
            for st in [ann.status(s, n)] if st is not None]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        click.echo("no ANN index; build one with `botaclip store ann build STORE --feature-set NAME`")
    for r in rows:
        state = "fresh" if r["fresh"] else "STALE (the set was written since; rebuild it)"
        click.echo(f"{r['name']}: {r['index_type']}, {r['rows']} rows, nprobe {r['nprobe']}, built {r['built']}, "
                   f"{state}")


@ann_group.command("drop")
@click.argument("store", type=click.Path())
@click.option("--feature-set", "name", required=True, help="Feature set whose index to remove.")
def ann_drop_cmd(store, name) -> None:
    """Remove a feature set's ANN index (searches are then exact)."""
    from botaclip.store import ann

    done = ann.drop(_open(store, read_only=False), name)
    click.echo(f"dropped the ANN index of {name!r}" if done else f"{name!r} had no ANN index")


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
