"""Reading occurrence files: formats, Darwin Core column detection, coordinate reference systems, and the
per-species samples (presence-absence, presence-only, abundance) built from them.

Every reader returns :class:`Occurrences`: one row per record with WGS84 ``lat``/``lng`` in degrees, the species
name, a ``present`` flag, an optional ``value`` (count or cover), ``uncertainty_m`` and an optional ``site`` id.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param

KINDS = ("presence-absence", "presence-only", "abundance")

# Candidate column names per role, Darwin Core first; matched case-insensitively.
LAT_NAMES = ("decimalLatitude", "latitude", "lat", "y")
LNG_NAMES = ("decimalLongitude", "longitude", "lng", "lon", "long", "x")
SPECIES_NAMES = ("species", "scientificName", "acceptedScientificName", "taxon", "taxon_name", "species_name")
STATUS_NAMES = ("occurrenceStatus", "status", "presence")
COUNT_NAMES = ("individualCount", "organismQuantity", "abundance", "count")
VALUE_NAMES = COUNT_NAMES + ("cover",)
SITE_NAMES = ("releve_id", "plot_id", "site_id", "eventID", "locationID", "releve", "plot", "site")
UNCERTAINTY_NAMES = ("coordinateUncertaintyInMeters", "uncertainty_m", "coordinate_uncertainty")

_PRESENT = {"present", "presence", "1", "true", "yes", "p"}
_ABSENT = {"absent", "absence", "0", "false", "no", "a"}
_TABLE_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".geoparquet", ".pq"}
_VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb"}


@dataclass
class Occurrences:
    """Occurrence records in WGS84, one row per record.

    ``records`` columns: ``lat``, ``lng`` (degrees), ``species`` (str, may be empty for generic background rows),
    ``present`` (bool), ``value`` (float or NaN), ``uncertainty_m`` (metres or NaN), ``site`` (str or None).
    ``columns`` maps each role to the source column used (None if absent).
    """

    records: pd.DataFrame
    path: str
    columns: dict[str, str | None]
    crs: str = "EPSG:4326"
    notes: list[str] = field(default_factory=list)
    # why some values are unusable as amounts ("N rows hold text such as 'many'"), refused for abundance models
    value_problems: list[str] = field(default_factory=list)

    @property
    def has_site(self) -> bool:
        return self.columns.get("site") is not None

    @property
    def has_absences(self) -> bool:
        return bool((~self.records["present"]).any())

    @property
    def has_values(self) -> bool:
        return self.columns.get("value") is not None

    def species_names(self) -> list[str]:
        """Species of the vocabulary (names with at least one record), sorted."""
        names = self.records["species"]
        return sorted(n for n in names.unique() if isinstance(n, str) and n)

    def presence_counts(self) -> dict[str, int]:
        """Number of presence records per species (before cleaning)."""
        pres = self.records[self.records["present"] & (self.records["species"] != "")]
        return pres.groupby("species").size().to_dict()

    def infer_kind(self) -> str:
        """The kind of data the file most likely holds.

        A site (plot/relevé) column means surveys: abundance if the value column holds counts, otherwise
        presence-absence. Without sites: presence-absence if the status column holds absences, else presence-only.
        """
        if self.has_site:
            value_col = (self.columns.get("value") or "").lower()
            if value_col in {n.lower() for n in COUNT_NAMES}:
                return "abundance"
            return "presence-absence"
        return "presence-absence" if self.has_absences else "presence-only"

    def check_species(self, species: str) -> None:
        """Raise a one-line error, with close names, if ``species`` has no record in the file."""
        names = self.species_names()
        if species in names:
            return
        close = difflib.get_close_matches(species, names, n=3, cutoff=0.6)
        lowered = [n for n in names if n.lower() == species.lower()]
        hint = f"; did you mean {', '.join(repr(c) for c in (lowered or close))}?" if (lowered or close) else (
            f"; the file has {len(names)} species (e.g. {', '.join(repr(n) for n in names[:3])})" if names else "")
        raise InvalidInputError(f"species {species!r} not found in {self.path}{hint}")


def _find_column(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _resolve(columns, given: str | None, candidates, role: str, name: str, path: str, required: bool):
    """The column for ``role``: the one given in parameter ``name``, else the first recognised candidate."""
    if given is not None:
        if given not in columns:
            raise InvalidInputError(f"column {given!r} ({param(name)}) not in {path}; columns are: "
                                    f"{', '.join(columns)}")
        return given
    found = _find_column(columns, candidates)
    if found is None and required:
        raise InvalidInputError(
            f"{path} has no {role} column (looked for {', '.join(candidates)}); name it with {param(name)}"
        )
    return found


def _read_table(path: Path) -> pd.DataFrame:
    """A delimited text file; tab-separated when the header holds more tabs than commas (GBIF downloads)."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    sep = "\t" if path.suffix.lower() == ".tsv" or header.count("\t") > header.count(",") else ","
    if header.count(";") > max(header.count(","), header.count("\t")):
        sep = ";"
    return pd.read_csv(path, sep=sep, low_memory=False, encoding="utf-8-sig")


def _read_frame(path: Path):
    """(DataFrame or GeoDataFrame, crs or None) from a CSV/TSV, Parquet, GeoParquet or vector file."""
    suffixes = [s.lower() for s in path.suffixes]
    suffix = path.suffix.lower()
    if suffix == ".gz" and len(suffixes) >= 2:
        suffix = suffixes[-2]
    try:
        if suffix in _TABLE_SUFFIXES:
            return _read_table(path)
        if suffix in _PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            meta = pq.read_schema(path).metadata or {}
            if b"geo" in meta:
                import geopandas as gpd

                return gpd.read_parquet(path)
            return pd.read_parquet(path)
        if suffix in _VECTOR_SUFFIXES:
            import geopandas as gpd

            return gpd.read_file(path)
    except BotaclipError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    except Exception as exc:  # pyogrio / pyarrow errors have no common base
        raise InvalidInputError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    raise InvalidInputError(
        f"{path}: unknown occurrence file format {path.suffix or '(no suffix)'!r}; "
        "use .csv/.tsv, .parquet (GeoParquet too) or .gpkg/.geojson"
    )


def _parse_status(series: pd.Series, column: str, path: str) -> np.ndarray:
    """True for present, False for absent; numbers > 0 count as present."""
    if pd.api.types.is_bool_dtype(series):
        return series.fillna(True).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype=np.float64)
        return ~(values <= 0)  # NaN -> present (status unknown, the record is still an observation)
    text = series.astype("string").str.strip().str.lower().fillna("present")
    unknown = sorted(set(text.unique()) - _PRESENT - _ABSENT - {""})
    if unknown:
        raise InvalidInputError(
            f"column {column!r} in {path} holds {', '.join(repr(u) for u in unknown[:3])}; "
            "expected present/absent (or 1/0)"
        )
    return ~text.isin(_ABSENT).to_numpy(dtype=bool)


def _to_wgs84(x: np.ndarray, y: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    from pyproj import CRS, Transformer

    try:
        src = CRS.from_user_input(crs)
    except Exception:
        raise InvalidInputError(f"unknown {param('crs')} {crs!r}; give e.g. EPSG:2154") from None
    if src.equals(CRS.from_epsg(4326)):
        return y, x
    transformer = Transformer.from_crs(src, "EPSG:4326", always_xy=True)
    lng, lat = transformer.transform(x, y)
    return np.asarray(lat, dtype=np.float64), np.asarray(lng, dtype=np.float64)


@dataclass(frozen=True)
class OccurrenceColumns:
    """Column names of an occurrence file where they are not the recognised ones (Darwin Core first), and the
    CRS of coordinate columns (default WGS84 degrees; with another CRS the columns hold northing/easting)."""

    lat_col: str | None = None
    lng_col: str | None = None
    species_col: str | None = None
    value_col: str | None = None
    status_col: str | None = None
    site_col: str | None = None
    crs: str | None = None
    uncertainty_col: str | None = None

    def as_kwargs(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def read_occurrences(path: str | Path, **columns) -> Occurrences:
    """Read occurrences from CSV/TSV, Parquet, GeoParquet or a vector file (GeoPackage, GeoJSON, ...).

    Points come from the geometry (reprojected from its CRS to WGS84) or from coordinate columns: Darwin Core
    ``decimalLatitude``/``decimalLongitude`` (or latitude/lat/y, longitude/lng/lon/x), in degrees unless ``crs``
    names the CRS of the columns (then ``lat_col`` is the northing/y and ``lng_col`` the easting/x).
    ``columns``: the fields of :class:`OccurrenceColumns` as keywords (``lat_col``, ``lng_col``, ``species_col``,
    ``value_col``, ``status_col``, ``site_col``, ``uncertainty_col``, ``crs``); the ``*_col`` ones override the
    detected columns; a missing column is a one-line error naming it.
    """
    cols = OccurrenceColumns(**columns)
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"occurrence file {path} does not exist")
    if path.is_dir() and path.suffix.lower() not in _PARQUET_SUFFIXES:
        raise InvalidInputError(f"{path} is a directory, not an occurrence file")
    frame = _read_frame(path)
    spath = str(path)
    names = [str(c) for c in frame.columns if c != getattr(frame, "_geometry_column_name", None)]
    notes: list[str] = []
    lat, lng, used, out_crs = _points(frame, path, names, cols, notes)

    species_name = _resolve(names, cols.species_col, SPECIES_NAMES, "species", "species_col", spath, True)
    status_name = _resolve(names, cols.status_col, STATUS_NAMES, "status", "status_col", spath, False)
    value_name = _resolve(names, cols.value_col, VALUE_NAMES, "value", "value_col", spath, False)
    site_name = _resolve(names, cols.site_col, SITE_NAMES, "site", "site_col", spath, False)
    unc_name = _resolve(names, cols.uncertainty_col, UNCERTAINTY_NAMES, "uncertainty", "uncertainty_col", spath,
                        False)

    n = len(frame)
    species = frame[species_name].astype("string").str.strip().fillna("").to_numpy(dtype=object)
    present = np.ones(n, dtype=bool)
    if status_name is not None:
        present &= _parse_status(frame[status_name], status_name, spath)
    value = np.full(n, np.nan)
    value_problems: list[str] = []
    if value_name is not None:
        value = pd.to_numeric(frame[value_name], errors="coerce").to_numpy(dtype=np.float64)
        present &= ~(value <= 0)  # a recorded zero count or cover is an absence
        value_problems = _value_problems(frame[value_name], value, value_name, spath)
    uncertainty = (
        pd.to_numeric(frame[unc_name], errors="coerce").to_numpy(dtype=np.float64)
        if unc_name is not None
        else np.full(n, np.nan)
    )
    site = frame[site_name].astype("string").fillna("").to_numpy(dtype=object) if site_name is not None else None
    records = pd.DataFrame(
        {"lat": lat, "lng": lng, "species": species, "present": present, "value": value,
         "uncertainty_m": uncertainty, "site": site}
    )
    used |= {"species": species_name, "status": status_name, "value": value_name, "site": site_name,
             "uncertainty": unc_name}
    return Occurrences(records, spath, used, out_crs, notes, value_problems)


def _points(frame, path: Path, columns: list[str], cols: OccurrenceColumns, notes: list[str]):
    """WGS84 (lat, lng) of every record, from the geometry or the coordinate columns; the columns used and the
    source CRS. A note is added when a geometry has no CRS."""
    crs, spath = cols.crs, str(path)
    geometry = None
    if hasattr(frame, "geometry") and cols.lat_col is None and cols.lng_col is None:
        geometry = frame.geometry
    if geometry is None:
        lat_name = _resolve(columns, cols.lat_col, LAT_NAMES, "latitude", "lat_col", spath, True)
        lng_name = _resolve(columns, cols.lng_col, LNG_NAMES, "longitude", "lng_col", spath, True)
        y = _coordinates(frame[lat_name], lat_name, spath)
        x = _coordinates(frame[lng_name], lng_name, spath)
        lat, lng = (y, x) if crs is None else _to_wgs84(x, y, crs)
        return lat, lng, {"lat": lat_name, "lng": lng_name}, crs or "EPSG:4326"
    geom_types = set(geometry.geom_type.dropna().unique())
    if geom_types - {"Point"}:
        raise InvalidInputError(
            f"{path} holds {', '.join(sorted(geom_types - {'Point'}))} geometries; occurrences must be points"
        )
    src_crs = crs or (geometry.crs.to_string() if geometry.crs is not None else None)
    x = geometry.x.to_numpy(dtype=np.float64)
    y = geometry.y.to_numpy(dtype=np.float64)
    if src_crs is None:
        notes.append(f"{path.name} has no CRS; coordinates read as WGS84 longitude/latitude")
        lat, lng = y, x
    else:
        lat, lng = _to_wgs84(x, y, src_crs)
    return lat, lng, {"lat": "geometry", "lng": "geometry"}, src_crs or "EPSG:4326"


def _text_rows(raw: pd.Series, numbers: np.ndarray) -> np.ndarray:
    """Rows that hold something (not empty) that is not a number."""
    return raw.notna().to_numpy() & (raw.astype("string").str.strip() != "").fillna(False).to_numpy() & \
        np.isnan(numbers)


def _coordinates(raw: pd.Series, column: str, path: str) -> np.ndarray:
    """A coordinate column as float64 (empty cells become NaN, dropped later as missing); text such as
    45°06'N is refused, since silently dropping it would leave no occurrence and a misleading error."""
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    text = _text_rows(raw, values)
    if text.any():
        raise InvalidInputError(f"column {column!r} of {path} holds text such as {raw[text].iloc[0]!r} in "
                            f"{int(text.sum())} row(s), not decimal numbers; convert the coordinates to decimal "
                            "degrees (45°06'N is 45.1) or projected numbers with --crs")
    return values


def _value_problems(raw: pd.Series, values: np.ndarray, column: str, path: str) -> list[str]:
    text = _text_rows(raw, values)
    out = []
    if text.any():
        out.append(f"column {column!r} of {path} holds text such as {raw[text].iloc[0]!r} in {int(text.sum())} "
                   "row(s)")
    negative = values < 0
    if negative.any():
        out.append(f"column {column!r} of {path} holds {int(negative.sum())} negative value(s) (first: "
                   f"{values[negative][0]:g})")
    return out


@dataclass
class Samples:
    """The labelled points of one species before cleaning: one row per site or record.

    ``table`` columns: ``lat``, ``lng``, ``uncertainty_m``, ``y`` (1/0 for presence/absence or background, the
    abundance for 'abundance'), ``given_background`` (True for user-given background rows, presence-only only).
    """

    species: str
    kind: str
    table: pd.DataFrame


def species_samples(occ: Occurrences, species: str, kind: str) -> Samples:
    """The samples of ``species`` for a model of ``kind``.

    presence-absence with sites (a site column, or else each distinct location): every site is a presence if the
    species is recorded there and an absence otherwise. presence-absence without sites: the species' present and
    absent records. presence-only: the species' presence records, plus absence records (of the species or without
    species) as user-given background. abundance: every site with the summed value of the species (0 where it is
    not recorded).
    """
    if kind not in KINDS:
        raise InvalidInputError(f"unknown {param('kind')} {kind!r}; choose from {', '.join(KINDS)}")
    occ.check_species(species)
    rec = occ.records
    is_species = (rec["species"] == species).to_numpy()
    if kind == "presence-only":
        pres = rec[is_species & rec["present"].to_numpy()]
        given = rec[~rec["present"].to_numpy() & (is_species | (rec["species"] == "").to_numpy())]
        table = pd.concat([
            pres.assign(y=1.0, given_background=False),
            given.assign(y=0.0, given_background=True),
        ])[["lat", "lng", "uncertainty_m", "y", "given_background"]]
        return Samples(species, kind, table.reset_index(drop=True))

    if kind == "presence-absence" and not occ.has_site and occ.has_absences:
        sel = rec[is_species]
        table = pd.DataFrame({"lat": sel["lat"], "lng": sel["lng"], "uncertainty_m": sel["uncertainty_m"],
                              "y": sel["present"].astype(float), "given_background": False})
        return Samples(species, kind, table.reset_index(drop=True))

    if kind == "abundance" and not occ.has_values:
        raise InvalidInputError(
            f"{occ.path} has no value column for abundance (looked for {', '.join(VALUE_NAMES)}); "
            f"name it with {param('value_col')}"
        )
    if kind == "abundance" and occ.value_problems:
        raise InvalidInputError(f"{'; '.join(occ.value_problems)}: abundances must be counts or covers >= 0; fix "
                                f"those rows (or model presence with {param('kind')} presence-absence)")
    # Site-based: each site is one sample for every species of the vocabulary.
    if occ.has_site:
        key = rec["site"].astype(str)
    else:
        key = rec["lat"].round(7).astype(str) + "," + rec["lng"].round(7).astype(str)
    sites = rec.assign(_key=key.to_numpy()).groupby("_key", sort=True)
    site_table = sites.agg(lat=("lat", "first"), lng=("lng", "first"), uncertainty_m=("uncertainty_m", "max"))
    mine = rec[is_species].assign(_key=key.to_numpy()[is_species])
    if kind == "presence-absence":
        y = mine.groupby("_key")["present"].any().reindex(site_table.index, fill_value=False).astype(float)
    else:
        vals = mine["value"].where(mine["present"], 0.0).fillna(0.0)
        y = vals.groupby(mine["_key"]).sum().reindex(site_table.index, fill_value=0.0).astype(float)
    table = site_table.assign(y=y.to_numpy(), given_background=False).reset_index(drop=True)
    return Samples(species, kind, table[["lat", "lng", "uncertainty_m", "y", "given_background"]])
