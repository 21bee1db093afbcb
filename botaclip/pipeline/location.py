"""`botaclip store add-location`: a pretrained location encoder's embedding of every cell centre, as a feature set.

The cells are those of an existing feature set (``like``) or of a region (``region``: a bbox, a polygon file, a
cell file, or ``sample``). Like the index job, the work goes partition by partition: cells already stored are
skipped, each partition is committed when done, so a run killed at any point is completed by running the same
command again. ``overwrite`` builds the new set aside and swaps it in at the end (all or nothing)::

    from botaclip.pipeline.location import LocationConfig, add_location
    summary = add_location(store, "geoclip", LocationConfig(like="dofa_small_rgb"))
    summary = add_location(store, "geoclip", like="dofa_small_rgb")          # the same call
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from botaclip.config import build
from botaclip.errors import InvalidInputError, param
from botaclip.pipeline.location_config import LOCATION_MODELS, LocationConfig
from botaclip.store.schema import check_identifier

if TYPE_CHECKING:
    from botaclip.store.store import Store

LOCATION_KIND = "location"


@dataclass
class LocationSummary:
    """What an add-location run did: rows written, cells already there, partitions, seconds (``setup`` = loading
    the encoder and planning) and the throughput of the rest."""

    feature_set: str
    model: str
    store: str
    source: str
    written: int = 0
    skipped_present: int = 0
    partitions: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    provenance: dict = field(default_factory=dict)

    @property
    def cells_per_s(self) -> float:
        busy = self.seconds - self.setup_seconds
        return self.written / busy if busy > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "cells_per_s": round(self.cells_per_s, 1)}


def _region_plan(store: "Store", region: str) -> tuple[str, list[int], Callable[[int], np.ndarray]]:
    """(description, partition parents, cells of a parent) of a region at the store's resolution."""
    import shapely

    from botaclip.imagery.regions import Region, parse_region, region_partitions

    if str(region).strip().lower() == "sample":
        from botaclip.sample import ensure_sample

        parsed = Region("the sample region", geometry=parse_region(str(ensure_sample().region_geojson)).geometry)
    else:
        parsed = parse_region(str(region))
    world = shapely.box(-180, -90, 180, 90)
    parents, cells_of = region_partitions(parsed, world, store.resolution, store.partition_resolution)
    return parsed.description, parents, cells_of


def _like_plan(store: "Store", like: str) -> tuple[str, list[int], Callable[[int], np.ndarray]]:
    """The partitions and cells of feature set ``like`` as they are on disk."""
    store.spec(like)  # "no feature set ..." for a typo
    parents = sorted(store.catalog().partitions.get(like, {}))
    if not parents:
        raise InvalidInputError(f"feature set {like!r} holds no cells; index it first, or give {param('region')}")
    return f"the cells of feature set {like!r}", parents, lambda parent: store.partition_cells(like, parent)


def _missing(cells: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The sorted ``cells`` not in sorted ``present``."""
    if present.size == 0:
        return cells
    pos = np.clip(np.searchsorted(present, cells), 0, present.size - 1)
    return cells[present[pos] != cells]


def add_location(store: "Store", name: str, config: LocationConfig | None = None, *, progress=None,
                 **options) -> LocationSummary:
    """Embed the centre (lat, lng) of every cell of ``config.like`` or ``config.region`` with the pretrained
    location encoder ``config.model`` into embedding feature set ``name`` (kind "location", unit length; the
    provenance names the package, its version and the sha256 of its weights file). ``options``: fields of
    :class:`LocationConfig` by name. Resumable: cells already in ``name`` are skipped (unless ``overwrite``)."""
    from botaclip.model.location import load_location_encoder
    from botaclip.progress import as_progress
    from botaclip.store.h3vec import cell_to_latlng

    cfg = build(LocationConfig, config, **options)
    check_identifier(name)
    if cfg.like == name:
        raise InvalidInputError(f"{param('like')} {cfg.like!r} is the feature set being written; name another one")
    reporter = as_progress(progress)
    started = time.perf_counter()
    source, parents, cells_of = (_like_plan(store, cfg.like) if cfg.like is not None
                                 else _region_plan(store, cfg.region))
    encoder = load_location_encoder(cfg.model, cfg.device)
    prov = {**encoder.provenance, "cells": source}
    summary = LocationSummary(feature_set=name, model=cfg.model, store=str(store.path), source=source,
                              provenance=prov)
    remaining = cfg.limit
    with store.writer(name, kind=LOCATION_KIND, dim=encoder.dim, provenance=prov, overwrite=cfg.overwrite) as w:
        check_present = not w.replacing
        summary.setup_seconds = time.perf_counter() - started
        reporter.step(f"embedding {source} with {cfg.model} ({LOCATION_MODELS[cfg.model][0]} "
                      f"{prov.get('package_version')}) into {name!r}, {len(parents)} partition(s)")
        with reporter.bar(len(parents), "partitions", "add-location") as bar:
            for parent in parents:
                if remaining is not None and remaining <= 0:
                    break
                cells = np.sort(np.asarray(cells_of(parent), dtype=np.uint64))
                todo = _missing(cells, store.partition_cells(name, parent)) if check_present else cells
                summary.skipped_present += len(cells) - len(todo)
                complete = remaining is None or len(todo) <= remaining
                if not complete:
                    todo = todo[:remaining]
                if remaining is not None:
                    remaining -= len(todo)
                if todo.size:
                    lat, lng = cell_to_latlng(todo)
                    w.write(todo, embedding=encoder.embed(lat, lng, cfg.batch_size))
                    summary.written += int(todo.size)
                    summary.partitions += 1
                    if complete:  # committed now, so a killed run keeps it
                        w.finish_partition(parent)
                bar.update(1)
    summary.seconds = time.perf_counter() - started
    return summary


def location_summary_line(summary: LocationSummary) -> str:
    """What the CLI prints after a run."""
    sha = summary.provenance.get("weights_sha256", "")[:12]
    return (f"wrote {summary.written} cells of {summary.feature_set!r} ({summary.model} "
            f"{summary.provenance.get('package_version')}, weights sha256 {sha}...; dim "
            f"{summary.provenance.get('dim')}; {summary.skipped_present} already there) from {summary.source} in "
            f"{summary.seconds:.1f} s ({summary.cells_per_s:,.0f} cells/s after {summary.setup_seconds:.1f} s setup)")


__all__ = ["LOCATION_KIND", "LocationConfig", "LocationSummary", "add_location", "location_summary_line"]
