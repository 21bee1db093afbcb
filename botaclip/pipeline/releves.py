"""Reading vegetation relevés (plots with their species composition) for BotaCLIP training.

Accepted layouts:
- long: one row per (relevé, species) with a cover value; plot coordinates either in the same table (repeated per
  row) or in a separate plots table joined on the relevé id;
- wide: one row per relevé, one column per species (cover values), plus id and coordinate columns.

Files: CSV/TSV, Parquet/GeoParquet, GeoPackage (or anything geopandas reads). Coordinates: WGS84 columns
(Darwin Core ``decimalLatitude``/``decimalLongitude`` or lat/lon aliases), a geometry column in any CRS, or x/y
columns with an explicit ``crs``; everything is turned into (lat, lng) in degrees, WGS84.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param

ID_COLUMNS = ("releve_id", "releveID", "eventID", "plot_id", "plotID", "PlotObservationID", "parentEventID", "id")
SPECIES_COLUMNS = ("species", "scientificName", "acceptedScientificName", "taxon", "species_name", "taxon_name")
COVER_COLUMNS = ("cover", "cover_percent", "coverPercent", "percent_cover", "organismQuantity", "abundance")
LAT_COLUMNS = ("decimalLatitude", "latitude", "lat", "Latitude", "LAT")
LNG_COLUMNS = ("decimalLongitude", "longitude", "lng", "lon", "long", "Longitude", "LON")
X_COLUMNS = ("x", "X", "easting")
Y_COLUMNS = ("y", "Y", "northing")
# Columns of a wide table that are not species (anything else is read as one species' cover).
_NON_SPECIES = {
    *ID_COLUMNS, *LAT_COLUMNS, *LNG_COLUMNS, *X_COLUMNS, *Y_COLUMNS, "geometry", "x_l93", "y_l93",
    "elevation_m", "elevation", "habitat", "moisture", "date", "eventDate", "year", "locality", "country",
    "coordinateUncertaintyInMeters", "geodeticDatum", "area_m2", "plot_area", "observer", "notes",
}


@dataclass
class Releves:
    """Relevés ready for training.

    Attributes:
        plots: one row per relevé: ``releve_id`` (str), ``lat``, ``lng`` (degrees, WGS84).
        long: one row per (relevé, species): ``releve_id`` (str), ``species`` (str), ``cover`` (float, percent,
            or 1.0 where the table had presence only).
        skipped: counts of relevés dropped while reading, by reason.
        source: the file read.
    """

    plots: pd.DataFrame
    long: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.plots)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Reads CSV/TSV, Parquet/GeoParquet or any vector format geopandas knows (GeoPackage, GeoJSON, shapefile)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path, sep=None, engine="python") if suffix == ".txt" else pd.read_csv(path)
        if suffix == ".tsv":
            return pd.read_csv(path, sep="\t")
        if suffix in (".parquet", ".geoparquet", ".pq"):
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            if b"geo" in meta:
                import geopandas as gpd

                return gpd.read_parquet(path)
            return pd.read_parquet(path)
        import geopandas as gpd

        return gpd.read_file(path)
    except BotaclipError:
        raise
    except Exception as exc:
        raise BotaclipError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _find(columns, candidates, explicit: str | None, what: str, path) -> str | None:
    if explicit:
        if explicit not in columns:
            raise InvalidInputError(f"column {explicit!r} ({what}) not found in {path}; columns: {', '.join(map(str, columns))}")
        return explicit
    for name in candidates:
        if name in columns:
            return name
    lowered = {str(c).lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _coordinates(df: pd.DataFrame, path, crs: str | None, lat_col=None, lng_col=None) -> pd.DataFrame | None:
    """(lat, lng) in WGS84 degrees for each row, or None if the table has no coordinates."""
    lat = _find(df.columns, LAT_COLUMNS, lat_col, "latitude", path)
    lng = _find(df.columns, LNG_COLUMNS, lng_col, "longitude", path)
    if lat and lng:
        return pd.DataFrame({"lat": _numeric(df[lat], lat, path), "lng": _numeric(df[lng], lng, path)}, index=df.index)
    if (lat is None) != (lng is None):
        missing = "longitude (decimalLongitude)" if lng is None else "latitude (decimalLatitude)"
        raise InvalidInputError(f"missing coordinate column in {path}: {missing}")
    geometry = getattr(df, "geometry", None) if "geometry" in df.columns else None
    if geometry is not None and hasattr(geometry, "to_crs"):
        if geometry.crs is None:
            raise InvalidInputError(f"{path} has a geometry without a CRS; set one (e.g. EPSG:2154) in the file")
        # Centroids in the file's own CRS (meaningful there), then to WGS84.
        points = geometry if (geometry.geom_type == "Point").all() else geometry.centroid
        points = points.to_crs(4326)
        return pd.DataFrame({"lat": points.y.to_numpy(), "lng": points.x.to_numpy()}, index=df.index)
    x = _find(df.columns, X_COLUMNS, None, "x", path)
    y = _find(df.columns, Y_COLUMNS, None, "y", path)
    if x and y:
        if not crs:
            raise InvalidInputError(f"{path} has x/y columns but no latitude/longitude: give their CRS with {param('crs')}")
        from pyproj import Transformer

        try:
            transformer = Transformer.from_crs(crs, 4326, always_xy=True)
        except Exception as exc:
            raise InvalidInputError(f"unknown CRS {crs!r}: {exc}") from exc
        lng_v, lat_v = transformer.transform(_numeric(df[x], x, path).to_numpy(), _numeric(df[y], y, path).to_numpy())
        return pd.DataFrame({"lat": lat_v, "lng": lng_v}, index=df.index)
    return None


def _numeric(values: pd.Series, column: str, path) -> pd.Series:
    """Numbers as float; a clear error naming the first non-numeric value (empty cells become NaN)."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InvalidInputError(
            f"non-numeric value {values.iloc[row]!r} in column {column!r} of {path} (data row {row + 1}); "
            "cover must be a number in percent (convert Braun-Blanquet or other codes first)"
        )
    return converted.astype(float)


def _ids(series: pd.Series) -> pd.Series:
    # Integer ids read from one file and string ids from another must still join: compare as text.
    if pd.api.types.is_float_dtype(series) and series.dropna().eq(series.dropna().round()).all():
        series = series.astype("Int64")
    return series.astype(str)


def read_releves(
    path: str | os.PathLike,
    plots: str | os.PathLike | None = None,
    *,
    layout: str = "auto",
    id_col: str | None = None,
    species_col: str | None = None,
    cover_col: str | None = None,
    crs: str | None = None,
) -> Releves:
    """Reads relevés in long or wide layout, with coordinates from the table itself or from a plots table.

    Args:
        path: the relevé table (CSV/TSV, Parquet, GeoPackage, ...).
        plots: optional plots table (relevé id + coordinates), joined on the relevé id; its coordinates win.
        layout: ``long``, ``wide`` or ``auto`` (long when a species column exists).
        id_col, species_col, cover_col: explicit column names (default: Darwin Core and common aliases).
        crs: CRS of plain x/y columns (e.g. ``EPSG:2154``) when there is no latitude/longitude or geometry.

    Returns:
        :class:`Releves` with (lat, lng) in degrees WGS84 and cover in percent.
    """
    df = read_table(path)
    if len(df) == 0:
        raise InvalidInputError(f"no rows in {path}")
    rid = _find(df.columns, ID_COLUMNS, id_col, "relevé id", path)
    if rid is None:
        raise InvalidInputError(f"missing relevé id column in {path}: expected one of {', '.join(ID_COLUMNS[:5])}")
    species = _find(df.columns, SPECIES_COLUMNS, species_col, "species", path)
    cover = _find(df.columns, COVER_COLUMNS, cover_col, "cover", path)
    if layout == "auto":
        layout = "long" if species or cover else "wide"
    if layout not in ("long", "wide"):
        raise InvalidInputError(f"unknown layout {layout!r}: use long, wide or auto")
    if layout == "long" and species is None:
        raise InvalidInputError(
            f"missing species column in {path}: expected one of {', '.join(SPECIES_COLUMNS[:3])} "
            "(or a wide table with one column per species)"
        )
    ids = _ids(df[rid])
    if ids.isin(["<NA>", "nan", "None"]).any():
        raise InvalidInputError(f"empty relevé id in column {rid!r} of {path}")

    if layout == "long":
        long = _long_layout(df, ids, species, cover, path)
    else:
        long = _wide_layout(df, ids, rid, path)
    coords = _plot_coordinates(df, ids, path, plots, id_col, crs)
    table, long, skipped = _usable(ids, coords, long)
    if len(table) == 0:
        raise InvalidInputError(f"no usable relevé in {path}: {_format_counts(skipped) or 'empty table'}")
    return Releves(plots=table[["releve_id", "lat", "lng"]], long=long, skipped=skipped, source=str(path))


def _long_layout(df: pd.DataFrame, ids: pd.Series, species: str, cover: str | None, path) -> pd.DataFrame:
    """(releve_id, species, cover) rows of a long table: one row per species of a relevé (cover 1 if none)."""
    values = _numeric(df[cover], cover, path) if cover else pd.Series(1.0, index=df.index)
    long = pd.DataFrame({"releve_id": ids, "species": df[species].astype("string"), "cover": values})
    long = long[long["species"].notna() & (long["species"].str.strip() != "")]
    long = long[long["cover"].fillna(0) > 0].reset_index(drop=True)
    long["species"] = long["species"].astype(str)
    return long


def _wide_layout(df: pd.DataFrame, ids: pd.Series, rid: str, path) -> pd.DataFrame:
    """(releve_id, species, cover) rows of a wide table: one column per species."""
    species_cols = [c for c in df.columns if str(c) not in _NON_SPECIES and c != rid]
    if not species_cols:
        raise InvalidInputError(f"missing species columns in {path}: a wide table needs one column per species")
    matrix = pd.DataFrame({c: _numeric(df[c], str(c), path) for c in species_cols}).fillna(0.0)
    matrix.insert(0, "releve_id", ids.to_numpy())
    long = matrix.melt(id_vars="releve_id", var_name="species", value_name="cover")
    long = long[long["cover"] > 0].reset_index(drop=True)
    long["species"] = long["species"].astype(str)
    return long


def _plot_coordinates(df: pd.DataFrame, ids: pd.Series, path, plots, id_col: str | None,
                      crs: str | None) -> pd.DataFrame:
    """(releve_id, lat, lng) of each relevé, from the plots table when given, else from the relevé table."""
    if plots is not None:
        pdf = read_table(plots)
        prid = _find(pdf.columns, ID_COLUMNS, id_col if id_col in pdf.columns else None, "relevé id", plots)
        if prid is None:
            raise InvalidInputError(f"missing relevé id column in {plots}: expected one of {', '.join(ID_COLUMNS[:5])}")
        coords = _coordinates(pdf, plots, crs)
        if coords is None:
            raise InvalidInputError(
                f"missing coordinate columns in {plots}: expected decimalLatitude and decimalLongitude "
                f"(or latitude/longitude, a geometry, or x/y with {param('crs')})"
            )
        coords.insert(0, "releve_id", _ids(pdf[prid]).to_numpy())
    else:
        coords = _coordinates(df, path, crs)
        if coords is None:
            raise InvalidInputError(
                f"missing coordinate columns in {path}: expected decimalLatitude and decimalLongitude "
                f"(or latitude/longitude, a geometry, or x/y with {param('crs')}), or give a plots table with {param('plots')}"
            )
        coords.insert(0, "releve_id", ids.to_numpy())
    return coords.drop_duplicates("releve_id", keep="first")


def _usable(ids: pd.Series, coords: pd.DataFrame, long: pd.DataFrame
            ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The relevés with valid coordinates and at least one species, their species rows, and how many were
    skipped for each reason."""
    skipped: dict[str, int] = {}
    all_ids = pd.Index(pd.unique(ids))
    table = pd.DataFrame({"releve_id": all_ids}).merge(coords, on="releve_id", how="left")
    no_coords = table["lat"].isna() | table["lng"].isna()
    out_of_range = ~no_coords & ((table["lat"].abs() > 90) | (table["lng"].abs() > 180))
    if no_coords.any():
        skipped["no coordinates"] = int(no_coords.sum())
    if out_of_range.any():
        skipped["coordinates out of range"] = int(out_of_range.sum())
    table = table[~no_coords & ~out_of_range]
    has_species = table["releve_id"].isin(set(long["releve_id"]))
    if (~has_species).any():
        skipped["no species"] = int((~has_species).sum())
    table = table[has_species].reset_index(drop=True)
    long = long[long["releve_id"].isin(set(table["releve_id"]))].reset_index(drop=True)
    return table, long, skipped


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items())
