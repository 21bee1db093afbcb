"""Per-cell labels (habitat, land-cover class, ...) read from a CSV or Parquet file and keyed by H3 cell.

The file locates each row either by an `h3` column (uint64 or hex string, at the store's resolution or finer) or
by latitude/longitude columns in degrees (WGS84): `decimalLatitude`/`decimalLongitude` (Darwin Core),
`lat`/`lng`, `lat`/`lon` or `latitude`/`longitude`. Several rows in one cell (points) give the cell its most
frequent label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h3
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd

from botaclip.errors import InvalidInputError, MissingFileError, param

LATLNG_COLUMNS = [
    ("decimalLatitude", "decimalLongitude"),
    ("lat", "lng"),
    ("lat", "lon"),
    ("latitude", "longitude"),
]


@dataclass
class CellLabels:
    """One label per H3 cell.

    h3: (M,) uint64 cell ids at the requested resolution, sorted, unique.
    labels: (M,) labels as strings.
    n_rows: rows in the file; n_rows_dropped: rows without a label or location;
    n_conflicting_cells: cells whose rows disagree (the most frequent label wins, ties to the first in sort order).
    """

    h3: np.ndarray
    labels: np.ndarray
    source: str
    column: str
    n_rows: int
    n_rows_dropped: int
    n_conflicting_cells: int

    def __len__(self) -> int:
        return int(self.h3.shape[0])


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise MissingFileError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq", ".geoparquet"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".tsv"):
            # H3 ids exceed 2**53: read them as text so a missing value cannot turn the column into floats.
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={"h3": str}, low_memory=False)
    except Exception as exc:  # pyarrow / pandas parse errors
        raise InvalidInputError(f"cannot read labels file {path}: {exc}") from exc
    raise InvalidInputError(f"labels file {path} is neither CSV nor Parquet; give a .csv or .parquet file")


def _h3_column_to_int(values: pd.Series, path: Path) -> np.ndarray:
    """H3 ids from integers or hex strings; rows that are missing come back as 0."""
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.to_numpy(dtype=np.uint64, na_value=0)
    if pd.api.types.is_float_dtype(values.dtype):
        raise InvalidInputError(
            f"labels file {path}: the h3 column holds floating-point numbers, which cannot hold H3 ids exactly; "
            "write it as uint64 or as hex strings"
        )
    out = np.zeros(len(values), dtype=np.uint64)
    for row, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        text = str(value).strip()
        try:
            cell = int(text) if text.isdigit() else h3.str_to_int(text)
        except (ValueError, TypeError):
            cell = 0
        if cell == 0 or not h3i.is_valid_cell(cell):
            raise InvalidInputError(
                f"labels file {path}: row {row + 1} has h3 value {text!r}, which is not an H3 cell "
                "(give uint64 ids or hex strings like 8a1f9e5153affff)"
            )
        out[row] = cell
    return out


def _cells_at_resolution(cells: np.ndarray, resolution: int, path: Path) -> np.ndarray:
    out = cells.copy()
    for row, cell in enumerate(cells.tolist()):
        if cell == 0:
            continue
        if not h3i.is_valid_cell(cell):
            raise InvalidInputError(f"labels file {path}: row {row + 1} has h3 value {cell}, which is not an H3 cell")
        res = h3i.get_resolution(cell)
        if res < resolution:
            raise InvalidInputError(
                f"labels file {path}: row {row + 1} has an H3 cell at resolution {res}, coarser than the "
                f"store's {resolution}; give cells at resolution {resolution} (or finer) or lat/lng points"
            )
        if res > resolution:
            out[row] = h3i.cell_to_parent(cell, resolution)
    return out


def read_labels(path: str | Path, label_col: str = "habitat", resolution: int = 10) -> CellLabels:
    """Read per-cell or per-point labels and key them by H3 cell at `resolution`.

    Coordinates are latitude/longitude in degrees (WGS84); H3 cells finer than `resolution` are mapped to their
    parent. Raises MissingFileError when the file is missing, InvalidInputError (one line) when it cannot be
    read or the label column or the location columns are missing.
    """
    path = Path(path)
    table = _read_table(path)
    if label_col not in table.columns:
        raise InvalidInputError(
            f"labels file {path} has no column {label_col!r} (columns: {', '.join(map(str, table.columns))}); "
            f"pass the right one with {param('label_col')}"
        )
    n_rows = len(table)
    if "h3" in table.columns:
        cells = _cells_at_resolution(_h3_column_to_int(table["h3"], path), resolution, path)
    else:
        pair = next(((la, lo) for la, lo in LATLNG_COLUMNS if la in table.columns and lo in table.columns), None)
        if pair is None:
            raise InvalidInputError(
                f"labels file {path} has neither an 'h3' column nor latitude/longitude columns "
                "(decimalLatitude/decimalLongitude, lat/lng, lat/lon or latitude/longitude)"
            )
        lat = pd.to_numeric(table[pair[0]], errors="coerce").to_numpy(dtype=np.float64)
        lng = pd.to_numeric(table[pair[1]], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isfinite(lat) & np.isfinite(lng) & ((np.abs(lat) > 90) | (np.abs(lng) > 180))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                f"labels file {path}: row {row + 1} has latitude {lat[row]}, longitude {lng[row]} outside "
                f"[-90, 90] x [-180, 180]; are {pair[0]} and {pair[1]} swapped or projected?"
            )
        cells = np.zeros(n_rows, dtype=np.uint64)
        for row in np.flatnonzero(np.isfinite(lat) & np.isfinite(lng)).tolist():
            cells[row] = h3i.latlng_to_cell(lat[row], lng[row], resolution)

    raw = table[label_col]
    keep = (cells != 0) & raw.notna().to_numpy()
    frame = pd.DataFrame({"h3": cells[keep], "label": raw[keep].astype(str).to_numpy()})
    counts = frame.groupby(["h3", "label"], sort=True).size().rename("n").reset_index()
    n_labels_per_cell = counts.groupby("h3", sort=False).size()
    # Most frequent label per cell; a stable sort keeps the first label (in sort order) among equals.
    best = counts.sort_values(["h3", "n"], ascending=[True, False], kind="stable").drop_duplicates("h3")
    return CellLabels(
        h3=best["h3"].to_numpy(dtype=np.uint64),
        labels=best["label"].to_numpy(dtype=object).astype(str),
        source=str(path),
        column=label_col,
        n_rows=n_rows,
        n_rows_dropped=int(n_rows - keep.sum()),
        n_conflicting_cells=int((n_labels_per_cell > 1).sum()),
    )
