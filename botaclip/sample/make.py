"""Build a sample region: generate the world, survey it, write every file, and move it into place atomically."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.sample import writers
from botaclip.sample.environment import environment_at, residual_fields
from botaclip.sample.fields import Grid
from botaclip.sample.imagery import make_footprint, render_orthophoto, valid_mask
from botaclip.sample.landscape import HABITAT_CODE, HABITATS, make_landscape
from botaclip.sample.readme import readme_text
from botaclip.sample.region import MANIFEST, SAMPLE_VERSION, SampleRegion, default_sample_dir, is_current
from botaclip.sample.species import Community
from botaclip.sample.surveys import (
    PLOT_EFFORT,
    SOIL_EFFORT,
    sample_butterflies,
    sample_releves,
    sample_soil,
    survey_locations,
)
from botaclip.sample.truth import build_lattice, cells_table, footprint_wgs84, to_wgs84, truth_table
from botaclip.store.outputs import check_output_path

CENTRE_L93 = (930_000.0, 6_450_000.0)  # near Chamrousse, Belledonne, French Alps
MIN_SIZE_KM, MAX_SIZE_KM = 0.5, 20.0
MAX_PLOTS = 200_000
MIN_SOIL_SITES = 150
# Independent random streams, so that e.g. --plots changes the relevés but not the landscape or the pixels.
_STREAMS = ("landscape", "footprint", "imagery", "residual", "community", "plots", "butterflies", "soil")


def validate_parameters(seed: int, size_km: float, plots: int) -> None:
    """Raise BotaclipError unless seed >= 0, 0.5 <= size_km <= 20 and 1 <= plots <= 200,000."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(size_km, (int, float, np.number)) or not math.isfinite(size_km) or size_km <= 0:
        raise InvalidInputError(f"size must be a positive number of kilometres, got {size_km!r}")
    if not MIN_SIZE_KM <= size_km <= MAX_SIZE_KM:
        raise InvalidInputError(f"size must be between {MIN_SIZE_KM:g} and {MAX_SIZE_KM:g} km, got {size_km:g}")
    if isinstance(plots, bool) or not isinstance(plots, (int, np.integer)) or plots < 1:
        raise InvalidInputError(f"plots must be a positive integer, got {plots!r}")
    if plots > MAX_PLOTS:
        raise InvalidInputError(f"plots must be at most {MAX_PLOTS:,}, got {plots:,}")


def region_grid(size_km: float) -> Grid:
    """The 1 m grid of a square region of ``size_km`` (rounded to 10 m) centred on ``CENTRE_L93``."""
    n = int(round(size_km * 100)) * 10
    return Grid(left=CENTRE_L93[0] - n / 2, top=CENTRE_L93[1] + n / 2, n=n)


def soil_site_count(plots: int) -> int:
    return max(MIN_SOIL_SITES, plots // 10)


def make_sample(
    out_dir: str | os.PathLike,
    seed: int = 0,
    size_km: float = 5.0,
    plots: int = 2000,
    overwrite: bool = False,
) -> SampleRegion:
    """Build the sample region into ``out_dir`` and return its paths.

    ``size_km``: side of the square region in kilometres (1 m pixels); ``plots``: number of relevés. The files
    are written to a temporary directory next to ``out_dir`` and renamed into place, so an interrupted build
    never leaves a half region. ``out_dir`` must not exist or be empty; with ``overwrite`` an existing sample
    region (a directory holding ``sample.json``) is replaced, never any other directory.
    """
    validate_parameters(seed, size_km, plots)
    out = Path(out_dir).expanduser()
    _check_target(out, overwrite)
    tmp = _temp_dir_beside(out)
    try:
        generate(tmp, seed=int(seed), size_km=float(size_km), plots=int(plots))
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SampleRegion.open(out)


def ensure_sample(seed: int = 0, size_km: float = 5.0, plots: int = 2000) -> SampleRegion:
    """The sample region for these parameters from the per-user cache, built once and reused."""
    validate_parameters(seed, size_km, plots)
    target = default_sample_dir(seed, size_km, plots)
    if is_current(target, seed, size_km, plots):
        return SampleRegion.open(target)
    _check_target(target, overwrite=True)
    tmp = _temp_dir_beside(target)
    try:
        generate(tmp, seed=int(seed), size_km=float(size_km), plots=int(plots))
        if is_current(target, seed, size_km, plots):  # another process finished first: use its region
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _move_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SampleRegion.open(target)


def _check_target(out: Path, overwrite: bool) -> None:
    check_output_path(out, what=param("out_dir"), is_dir=True)  # --overwrite must never empty a store
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{param('out_dir')} {out} is an existing file; give a directory path that does not exist yet")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise InvalidInputError(f"{param('out_dir')} {out} is a non-empty directory that is not a sample region; choose a new path")
        if not overwrite:
            raise InvalidInputError(f"{param('out_dir')} {out} already holds a sample region; pass {param('overwrite')} to replace it")


def _temp_dir_beside(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise BotaclipError(f"cannot write next to {out}: {exc.strerror or exc}") from exc


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished directory to ``out``; an old region there is moved aside first, then deleted."""
    old = None
    try:
        if out.is_dir():
            if any(out.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old / "region")
            else:
                out.rmdir()
        tmp.chmod(0o755)  # mkdtemp makes it private; a finished region is as readable as any directory
        os.rename(tmp, out)
    except OSError as exc:
        raise BotaclipError(f"cannot move the new sample region to {out}: {exc.strerror or exc}") from exc
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class _Surveys:
    """Where the plots and soil sites are, their environment, and what was recorded there."""

    px: np.ndarray
    py: np.ndarray
    plot_env: object
    releves: dict
    records: pd.DataFrame
    sx: np.ndarray
    sy: np.ndarray
    soil: pd.DataFrame


def _write_surveys(region: SampleRegion, plots: int, s: _Surveys) -> None:
    """Write plots, relevés, butterfly records and soil samples as CSV."""
    px, py, plot_env, releves, records, sx, sy, soil = (
        s.px, s.py, s.plot_env, s.releves, s.records, s.sx, s.sy, s.soil)
    plot_ids = np.array([f"R{i + 1:05d}" for i in range(plots)], dtype=object)
    plat, plng = to_wgs84(px, py)
    plots_table = pd.DataFrame({
        "releve_id": plot_ids,
        "decimalLatitude": plat.round(7),
        "decimalLongitude": plng.round(7),
        "x_l93": px.round(2),
        "y_l93": py.round(2),
        "elevation_m": plot_env.elevation.round(1),
        "habitat": np.array(HABITATS, dtype=object)[plot_env.habitat - 1],
        "moisture": plot_env.moisture.round(4),
    })
    writers.write_csv(region.plots, plots_table)
    writers.write_csv(region.releves, pd.DataFrame({
        "releve_id": plot_ids[releves["plot"]],
        "decimalLatitude": plots_table["decimalLatitude"].to_numpy()[releves["plot"]],
        "decimalLongitude": plots_table["decimalLongitude"].to_numpy()[releves["plot"]],
        "species": releves["species"],
        "cover": releves["cover"],
    }))
    blat, blng = to_wgs84(records["x"].to_numpy(), records["y"].to_numpy())
    writers.write_csv(region.butterflies, pd.DataFrame({
        "occurrenceID": [f"B{i + 1:05d}" for i in range(len(records))],
        "species": records["species"],
        "decimalLatitude": blat.round(7),
        "decimalLongitude": blng.round(7),
        "occurrenceStatus": "PRESENT",
        "coordinateUncertaintyInMeters": records["coordinateUncertaintyInMeters"],
    }))
    slat, slng = to_wgs84(sx, sy)
    site = soil["site"].to_numpy()
    writers.write_csv(region.soil, pd.DataFrame({
        "site_id": np.array([f"S{i + 1:04d}" for i in range(len(sx))], dtype=object)[site],
        "decimalLatitude": slat.round(7)[site],
        "decimalLongitude": slng.round(7)[site],
        "species": soil["species"],
        "individualCount": soil["individualCount"],
    }))


def _write_manifest(region: SampleRegion, seed: int, size_km: float, grid, counts: dict) -> dict:
    """Write README and manifest.json; returns the manifest."""
    plots = counts["plots"]
    bounds = (grid.left, grid.bottom, grid.right, grid.top)
    region.readme.write_text(readme_text(seed, size_km, plots, bounds, counts))
    manifest = {
        "generator": "botaclip.sample", "version": SAMPLE_VERSION, "seed": seed, "size_km": size_km,
        "plots": plots, "crs": "EPSG:2154", "bounds_l93": list(bounds), "pixel_size_m": 1.0, "dem_pixel_size_m": 5.0,
        "h3_resolution": 10, "bands": ["red", "green", "blue", "nir"], "wavelengths_um": [0.665, 0.56, 0.49, 0.842],
        "counts": counts,
    }
    region.manifest.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def generate(root: Path, seed: int, size_km: float, plots: int, timings: dict[str, float] | None = None) -> dict:
    """Generate the world and write every file into the existing directory ``root``; returns the manifest.

    ``timings``, if given, receives the wall-clock seconds of each stage (for ``bench/sample.py``).
    """
    clock = _StageClock(timings)
    seeds = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    rngs = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds)}
    grid = region_grid(size_km)
    land = make_landscape(rngs["landscape"], grid)
    footprint = make_footprint(rngs["footprint"], grid)
    valid = valid_mask(footprint, grid)
    clock.lap("landscape")
    region = SampleRegion.at(root)
    image = render_orthophoto(rngs["imagery"], land, valid)
    clock.lap("render orthophoto")
    writers.write_ortho(region.ortho, image, grid, seed)
    del image
    clock.lap("write orthophoto")
    residual = residual_fields(rngs["residual"], land)

    lattice = build_lattice(land, valid, footprint, residual)
    community, suitability = Community.draw(rngs["community"], lattice.env)
    clock.lap("H3 lattice and truth")
    water = HABITAT_CODE["water"]

    def on_land(x, y):
        """Survey spots must be inside the imagery and not in open water."""
        inside = (x > grid.left) & (x < grid.right) & (y > grid.bottom) & (y < grid.top)
        row, col = grid.fine_index(x, y)
        return inside & valid[row, col] & (land.habitat[row, col] != water)

    px, py = survey_locations(rngs["plots"], lattice.env, plots, PLOT_EFFORT, on_land, "plots")
    plot_env = environment_at(land, residual, px, py)
    releves = sample_releves(rngs["plots"], community, plot_env)
    records = sample_butterflies(rngs["butterflies"], community, lattice.env, suitability, on_land)
    sx, sy = survey_locations(rngs["soil"], lattice.env, soil_site_count(plots), SOIL_EFFORT, on_land, "soil sites")
    soil_env = environment_at(land, residual, sx, sy)
    soil = sample_soil(rngs["soil"], community, soil_env)

    clock.lap("surveys")
    writers.write_dem(region.dem, land.dem, grid)
    writers.write_habitat(region.habitat, land.habitat, valid, grid)
    writers.write_csv(region.habitat_table, pd.DataFrame({"code": range(1, len(HABITATS) + 1), "name": HABITATS}))
    writers.write_geojson(region.region_geojson, footprint_wgs84(footprint),
                          {"name": "botaclip sample region", "seed": seed, "size_km": size_km})

    _write_surveys(region, plots, _Surveys(px, py, plot_env, releves, records, sx, sy, soil))
    writers.write_csv(region.species, species_table(community))
    writers.write_parquet(region.truth, truth_table(lattice, community, suitability))
    writers.write_parquet(region.cells, cells_table(lattice))

    counts = {
        "plots": plots, "releve_rows": len(releves), "butterfly_records": len(records),
        "soil_sites": len(sx), "soil_groups": len(community.soil), "plants": len(community.plants),
        "butterflies": len(community.butterflies), "cells": int(lattice.cells.size),
    }
    manifest = _write_manifest(region, seed, size_km, grid, counts)
    clock.lap("write other files")
    return manifest


class _StageClock:
    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[stage] = now - self.last
        self.last = now


def species_table(community: Community) -> pd.DataFrame:
    """One row per taxon with its group, guild and niche parameters (NaN where not applicable)."""
    rows = []
    for n in community.niches:
        row = {"taxon": n.taxon, "group": n.group, "guild": n.guild}
        row.update({f"pref_{h}": round(float(v), 4) for h, v in zip(HABITATS, n.habitat)})
        row.update({
            "elevation_opt_m": round(n.elevation_opt, 1),
            "elevation_tol_m": round(n.elevation_tol, 1),
            "moisture_opt": round(n.moisture_opt, 4),
            "moisture_tol": round(n.moisture_tol, 4),
            "moisture_effect": round(n.moisture_effect, 4),
            "nutrient_effect": round(n.nutrient_effect, 4),
            "intercept": round(n.intercept, 4),
            "peak_suitability": round(n.peak, 4),
            "max_cover_pct": round(n.max_cover, 2),
            "mean_abundance": round(n.mean_abundance, 2),
            "hosts": ";".join(n.hosts),
            "openness_response": n.openness,
        })
        rows.append(row)
    return pd.DataFrame(rows)
