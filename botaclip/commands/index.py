"""`botaclip index`: embed the H3 cells of a region from imagery into the feature store.

Options map one to one onto the fields of :class:`botaclip.pipeline.index_config.IndexConfig` (``--quiet`` is
``progress=False``); their defaults are read from there.
"""

from __future__ import annotations

import click

from botaclip.config import default
from botaclip.pipeline.index_config import (
    DEFAULT_RESOLUTION,
    ENGINES,
    NORMALIZATIONS,
    RESAMPLINGS,
    IndexConfig,
)
from botaclip.pipeline.stac_source import SORTS


def _default(name: str):
    """The default of IndexConfig field ``name``: what the option shows with --help."""
    return default(IndexConfig, name)


@click.command("index", context_settings={"allow_interspersed_args": True})
@click.option("--region", required=True,
              help="Cells to index: `sample` (the built-in sample region), a bbox west,south,east,north (WGS84 "
                   "degrees), a polygon file (GeoJSON, GeoPackage, GeoParquet; any CRS) or a file of H3 cells (text "
                   "or Parquet). Limited to the imagery footprint.")
@click.option("--imagery", "imagery", multiple=True, type=click.Path(),
              help="Raster file(s): GeoTIFF, COG, VRT, JPEG2000, anything GDAL reads, any CRS; or http(s) URLs / "
                   "/vsicurl/ paths of COGs (read with range requests). Several files form a mosaic (earlier files "
                   "win): --imagery a.tif b.tif or repeat the option.")
@click.argument("more_imagery", nargs=-1, type=click.Path(), metavar="")
@click.option("--stac", default=_default("stac"),
              help="Imagery from STAC instead of --imagery: an item, ItemCollection or saved search result (JSON "
                   "file or URL). Wavelengths come from its eo:bands / bands, nodata and scale/offset from "
                   "raster:bands; several items form a mosaic. Needs botaclip[stac].")
@click.option("--assets", default=_default("assets"),
              help="With --stac: the asset keys to read, in band order, e.g. red,green,blue,nir.")
@click.option("--sort", default=_default("sort"), show_default=True, type=click.Choice(SORTS),
              help="With --stac: mosaic order of several items: most recent first (datetime) or least cloudy "
                   "first (cloud, by eo:cloud_cover).")
@click.option("--store", required=True, type=click.Path(),
              help="Feature store directory; created with --resolution if it does not exist.")
@click.option("--backbone", default=_default("backbone"), show_default=True,
              help="DOFA backbone: dofa-small, dofa-base, dofa-large (dofa-tiny for tests).")
@click.option("--weights", default=_default("weights"), type=click.Path(),
              help="Backbone checkpoint (DOFA release or TorchGeo); without it the backbone is random "
                   "(recorded as 'random init').")
@click.option("--adapter", default=_default("adapter"), type=click.Path(),
              help="Trained BotaCLIP adapter checkpoint: store adapted embeddings (derived from a stored backbone "
                   "feature set where it has the cells).")
@click.option("--name", default=_default("name"),
              help="Feature-set name [default: <backbone>_<bands>, e.g. dofa_small_rgb; botaclip_... with --adapter].")
@click.option("--resolution", default=_default("resolution"), type=int,
              help=f"H3 resolution 0-15 [default: the store's, or {DEFAULT_RESOLUTION} for a new store].")
@click.option("--chip-m", default=_default("chip_m"), show_default=True, type=float, help="Chip side in metres.")
@click.option("--size-px", default=_default("size_px"), show_default=True, type=int,
              help="Chip side in pixels after resampling (a multiple of 16).")
@click.option("--bands", default=_default("bands"),
              help="Band preset: rgb, rgbn, landsat7, landsat8, sentinel2 [default: rgb for 3 bands, rgbn for 4].")
@click.option("--wavelengths", default=_default("wavelengths"),
              help="Explicit centre wavelength of each band in µm, e.g. 0.665,0.56,0.49 (instead of --bands).")
@click.option("--normalize", default=_default("normalize"), show_default=True, type=click.Choice(NORMALIZATIONS),
              help="Band normalisation: preset statistics (ImageNet on 0-255 for RGB), per-raster statistics "
                   "(computed once, cached), or auto (preset when the bands have one).")
@click.option("--resampling", default=_default("resampling"), show_default=True, type=click.Choice(RESAMPLINGS),
              help="Resampling kernel: area average, bilinear, or auto (average when downsampling).")
@click.option("--batch-size", default=_default("batch_size"), show_default=True, type=int,
              help="Chips per model batch.")
@click.option("--device", default=_default("device"), show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--workers", default=_default("workers"), show_default=True, type=int,
              help="Threads reading chips ahead of the model (0: read in the main thread).")
@click.option("--shard", default=_default("shard"),
              help="I/N: process only shard I of N (0 <= I < N), split by coarse H3 parent cells; shards may run "
                   "at the same time into one store.")
@click.option("--min-valid", default=_default("min_valid"), show_default=True, type=float,
              help="Skip chips with a smaller fraction of valid (not nodata) pixels.")
@click.option("--overwrite", is_flag=True, default=_default("overwrite"),
              help="Recompute cells already present (without --shard: replace the whole feature set).")
@click.option("--dtype", default=_default("dtype"), show_default=True, type=click.Choice(["float32", "float16", "int8"]),
              help="On-disk precision of the embeddings: float16 halves the bytes, int8 (+ a per-row scale) quarters "
                   "them; readers always get float32 (see docs/benchmarks.md for recall and SDM AUC).")
@click.option("--seed", default=_default("seed"), show_default=True, type=int,
              help="Seed of a randomly initialised backbone.")
@click.option("--engine", default=_default("engine"), show_default=True, type=click.Choice(ENGINES),
              help="Where partitions are embedded: this process, or Ray actors (one model each; needs "
                   "botaclip[ray]; the store must be on storage every node sees). See docs/scale.md.")
@click.option("--ray-address", default=_default("ray_address"),
              help="Ray cluster to join with --engine ray: auto or HOST:PORT [default: start a local Ray instance].")
@click.option("--ray-workers", default=_default("ray_workers"), type=int,
              help="Ray workers (actors, one model each) [default: one per GPU, or one per --cpus-per-worker CPUs].")
@click.option("--gpus-per-worker", default=_default("gpus_per_worker"), type=float,
              help="GPUs per Ray worker [default: 1 when the cluster has GPUs, else 0].")
@click.option("--cpus-per-worker", default=_default("cpus_per_worker"), show_default=True, type=float,
              help="CPUs per Ray worker (a CPU worker's torch threads).")
@click.option("--quiet", "-q", is_flag=True, default=not _default("progress"), help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index(region, imagery, more_imagery, store, quiet, as_json, **options):
    """Embed the H3 cells of a region from imagery and write them to the feature store.

    Resumable: cells already stored are skipped, so a killed run completes when run again.

    \b
    Example:
      botaclip sample make --out sample
      botaclip index --region sample --imagery sample/ortho.tif --store store --backbone dofa-small
      botaclip index --region 6.1,45.1,6.2,45.2 --stac items.json --assets red,green,blue,nir --store s2
    """
    import json

    from botaclip.config import build
    from botaclip.errors import BotaclipError
    from botaclip.pipeline import run_index

    paths = list(imagery) + list(more_imagery)
    if more_imagery and not imagery:
        raise BotaclipError(f"unexpected argument {more_imagery[0]!r}; imagery files go after --imagery")
    config = build(IndexConfig, progress=not quiet, **options)
    summary = run_index(region, paths, store, config, echo=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.format())

