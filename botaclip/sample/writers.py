"""Writing the sample region's files: GeoTIFFs, GeoJSON, CSV and Parquet, all deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.enums import ColorInterp
from shapely.geometry import Polygon, mapping

from botaclip.sample.fields import Grid
from botaclip.sample.imagery import BANDS, WAVELENGTHS_UM
from botaclip.sample.landscape import HABITAT_NODATA, HABITATS

CRS = "EPSG:2154"
DEM_NODATA = -9999.0
# QGIS-style colours for habitat.tif.
HABITAT_COLOURS = {
    1: (120, 190, 80, 255),
    2: (30, 100, 50, 255),
    3: (200, 230, 120, 255),
    4: (220, 200, 140, 255),
    5: (170, 170, 170, 255),
    6: (40, 110, 200, 255),
    7: (220, 40, 40, 255),
}
_TIFF = dict(driver="GTiff", tiled=True, blockxsize=256, blockysize=256, compress="deflate", zlevel=1,
             num_threads=2)


def write_ortho(path: Path, image: np.ndarray, grid: Grid, seed: int) -> None:
    """4-band uint8 orthophoto, 1 m, nodata 0, tiled 256 x 256, DEFLATE, bands described."""
    with rasterio.open(path, "w", width=grid.n, height=grid.n, count=4, dtype="uint8", crs=CRS,
                       transform=grid.transform, nodata=0, predictor=2, photometric="RGB", **_TIFF) as dst:
        dst.write(image)
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
            dst.update_tags(i, wavelength_um=str(WAVELENGTHS_UM[i - 1]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
        dst.update_tags(source="botaclip synthetic sample region", seed=str(seed), bands=",".join(BANDS))


def write_dem(path: Path, dem: np.ndarray, grid: Grid) -> None:
    """Float32 elevation (m) on the 5 m grid, nodata -9999 (the DEM itself has no holes)."""
    with rasterio.open(path, "w", width=dem.shape[1], height=dem.shape[0], count=1, dtype="float32", crs=CRS,
                       transform=grid.coarse_transform, nodata=DEM_NODATA, predictor=3, **_TIFF) as dst:
        dst.write(dem.astype(np.float32), 1)
        dst.set_band_description(1, "elevation_m")


def write_habitat(path: Path, habitat: np.ndarray, valid: np.ndarray, grid: Grid) -> None:
    """Uint8 habitat codes on the 1 m grid, 255 outside the valid footprint, with a colour table."""
    codes = np.where(valid, habitat, np.uint8(HABITAT_NODATA)).astype(np.uint8)
    with rasterio.open(path, "w", width=grid.n, height=grid.n, count=1, dtype="uint8", crs=CRS,
                       transform=grid.transform, nodata=HABITAT_NODATA, **_TIFF) as dst:
        dst.write(codes, 1)
        dst.set_band_description(1, "habitat")
        dst.write_colormap(1, HABITAT_COLOURS)
        dst.update_tags(1, **{f"code_{i}": name for i, name in enumerate(HABITATS, start=1)})


def write_geojson(path: Path, footprint_wgs84: Polygon, properties: dict) -> None:
    """One-feature FeatureCollection (EPSG:4326, lng/lat order), coordinates rounded to 1e-7 degree."""
    geometry = mapping(footprint_wgs84)
    geometry["coordinates"] = [[[round(c, 7) for c in xy] for xy in ring] for ring in geometry["coordinates"]]
    collection = {"type": "FeatureCollection",
                  "features": [{"type": "Feature", "properties": properties, "geometry": geometry}]}
    path.write_text(json.dumps(collection, indent=1) + "\n")


def write_csv(path: Path, table: pd.DataFrame) -> None:
    table.to_csv(path, index=False, lineterminator="\n")


def write_parquet(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, compression="zstd")
