"""Streaming prediction of a fitted SDM over the indexed cells of a store, and export.

Prediction reads the store one partition at a time (features of one coarse H3 parent), so memory is bounded by
the largest partition, not by the number of cells. Outputs: a predictions table in the store, or a file:
``.parquet`` (h3, suitability), ``.gpkg`` (hexagon polygons), ``.tif`` (Cloud Optimized GeoTIFF at ``pixel_m``
metres, in the local UTM zone or ``crs``), ``.png`` (map) or ``.html`` (interactive map page). Files are written under a temporary name and renamed when complete.
With a threshold (``binary``) every format holds 0/1 presence instead of suitability: a ``presence`` column
(uint8) in tables, a uint8 raster (nodata 255), a two-colour map.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from botaclip.atomic import atomic_write
from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError, param
from botaclip.geo import BBOX_ORDER, is_bbox_text, parse_bbox, union_of_polygons
from botaclip.sdm.cells import cell_to_parent, cells_to_latlng, latlng_to_cells, parse_cell, resolution_of
from botaclip.sdm.config import PredictConfig, check_projected_crs
from botaclip.sdm.dataset import align_rows, provenance_id
from botaclip.sdm.persist import SavedModel
from botaclip.store.outputs import check_output_path

OUTPUT_FORMATS = (".parquet", ".gpkg", ".tif", ".png", ".html")
MAX_TIF_PIXELS = 100_000_000  # about 400 MB uncompressed and a minute or more to fill; above it, --force


class Region:
    """Which cells to predict: all, the descendants of an H3 cell, a lat/lng box, or the polygons of a file."""

    def __init__(self, text: str | None = None):
        self.text = text
        self._mask: Callable[[np.ndarray], np.ndarray] | None = None
        if not text:
            return
        if is_bbox_text(text):
            west, south, east, north = parse_bbox(text, "region")
            self._mask = lambda cells: _in_box(cells, west, south, east, north)
            return
        if Path(text).exists():
            self._mask = _polygon_mask(Path(text))
            return
        try:
            cell = parse_cell(text)
        except (ValueError, Exception):
            raise InvalidInputError(
                f"{param('region')} {text!r} is neither a box ({BBOX_ORDER}), an H3 cell nor an existing file"
            ) from None
        res = int(resolution_of(np.array([cell], dtype=np.uint64))[0])
        self._mask = lambda cells: cell_to_parent(cells, res) == np.uint64(cell)

    def mask(self, cells: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return np.ones(len(cells), dtype=bool)
        return self._mask(np.asarray(cells, dtype=np.uint64))


def _in_box(cells, west, south, east, north) -> np.ndarray:
    lat, lng = cells_to_latlng(cells)
    return (lat >= south) & (lat <= north) & (lng >= west) & (lng <= east)


def _polygon_mask(path: Path):
    import geopandas as gpd
    import shapely

    try:
        frame = gpd.read_file(path)
    except Exception as exc:
        raise InvalidInputError(f"cannot read region file {path}: {exc}") from None
    if frame.crs is not None:
        frame = frame.to_crs(4326)
    shape, _ = union_of_polygons(frame.geometry.values, f"region file {path}")
    shapely.prepare(shape)

    def mask(cells):
        lat, lng = cells_to_latlng(cells)
        return shapely.contains_xy(shape, lng, lat)

    return mask


def check_feature_sets(saved: SavedModel, store) -> None:
    """Raise unless the store has the model's feature sets, with the same provenance and columns."""
    available = set(store.feature_sets())
    for fs in saved.feature_sets:
        name = fs["name"]
        if name not in available:
            raise InvalidInputError(f"the model needs feature set {name!r}, which is not in store {store.path}")
        info = store.info(name)
        prov = dict(info.get("provenance") or {}) | {"kind": info.get("kind"), "dtype": info.get("dtype")}
        if fs.get("provenance_id") and provenance_id(prov) != fs["provenance_id"]:
            raise InvalidInputError(
                f"feature set {name!r} in {store.path} has another provenance than the one the model was fitted "
                f"on (id {provenance_id(prov)} vs {fs['provenance_id']}); refit the model on this store"
            )
    if int(store.resolution) != int(saved.resolution):
        raise InvalidInputError(f"store resolution {store.resolution} differs from the model's {saved.resolution}")


def iter_features(
    store, names: Sequence[str], region: Region | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(h3, X) per partition of ``names[0]``, with the other feature sets joined on the cell (cells missing from
    any set are left out). X is float32 [n, sum of dims]; memory is one partition at a time."""
    for _, cells, X in store.iter_partitions(names[0]):
        cells = np.asarray(cells, dtype=np.uint64)
        X = np.asarray(X, dtype=np.float32)
        if region is not None:
            keep = region.mask(cells)
            cells, X = cells[keep], X[keep]
        if cells.size == 0:
            continue
        blocks = [X]
        for name in names[1:]:
            fm = store.features_numpy(name, cells=cells)
            present = np.asarray(getattr(fm, "found", np.ones(len(cells), dtype=bool)), dtype=bool)
            other = align_rows(np.asarray(fm[0], dtype=np.uint64), np.asarray(fm[1], dtype=np.float32), cells, name)
            if not present.all():
                cells = cells[present]
                blocks = [b[present] for b in blocks]
                other = other[present]
            blocks.append(other)
        if cells.size:
            yield cells, (np.hstack(blocks) if len(blocks) > 1 else blocks[0])


def iter_predictions(saved: SavedModel, store, region: Region | None = None, aoa: bool = False) -> Iterator[tuple]:
    """(h3 uint64, suitability float32) per partition for every indexed cell (in ``region``); with ``aoa``, also
    the dissimilarity index (float32) of each cell (:mod:`botaclip.sdm.aoa`)."""
    kept = np.asarray(saved.kept, dtype=np.int64)
    n_columns = len(saved.columns)
    for cells, X in iter_features(store, saved.feature_set_names, region):
        if X.shape[1] != n_columns:
            raise InvalidInputError(f"the store's features have {X.shape[1]} columns, the model expects {n_columns}")
        X = X[:, kept]
        values = saved.estimator.predict(X).astype(np.float32)
        if aoa:
            from botaclip.sdm.aoa import model_inputs

            yield cells, values, saved.aoa.dissimilarity(model_inputs(saved.estimator, X))
        else:
            yield cells, values


def binary_threshold(saved: SavedModel, threshold: str | float | None = None) -> tuple[float, str]:
    """(value, how) of the threshold that turns ``saved``'s suitability into presence/absence.

    ``threshold``: None (the threshold stored with the model), a rule name (its value on the model's out-of-fold
    predictions, stored with the model) or a value in [0, 1]."""
    from botaclip.sdm.thresholds import parse_threshold

    if saved.kind == "abundance":
        raise InvalidInputError(f"binary output needs a presence model; the {saved.species!r} model predicts "
                                f"abundance (drop {param('binary')})")
    if threshold is None:
        if saved.threshold is None:
            raise InvalidInputError(f"the model has no stored threshold; give one in {param('threshold')} (a rule or "
                                    "a value)")
        return float(saved.threshold), f"stored ({saved.threshold_rule or 'unknown rule'})"
    rule = parse_threshold(threshold)
    if rule.fixed:
        return float(rule.value), "given"
    value = saved.thresholds.get(rule.name)
    if value is None or not np.isfinite(value):
        raise InvalidInputError(f"the model stores no {rule.name!r} threshold (fitted by an older botaclip, or "
                                f"undefined for this species); refit it or give a value in {param('threshold')}")
    return float(value), f"{rule.name} (out-of-fold)"


def _binarised(chunks, threshold: float):
    """Suitability chunks -> 0/1 presence chunks (uint8): present where suitability >= threshold."""
    for cells, values, *di in chunks:
        yield cells, (values >= threshold).astype(np.uint8), *di


@dataclass
class PredictResult:
    """Where predictions went and how many cells they cover."""

    path: str
    format: str
    n_cells: int
    mean: float
    extra: dict


def predictions_to_store(saved: SavedModel, store, name: str, region: Region | None = None,
                         provenance: dict | None = None) -> tuple[int, np.ndarray, np.ndarray]:
    """Write predictions into the store as feature set ``name`` (kind 'predictions', column 'suitability').

    Returns (number of cells, h3, suitability); the arrays (12 bytes a cell) serve the map.
    """
    prov = {"model": saved.estimator.name, "species": saved.species, "kind": saved.kind,
            "feature_sets": [{"name": f["name"], "provenance_id": f.get("provenance_id")}
                             for f in saved.feature_sets]} | (provenance or {})
    cells_all, values_all = [], []
    with store.writer(name, kind="predictions", columns=["suitability"], dtype="float32", provenance=prov,
                      overwrite=True) as writer:
        for cells, values in iter_predictions(saved, store, region):
            writer.write(h3=cells, columns={"suitability": values})
            cells_all.append(cells)
            values_all.append(values)
    h3 = np.concatenate(cells_all) if cells_all else np.zeros(0, np.uint64)
    vals = np.concatenate(values_all) if values_all else np.zeros(0, np.float32)
    return int(h3.size), h3, vals


def predict_to_file(saved: SavedModel, store, out: str | Path, config: PredictConfig) -> PredictResult:
    """Predict every indexed cell (in ``config.region``) and write ``out``; the format follows the suffix.

    ``config.binary``: write 0/1 presence at ``config.threshold`` (see :func:`binary_threshold`) instead of
    suitability. A .tif of more than MAX_TIF_PIXELS pixels is refused (before predicting, when it can be told)
    unless ``config.force``. The config checked its own values when it was built."""
    region = Region(config.region) if config.region else None
    pixel_m, binary, force = config.pixel_m, config.binary, config.force
    crs = check_projected_crs(config.crs) if config.crs else None
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InvalidInputError(f"{out}: unknown output format {suffix or '(no suffix)'!r}; "
                            f"use one of {', '.join(OUTPUT_FORMATS)}")
    if not out.parent.exists():
        raise MissingFileError(f"output folder {out.parent} does not exist")
    if crs and suffix != ".tif":
        raise InvalidInputError(f"{param('crs')} sets the projection of a .tif; {out.name} is a {suffix} file")
    check_output_path(out, what="--out")
    t_value, t_how = binary_threshold(saved, config.threshold) if binary else (None, None)
    check_feature_sets(saved, store)
    if suffix == ".tif" and pixel_m is not None and not force and region is None:
        check_raster_size(store.info(saved.feature_set_names[0])["rows"], int(saved.resolution), pixel_m)
    column = "presence" if binary else "suitability"
    with_aoa = config.aoa and saved.aoa is not None and suffix != ".tif"
    chunks = iter_predictions(saved, store, region, aoa=with_aoa)
    if binary:
        chunks = _binarised(chunks, t_value)
    extra = {"threshold": round(t_value, 6), "threshold_from": t_how} if binary else {}
    if config.aoa and saved.aoa is None:
        extra["aoa"] = "not available (the model was saved without an area-of-applicability reference; refit it)"
    elif with_aoa:
        extra["aoa_threshold"] = round(saved.aoa.threshold, 4)
        chunks = _counting_inside(chunks, saved.aoa.threshold, extra)
    written: dict = {}

    def write(tmp: Path) -> None:  # under a temporary name beside `out`, renamed into place when complete
        if suffix == ".parquet":
            n, total = _write_parquet(chunks, tmp, column)
        elif suffix == ".gpkg":
            n, total = _write_gpkg(chunks, tmp, column)
        else:
            h3, vals, *aoa = collect_predictions(chunks)
            n, total = h3.size, float(vals.sum(dtype=np.float64))
            if n and suffix == ".tif":
                extra.update(write_geotiff(h3, vals, tmp, pixel_m, nodata=255 if binary else -9999.0, name=column,
                                           max_pixels=None if force else MAX_TIF_PIXELS, crs=crs))
            elif n:
                title = f"{saved.species} ({saved.estimator.name}, {'+'.join(saved.feature_set_names)})"
                if binary:
                    title += f", present where suitability >= {t_value:.3g}"
                _write_map(h3, vals, aoa, tmp, title, column)
        if n == 0:
            raise InvalidInputError(f"no indexed cell of {'+'.join(saved.feature_set_names)} in "
                                    f"{'region ' + region.text if region and region.text else 'the store'}")
        written.update(n=n, total=total)

    atomic_write(out, write, suffix=out.suffix)
    n, total = written["n"], written["total"]
    return PredictResult(str(out), suffix.lstrip("."), int(n), total / n if n else float("nan"), extra)


def _write_map(h3: np.ndarray, vals: np.ndarray, aoa: list, path: Path, title: str, column: str) -> None:
    """A .png (cells outside the area of applicability grey and hatched) or an .html page (the dissimilarity
    index as a second layer) of the predictions."""
    if path.suffix.lower() == ".html":
        from botaclip.mapview import values_layer, write_map_page

        layers = [values_layer(column, h3, vals, column)]
        if aoa:
            layers.append(values_layer("dissimilarity index (AOA)", h3, aoa[0]))
        write_map_page(layers, path, title)
        return
    from botaclip.sdm.maps import suitability_map

    if aoa:  # masked: outside the area of applicability, drawn grey and hatched
        vals = np.ma.masked_array(vals, mask=~aoa[1])
    suitability_map(h3, vals, path, title=title, label=column)


def collect_predictions(chunks) -> tuple[np.ndarray, ...]:
    """(h3, value[, di]) chunks -> all cells sorted by h3 with their values (12 bytes a cell; 16 with di)."""
    parts: list[list[np.ndarray]] = []
    for chunk in chunks:
        parts = parts or [[] for _ in chunk]
        for part, a in zip(parts, chunk):
            part.append(a)
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.float32)
    h3, *rest = (np.concatenate(p) for p in parts)
    order = np.argsort(h3)
    return (h3[order], *(r[order] for r in rest))


def _counting_inside(chunks, threshold: float, extra: dict):
    """(h3, value, di) -> (h3, value, di, inside_aoa) chunks; the share of cells inside goes into ``extra``."""
    n = n_inside = 0
    for cells, values, di in chunks:
        inside = di <= threshold
        n += cells.size
        n_inside += int(inside.sum())
        extra["inside_aoa"] = round(n_inside / n, 4) if n else None
        yield cells, values, di, inside


def _write_parquet(chunks, path: Path, column: str = "suitability") -> tuple[int, float]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    value_type = pa.uint8() if column == "presence" else pa.float32()
    fields = [("h3", pa.uint64()), (column, value_type)]
    n, total, w = 0, 0.0, None
    try:
        for cells, vals, *aoa in chunks:
            if w is None:
                aoa_fields = [("di", pa.float32()), ("inside_aoa", pa.bool_())] if aoa else []
                schema = pa.schema(fields + aoa_fields)
                w = pq.ParquetWriter(path, schema, compression="zstd")
            cols = {"h3": pa.array(cells, pa.uint64()), column: pa.array(vals, value_type)}
            if aoa:
                cols |= {"di": pa.array(aoa[0], pa.float32()), "inside_aoa": pa.array(aoa[1], pa.bool_())}
            w.write_table(pa.table(cols, schema=schema))
            n += cells.size
            total += float(vals.sum(dtype=np.float64))
    finally:
        if w is not None:
            w.close()
    return n, total


def _write_gpkg(chunks, path: Path, column: str = "suitability") -> tuple[int, float]:
    import geopandas as gpd
    import h3 as h3lib
    import shapely

    n, total = 0, 0.0
    for cells, vals, *aoa in chunks:
        hexes = [h3lib.int_to_str(int(c)) for c in cells]
        polys = [shapely.Polygon([(lng, lat) for lat, lng in h3lib.cell_to_boundary(h)]) for h in hexes]
        values = vals.astype(np.int32) if column == "presence" else vals.astype(np.float64)
        cols = {"h3": hexes, column: values}
        if aoa:
            cols |= {"di": aoa[0].astype(np.float64), "inside_aoa": aoa[1].astype(np.int32)}
        frame = gpd.GeoDataFrame(cols, geometry=polys, crs="EPSG:4326")
        frame.to_file(path, layer=column, driver="GPKG", engine="pyogrio", append=n > 0)
        n += cells.size
        total += float(vals.sum(dtype=np.float64))
    return n, total


def check_raster_size(n_cells: int, resolution: int, pixel_m: float, width: int | None = None,
                      height: int | None = None) -> None:
    """Refuse a raster above MAX_TIF_PIXELS: the exact `width` x `height` when known, else a lower bound (the
    cells' own area in pixels)."""
    import h3 as h3lib

    if pixel_m <= 0:
        raise InvalidInputError(f"{param('pixel_m')} must be positive, got {pixel_m}")
    cell_px = h3lib.average_hexagon_area(resolution, unit="m^2") / pixel_m**2
    n = width * height if width is not None else n_cells * cell_px
    if n > MAX_TIF_PIXELS:
        default = round(h3lib.average_hexagon_edge_length(resolution, unit="m") / 2.0)
        size = f" ({width} x {height})" if width is not None else ""
        raise InvalidInputError(f"a .tif at {param('pixel_m')} {pixel_m:g} would have {'' if width else 'at least '}"
                                f"{n / 1e6:,.0f} million pixels{size}, {n * 4 / 1e9:,.1f} GB uncompressed (limit "
                                f"{MAX_TIF_PIXELS // 1_000_000} million); use a larger {param('pixel_m')} (default "
                                f"{default} m) or pass {param('force')}")


def write_geotiff(h3: np.ndarray, values: np.ndarray, path: Path, pixel_m: float | None = None,
                  nodata: float = -9999.0, name: str = "suitability", max_pixels: int | None = None,
                  crs: str | None = None) -> dict:
    """Rasterise cell values (sorted h3) at ``pixel_m`` metres in ``crs`` (a projected CRS in metres; default the
    local UTM zone of the cells' median centre) into a Cloud Optimized GeoTIFF: each pixel takes the value of the
    cell containing its centre (nodata outside indexed cells). uint8 values (0/1 presence) give a uint8 raster
    (overviews by nearest neighbour), anything else float32 (overviews averaged, nodata ignored). The pixels are
    filled in strips of rows into a tiled GeoTIFF beside ``path``, which GDAL's COG driver then copies with
    internal overviews (down to one 256 px tile) into ``path``. A raster above ``max_pixels`` is refused before
    anything is written."""
    import h3 as h3lib
    import rasterio
    import rasterio.errors
    import rasterio.shutil
    from affine import Affine

    res = int(resolution_of(h3[:1])[0])
    if pixel_m is None:
        pixel_m = round(h3lib.average_hexagon_edge_length(res, unit="m") / 2.0)
    if pixel_m <= 0:
        raise InvalidInputError(f"{param('pixel_m')} must be positive, got {pixel_m}")
    crs, (x0, y1, width, height) = raster_grid(h3, res, pixel_m, crs)
    if max_pixels is not None and width * height > max_pixels:
        check_raster_size(h3.size, res, pixel_m, width, height)
    transform = Affine(pixel_m, 0.0, x0, 0.0, -pixel_m, y1)
    dtype = "uint8" if values.dtype == np.uint8 else "float32"
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype=dtype, crs=crs,
                   transform=transform, nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                   compress="zstd", zstd_level=1)  # a scratch file: fast to write, read once
    strips = path.with_name(f".{path.name}.strips.tif")
    try:
        with rasterio.open(strips, "w", **profile) as dst:
            dst.update_tags(1, name=name)
            fill_strips(dst, h3, values, res, nodata, dtype)
        # No predictor: a cell's pixels repeat one value, which DEFLATE packs better raw (floating-point
        # prediction made the file 40 % larger in bench/outputs.py).
        rasterio.shutil.copy(strips, path, driver="COG", compress="DEFLATE", blocksize=256,
                             overviews="AUTO", resampling="NEAREST" if dtype == "uint8" else "AVERAGE",
                             num_threads="ALL_CPUS")
    except rasterio.errors.RasterioError as exc:
        raise BotaclipError(f"cannot write {path}: {exc}") from None
    finally:
        strips.unlink(missing_ok=True)
    return {"crs": crs, "pixel_m": float(pixel_m), "width": width, "height": height}


def raster_grid(h3: np.ndarray, res: int, pixel_m: float, crs: str | None) -> tuple[str, tuple]:
    """(crs, (west x, north y, width, height)): the pixel grid, aligned on multiples of ``pixel_m``, covering
    the cell centres (projected in chunks) padded by one cell radius."""
    import h3 as h3lib
    from pyproj import Transformer

    from botaclip.sdm.maps import utm_crs

    if crs is None:
        lat, lng = cells_to_latlng(h3[:: max(1, h3.size // 20000)])
        crs = utm_crs(float(np.median(lat)), float(np.median(lng)))
    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    margin = h3lib.average_hexagon_edge_length(res, unit="m") * 1.2
    xs_min, xs_max, ys_min, ys_max = np.inf, -np.inf, np.inf, -np.inf
    for i in range(0, h3.size, 1_000_000):
        clat, clng = cells_to_latlng(h3[i:i + 1_000_000])
        cx, cy = fwd.transform(clng, clat)
        xs_min, xs_max = min(xs_min, np.min(cx)), max(xs_max, np.max(cx))
        ys_min, ys_max = min(ys_min, np.min(cy)), max(ys_max, np.max(cy))
    x0, x1 = np.floor((xs_min - margin) / pixel_m) * pixel_m, np.ceil((xs_max + margin) / pixel_m) * pixel_m
    y0, y1 = np.floor((ys_min - margin) / pixel_m) * pixel_m, np.ceil((ys_max + margin) / pixel_m) * pixel_m
    return crs, (float(x0), float(y1), int(round((x1 - x0) / pixel_m)), int(round((y1 - y0) / pixel_m)))


def fill_strips(dst, h3: np.ndarray, values: np.ndarray, res: int, nodata: float, dtype: str) -> None:
    """Write every pixel of open raster ``dst``: the value of the cell (sorted ``h3``) holding its centre."""
    import rasterio.windows
    from pyproj import Transformer

    inv = Transformer.from_crs(dst.crs.to_wkt(), "EPSG:4326", always_xy=True)
    width, height = dst.width, dst.height
    pixel_m, x0, y1 = dst.transform.a, dst.transform.c, dst.transform.f
    strip = max(1, min(height, 1_000_000 // max(width, 1)))
    col_x = x0 + (np.arange(width) + 0.5) * pixel_m
    for row0 in range(0, height, strip):
        rows = min(strip, height - row0)
        row_y = y1 - (row0 + np.arange(rows) + 0.5) * pixel_m
        gx, gy = np.meshgrid(col_x, row_y)
        plng, plat = inv.transform(gx.ravel(), gy.ravel())
        cells = latlng_to_cells(np.asarray(plat), np.asarray(plng), res)
        pos = np.clip(np.searchsorted(h3, cells), 0, h3.size - 1)
        hit = h3[pos] == cells
        block = np.where(hit, values[pos], nodata).astype(dtype).reshape(rows, width)
        dst.write(block, 1, window=rasterio.windows.Window(0, row0, width, rows))
