"""Embeddings users already have, as rasters (AlphaEarth, TESSERA, their own model's output), into the store.

    from botaclip.store import Store
    from botaclip.store.external import add_raster_embedding
    add_raster_embedding(Store.open("alps.store"), "alphaearth_2023", ["x31.tif", "x32.tif"], fmt="alphaearth")

Each store cell gets the mean of the valid pixel vectors whose centres fall in it, renormalised to unit length
(how AlphaEarth builds its own overviews), in a feature set of kind "external" with ``valid_fraction`` (valid
pixels over the pixels the cell's area holds, at most 1) and ``n_obs`` (valid pixels). The files form one
mosaic: a cell on a UTM-zone edge takes its pixels from both zones' files. The job streams chunk by chunk
(:mod:`botaclip.store.raster_grid`) and finishes each store partition atomically: a killed job, run again with
the same files, skips the finished partitions.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h3.api.basic_int as h3i
import numpy as np

from botaclip.config import build
from botaclip.errors import BotaclipError, Interrupted, InvalidInputError, is_interrupt, param, root_cause
from botaclip.progress import Progress, as_progress
from botaclip.store import raster_grid as rg
from botaclip.store.embedding_formats import (
    ALPHAEARTH_PRODUCT,
    DEQUANTISE_RULE,
    EmbeddingRaster,
    check_same_dim,
    describe,
    guess_year,
)
from botaclip.store.external_config import RasterEmbeddingConfig
from botaclip.store.schema import check_identifier

if TYPE_CHECKING:
    from botaclip.store.store import Store

KIND = "external"
RULE = "mean of the valid pixel vectors whose centres fall in the cell, renormalised to unit length"


@dataclass
class RasterEmbeddingSummary:
    """What one run did."""

    name: str
    dim: int
    cells: int = 0  # cells written by this run
    skipped_low_valid: int = 0  # cells with pixels but a valid fraction below min_valid
    partitions: int = 0  # partitions finished by this run
    partitions_done_before: int = 0  # skipped: finished by an earlier run (resume)
    chunks: int = 0
    pixels_read: int = 0  # pixels read, counting those read twice at window edges
    valid_pixels: int = 0  # valid pixels summarised into written cells
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Job:
    store: "Store"
    cfg: RasterEmbeddingConfig
    grids: list[rg.RasterGrid]
    rasters: list[EmbeddingRaster]
    chunk_res: int
    pixel_area_m2: float


def add_raster_embedding(store: "Store", name: str, rasters: list[str], config: RasterEmbeddingConfig | None = None,
                         *, progress: Progress | bool | None = None, **options) -> RasterEmbeddingSummary:
    """Write embedding rasters (one mosaic: any CRS, UTM zones mixed) per cell into feature set ``name`` of kind
    "external". ``config``: a :class:`RasterEmbeddingConfig`, or its fields as keyword ``options`` (``fmt``,
    ``min_valid``, ``product``, ``version``, ``year``, ``overwrite``). Every file is checked before any work;
    bad input is a one-line :class:`~botaclip.errors.InvalidInputError` and leaves the store as it was."""
    import rasterio

    from botaclip.imagery.remote import gdal_env

    cfg = build(RasterEmbeddingConfig, config, **options)
    check_identifier(name)
    if not rasters:
        raise InvalidInputError("give at least one raster")
    started = time.perf_counter()
    report = as_progress(progress)
    with ExitStack() as stack:
        stack.enter_context(rg.bounded_gdal_cache())
        stack.enter_context(gdal_env(rasters))  # URLs and /vsicurl/ paths: range requests, retries, caches
        grids, infos = [], []
        for path in rasters:
            ds = stack.enter_context(_open(path))
            infos.append(describe(ds, str(path), cfg.fmt))
            grids.append(rg.RasterGrid.of(ds))
        dim = check_same_dim(infos)
        area = min(g.pixel_area_m2() for g in grids)
        job = _Job(store, cfg, grids, infos, rg.chunk_resolution(store.resolution, store.partition_resolution, area,
                                                                 cfg.window_pixels), area)
        provenance = _provenance(cfg, infos, grids)
        done = _resumable_partitions(store, name, dim, provenance, cfg.overwrite)
        summary = RasterEmbeddingSummary(name, dim)
        try:
            _run(job, name, provenance, done, summary, report)
        except rasterio.errors.RasterioError as exc:  # GDAL's reason (a damaged tile, a missing VRT source)
            raise BotaclipError(f"reading the rasters failed: {root_cause(exc)}; {_kept(cfg)}") from None
        except BaseException as exc:  # Ctrl-C (or DuckDB's "Query interrupted"): one line on what was kept
            if not is_interrupt(exc):
                raise
            raise Interrupted(f"interrupted after {summary.partitions} partition(s); {_kept(cfg)}") from None
    summary.seconds = time.perf_counter() - started
    return summary


def _kept(cfg: RasterEmbeddingConfig) -> str:
    if cfg.overwrite:
        return "the feature set is unchanged (its replacement was discarded); run the same command to start again"
    return "the partitions finished so far are kept; run the same command to resume"


def _open(path: str):
    from botaclip.imagery.remote import open_raster

    return open_raster(path)


def _remote(path: str) -> bool:
    """A GDAL virtual path or URL (``/vsis3/...``, ``https://...``): COGs are often read where they are published."""
    from botaclip.imagery.remote import is_virtual

    return is_virtual(path)


def _provenance(cfg: RasterEmbeddingConfig, infos: list[EmbeddingRaster], grids: list[rg.RasterGrid]) -> dict:
    files = [r.path if _remote(r.path) else str(Path(r.path).resolve()) for r in infos]
    product = cfg.product or (ALPHAEARTH_PRODUCT if cfg.fmt == "alphaearth" else None)
    return {
        "model": product or "external float embedding", "product": product, "version": cfg.version,
        "year": cfg.year if cfg.year is not None else guess_year(files), "format": cfg.fmt, "files": files,
        "crs": sorted({str(g.ds.crs) for g in grids}),
        "dequantisation": DEQUANTISE_RULE if cfg.fmt == "alphaearth" else None,
        "nodata": sorted({r.nodata for r in infos if r.nodata is not None}) or None,
        "aggregation": RULE, "min_valid": float(cfg.min_valid),
        "valid_fraction": "valid pixels / (cell area / pixel area), at most 1",
    }


def _resumable_partitions(store: "Store", name: str, dim: int, provenance: dict, overwrite: bool) -> set[int]:
    """Partitions an earlier run of the same job finished (skipped now); an error if the existing set was made
    from other files or differs in kind or dimension (unless ``overwrite``)."""
    if overwrite or name not in store.feature_sets():
        return set()
    spec = store.spec(name)
    old = spec.provenance
    why = None
    if spec.kind != KIND or spec.dim != dim:
        why = f"kind {spec.kind!r} dim {spec.dim} vs {KIND!r} dim {dim}"
    elif old.get("format") != provenance["format"] or sorted(old.get("files") or []) != sorted(provenance["files"]):
        why = f"format {old.get('format')!r} from {len(old.get('files') or [])} other file(s)"
    elif float(old.get("min_valid", 0.0)) != provenance["min_valid"]:
        why = f"min_valid {old.get('min_valid')}"
    if why:
        raise InvalidInputError(f"feature set {name!r} already exists, made differently ({why}); pass "
                                f"{param('overwrite')} to replace it, or choose another {param('name')}")
    return store.partitions(name)


def _run(job: _Job, name: str, provenance: dict, done: set[int], summary: RasterEmbeddingSummary,
         report: Progress) -> None:
    chunks = np.unique(np.concatenate([rg.footprint_chunks(g, job.chunk_res, job.store.resolution) for g in job.grids]))
    todo = [(p, c) for p, c in rg.chunks_by_partition(chunks, job.store.partition_resolution) if p not in done]
    todo = [todo[i] for i in rg.spatial_order([p for p, _ in todo])]
    summary.partitions_done_before = len({int(p) for p in job.store.partition_of(chunks)} & done)
    report.step(f"{summary.name}: {len(job.rasters)} file(s), {summary.dim}-d, chunks at H3 resolution "
                f"{job.chunk_res}; {sum(len(c) for _, c in todo)} chunk(s) in {len(todo)} partition(s) to do"
                + (f", {summary.partitions_done_before} finished before" if summary.partitions_done_before else ""))
    if not todo:
        return
    written = False
    with job.store.writer(name, kind=KIND, dim=summary.dim, provenance=provenance, overwrite=job.cfg.overwrite) as w, \
            report.bar(sum(len(c) for _, c in todo), "chunk", "add-raster") as bar:
        for parent, parent_chunks in todo:
            rows = 0
            for chunk in parent_chunks:
                cells, mean, vf, n_obs = _chunk(job, int(chunk), summary)
                if len(cells):
                    w.write(cells, embedding=mean, valid_fraction=vf, n_obs=n_obs)
                    rows += len(cells)
                bar.update(1)
            if rows:  # an empty partition gets no file, so a set with no valid pixel at all is never created
                w.finish_partition(parent)
                summary.partitions += 1
                written = True
        if not written and (done == set() or job.cfg.overwrite):
            raise InvalidInputError(_nothing_written(job, summary))


def _chunk(job: _Job, chunk: int, summary: RasterEmbeddingSummary):
    """(cells, mean vectors, valid fractions, valid pixel counts) of the store cells in ``chunk``, every file
    read over its window; cells below ``min_valid`` left out."""
    parts = []
    for grid, info in zip(job.grids, job.rasters):
        window = grid.window_of(chunk)
        if window is None:
            continue
        cells = grid.window_cells(window, job.store.resolution)
        raw, valid = info.read(grid.ds, window)
        summary.pixels_read += len(cells)
        keep = rg.in_chunk(cells, chunk, job.chunk_res) & valid
        if keep.any():  # only the kept pixels are dequantised: windows overlap
            parts.append(rg.group_sums(cells[keep], info.vectors(raw[:, keep])))
    summary.chunks += 1
    if not parts:
        return np.zeros(0, np.uint64), None, None, None
    cells, sums, counts = _merge(parts)
    areas = np.array([h3i.cell_area(int(c), "m^2") for c in cells])
    vf = np.minimum(counts / (areas / job.pixel_area_m2), 1.0)
    ok = vf >= job.cfg.min_valid
    summary.skipped_low_valid += int((~ok).sum())
    summary.cells += int(ok.sum())
    summary.valid_pixels += int(counts[ok].sum())
    mean = sums[ok] / counts[ok, None]
    return cells[ok], mean, vf[ok], counts[ok]


def _merge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-file sums of one chunk added up per cell (a cell on a zone edge has pixels in two files)."""
    if len(parts) == 1:
        return parts[0]
    cells = np.concatenate([p[0] for p in parts])
    sums = np.concatenate([p[1] for p in parts])
    counts = np.concatenate([p[2] for p in parts])
    uniq, total, _ = rg.group_sums(cells, sums)
    _, n, _ = rg.group_sums(cells, counts[:, None].astype(np.float64))
    return uniq, total, n[:, 0].astype(np.int64)


def _nothing_written(job: _Job, summary: RasterEmbeddingSummary) -> str:
    files = ", ".join(r.path for r in job.rasters)
    if summary.skipped_low_valid:
        return (f"every cell covered by {files} has a valid fraction below {param('min_valid')} "
                f"{job.cfg.min_valid} ({summary.skipped_low_valid} cells); nothing was written")
    if summary.pixels_read == 0:
        return f"{files} cover no cell of the store; nothing was written"
    return (f"{files} hold no valid pixel (all nodata or non-finite, or no pixel centre in a store cell at "
            f"resolution {job.store.resolution}); nothing was written")
