"""botaclip.imagery: rasters -> normalised image chips for H3 cells or points.

- :mod:`~botaclip.imagery.bands`: band presets (wavelengths in µm, normalisation statistics).
- :mod:`~botaclip.imagery.sources`: opening and validating rasters.
- :mod:`~botaclip.imagery.stats`: per-raster band statistics, cached.
- :mod:`~botaclip.imagery.chips`: :class:`ChipReader`, square chips from a mosaic of rasters.
- :mod:`~botaclip.imagery.regions`: regions (bbox, polygons, cell lists) -> H3 cells, partition by partition.
- :mod:`~botaclip.imagery.prefetch`: reading chips ahead of the model in background threads.

This package knows nothing of storage or models.
"""

from botaclip.imagery.bands import PRESETS, BandSpec, band_spec
from botaclip.imagery.chips import Chip, ChipReader
from botaclip.imagery.prefetch import ChipBatch, PrefetchStats, prefetch_chips
from botaclip.imagery.regions import (
    Region,
    cell_centres,
    check_resolution,
    iter_region_cells,
    parse_region,
    region_partitions,
)
from botaclip.imagery.sources import RasterSource, open_source
from botaclip.imagery.stats import BandStats, band_stats

__all__ = [
    "PRESETS",
    "BandSpec",
    "BandStats",
    "Chip",
    "ChipBatch",
    "ChipReader",
    "PrefetchStats",
    "RasterSource",
    "Region",
    "band_spec",
    "band_stats",
    "cell_centres",
    "check_resolution",
    "iter_region_cells",
    "open_source",
    "parse_region",
    "prefetch_chips",
    "region_partitions",
]
