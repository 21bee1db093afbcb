"""Per-band statistics of a raster, computed once and cached.

Used to normalise sensors whose value scale depends on the product (Landsat, Sentinel-2, custom stacks). The
statistics come from a decimated read of the whole raster (at most ``max_side`` pixels on the long side) that
honours nodata and masks; they are cached in a small JSON file keyed by the raster's absolute path, size and
modification time (a remote raster: its URL with the server's ETag, Last-Modified and length, from a HEAD
request), so a changed raster gets new statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import rasterio
from rasterio.enums import Resampling

from botaclip.atomic import write_text
from botaclip.errors import BotaclipError, InvalidInputError
from botaclip.imagery.remote import gdal_env, identity, lacks_overviews, remote_url, warn_not_cog

CACHE_ENV = "BOTACLIP_CACHE_DIR"


@dataclass(frozen=True)
class BandStats:
    """Mean and standard deviation of each band, in the raster's own units."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def cache_dir() -> Path:
    """Where band statistics are cached: ``$BOTACLIP_CACHE_DIR/band-stats`` or ``~/.cache/botaclip/band-stats``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "botaclip")
    return Path(root) / "band-stats"


def _cache_key(path: str, bands: tuple[int, ...]) -> str:
    ident = f"{identity(path)}|{bands}"
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


def band_stats(path: str, bands: tuple[int, ...], max_side: int = 1024) -> BandStats:
    """Per-band mean and std of ``bands`` (1-based indexes) of the raster at ``path``, cached on disk."""
    key = _cache_key(path, bands)
    cache_file = cache_dir() / f"{key}.json"
    try:
        cached = json.loads(cache_file.read_text())
        return BandStats(tuple(cached["mean"]), tuple(cached["std"]))
    except (OSError, ValueError, KeyError):
        pass
    stats = compute_band_stats(path, bands, max_side)
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text(cache_file, json.dumps({"path": remote_url(path) or os.path.abspath(path), "mean": stats.mean, "std": stats.std}))
    except OSError:
        pass  # an unwritable cache only costs a recomputation next time
    return stats


def compute_band_stats(path: str, bands: tuple[int, ...], max_side: int = 1024) -> BandStats:
    """Per-band mean and std from a decimated read (long side <= ``max_side`` px), ignoring masked pixels."""
    try:
        with gdal_env([path]), rasterio.open(path) as ds:
            if remote_url(path) and lacks_overviews(ds):
                warn_not_cog(remote_url(path), "no overviews", "its statistics read the whole file once (cached)")
            scale = max(ds.width, ds.height) / max_side
            shape = (len(bands), max(1, round(ds.height / max(scale, 1))), max(1, round(ds.width / max(scale, 1))))
            data = ds.read(list(bands), out_shape=shape, resampling=Resampling.nearest, masked=True, out_dtype="float64")
    except rasterio.errors.RasterioError as exc:
        raise BotaclipError(f"cannot read {remote_url(path) or path} to compute band statistics: "
                            f"{' '.join(str(exc).split())}") from None
    means, stds = [], []
    for b in range(data.shape[0]):
        values = data[b].compressed()
        if values.size == 0:
            raise InvalidInputError(f"{path} band {bands[b]} has no valid pixels; cannot compute its statistics")
        means.append(float(values.mean()))
        # A constant band would divide by zero; 1.0 leaves it centred and unscaled.
        std = float(values.std())
        stds.append(std if std > 0 else 1.0)
    return BandStats(tuple(means), tuple(stds))
