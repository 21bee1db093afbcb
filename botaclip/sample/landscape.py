"""What is on the ground: moisture, nutrients, habitats, tree canopy and buildings.

Habitats follow elevation, slope and smooth random fields (land use, treeline, deciduous/conifer balance), then
are drawn at 1 m so that forest edges follow individual crowns. Water and built surfaces come from the vector
layout. Everything the species respond to later (habitat, elevation, moisture, nutrients, openness) is defined
here, and every one of them also shapes what the orthophoto shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio import features
from scipy import ndimage

from botaclip.sample.fields import (
    COARSE_FACTOR,
    Grid,
    RowUpsampler,
    block_mean,
    gaussian_field,
    tree_tops,
    upsample,
)
from botaclip.sample.terrain import Terrain, make_terrain, slope_aspect

HABITATS = (
    "deciduous_forest",
    "coniferous_forest",
    "meadow",
    "alpine_pasture",
    "scree_rock",
    "water",
    "built",
)
HABITAT_CODE = {name: code for code, name in enumerate(HABITATS, start=1)}
HABITAT_NODATA = 255
_CHUNK_ROWS = 100  # 1 m rows processed at a time

# Surface classes drawn at 1 m: finer than habitats, because a roof and a road look different.
DECIDUOUS, CONIFER, MEADOW, ALPINE, ROCK = 1, 2, 3, 4, 5
LAKE, RIVER = 10, 11
ROAD, TRACK, YARD, PARKING, ROOF = 20, 21, 22, 23, 24

SURFACE_TO_HABITAT = np.full(256, HABITAT_NODATA, dtype=np.uint8)
SURFACE_TO_HABITAT[[DECIDUOUS, CONIFER, MEADOW, ALPINE, ROCK]] = [1, 2, 3, 4, 5]
SURFACE_TO_HABITAT[[LAKE, RIVER]] = HABITAT_CODE["water"]
SURFACE_TO_HABITAT[[ROAD, TRACK, YARD, PARKING, ROOF]] = HABITAT_CODE["built"]

# How open each surface is to a butterfly (1 = sunny grassland, 0 = closed canopy or water).
_OPENNESS = np.zeros(256, dtype=np.float32)
_OPENNESS[[MEADOW, ALPINE]] = 1.0
_OPENNESS[ROCK] = 0.6
_OPENNESS[[ROAD, TRACK, YARD, PARKING]] = 0.4


@dataclass
class Textures:
    """Fine-scale (1 m) unit-variance noise shared by the habitat edges and the renderer."""

    white: np.ndarray  # pixel grain, N(0, 1)
    crowns: np.ndarray  # round bumps about 5 m across, peak 0.5..1: conifer crowns, boulders
    clumps: np.ndarray  # round bumps about 10 m across: broadleaf crowns, shrub patches

    def stats(self, name: str) -> tuple[float, float]:
        """Mean and standard deviation of a texture, from a regular subsample (cheap, deterministic)."""
        sample = getattr(self, name)[::7, ::7]
        return float(sample.mean()), float(sample.std())


@dataclass
class Landscape:
    """The synthetic world. Coarse arrays are (nc, nc) at 5 m, fine arrays (n, n) at 1 m; row 0 is north."""

    grid: Grid
    terrain: Terrain
    slope: np.ndarray  # degrees (coarse)
    aspect: np.ndarray  # degrees clockwise from north (coarse)
    grad_east: np.ndarray  # dz/dx at reference scale (coarse)
    grad_north: np.ndarray  # dz/dy at reference scale (coarse)
    moisture: np.ndarray  # 0 (dry) .. 1 (waterlogged) (coarse)
    nutrient: np.ndarray  # 0..1, enrichment near buildings and roads (coarse)
    openness: np.ndarray  # 0..1, share of open ground within about 20 m (coarse)
    road_distance: np.ndarray  # metres to the nearest road or track (coarse)
    surface: np.ndarray  # surface class (fine, uint8)
    habitat: np.ndarray  # habitat code 1..7 (fine, uint8)
    canopy: np.ndarray  # height of trees and buildings above ground, m (fine, float32)
    building_id: np.ndarray  # 1-based index into terrain.layout.buildings, 0 elsewhere (fine, uint16)
    textures: Textures

    @property
    def dem(self) -> np.ndarray:
        return self.terrain.dem


def _burn(shapes, shape, transform, dtype=np.uint8, all_touched=False) -> np.ndarray:
    shapes = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, dtype=dtype)
    return features.rasterize(
        shapes, out_shape=shape, transform=transform, fill=0, dtype=dtype, all_touched=all_touched
    )


def _distance_m(mask: np.ndarray) -> np.ndarray:
    """Metres from every coarse pixel to the nearest pixel of ``mask`` (far away if the mask is empty)."""
    if not mask.any():
        return np.full(mask.shape, 1e5, dtype=np.float32)
    return (ndimage.distance_transform_edt(~mask) * COARSE_FACTOR).astype(np.float32)


def _crown_profile(bumps: np.ndarray, base: float) -> np.ndarray:
    """Relative height (0..1) of crowns from texture bumps: a crown is where a bump rises above a small
    threshold; it rises from ``base`` of the tree's height at its edge towards 1, so crowns cast full shadows."""
    profile = np.exp(bumps * np.float32(-1 / 0.35))
    profile *= np.float32(base - 1.0)
    profile += np.float32(1.0)
    profile *= bumps > 0.08
    return profile


@dataclass
class _Coarse:
    """Coarse masks and distances from the vector layout."""

    pistes: np.ndarray  # smoothed ski-piste mask
    water_distance: np.ndarray
    settle_distance: np.ndarray
    road_distance: np.ndarray


def _coarse_distances(layout, grid: Grid) -> _Coarse:
    """Rasterise water, settlements, roads and pistes on the coarse grid, and the distances to them."""
    nc, ct = grid.nc, grid.coarse_transform
    water_shapes = [(lake, 1) for lake in layout.lakes] + [(layout.river.buffer(6.0), 1)]
    water_shapes += [(s.buffer(1.5), 1) for s in layout.streams]
    water = _burn(water_shapes, (nc, nc), ct, all_touched=True).astype(bool)
    settled = _burn([(b.footprint, 1) for b in layout.buildings] + [(y, 1) for y in layout.yards]
                    + [(p, 1) for p in layout.parking], (nc, nc), ct, all_touched=True).astype(bool)
    road_lines = layout.roads + layout.tracks
    roads = _burn([(line.buffer(w / 2), 1) for line, w in road_lines], (nc, nc), ct, all_touched=True).astype(bool)
    pistes = _burn([(line.buffer(w / 2), 1) for line, w in layout.pistes], (nc, nc), ct).astype(np.float32)
    return _Coarse(
        pistes=ndimage.gaussian_filter(pistes, 1.0),
        water_distance=_distance_m(water),
        settle_distance=_distance_m(settled),
        road_distance=_distance_m(roads),
    )


def _moisture(rng: np.random.Generator, grid: Grid, terrain: Terrain, slope, aspect, coarse: _Coarse) -> np.ndarray:
    """Moisture: convergence, water nearby, ravines, flat ground, shade, altitude, and chance."""
    dem, nc = terrain.dem, grid.nc
    smooth_dem = ndimage.gaussian_filter(dem.astype(np.float64), max(2.0, 0.008 * nc), mode="nearest")
    convergence = ndimage.laplace(smooth_dem)
    convergence = np.clip(convergence / (convergence.std() + 1e-9), -3, 3)
    wet = (
        0.9 * convergence
        + 1.8 * np.exp(-coarse.water_distance / 40.0)
        + 1.2 * terrain.gully
        + 0.6 * np.clip(1.0 - slope / 30.0, 0.0, 1.0)
        + 0.5 * np.cos(np.radians(aspect))
        + 0.5 * (dem - 1600.0) / 700.0
        + 0.8 * gaussian_field(rng, (nc, nc), 0.04 * nc)
    )
    return 1.0 / (1.0 + np.exp(-1.4 * (wet - wet.mean()) / wet.std()))


def _habitat_scores(rng: np.random.Generator, grid: Grid, terrain: Terrain, slope, aspect, coarse: _Coarse) -> list:
    """Habitat scores on the coarse grid (> 0 means "yes"): alpine, forest, broadleaf, rock; and tree height."""
    dem, nc = terrain.dem, grid.nc
    land_use = gaussian_field(rng, (nc, nc), 0.035 * nc) + 0.5 * gaussian_field(rng, (nc, nc), 0.012 * nc)
    treeline = 1960.0 + 70.0 * gaussian_field(rng, (nc, nc), 0.08 * nc)
    forest_score = (
        np.minimum((treeline - dem) / 60.0, 1.5)
        + 1.0 * land_use
        + 0.06 * (slope - 22.0)
        - 3.0 * terrain.valley_floor
        - 3.5 * np.exp(-coarse.settle_distance / 100.0)
        - 8.0 * coarse.pistes
        - 0.3
    )
    broadleaf_score = (1320.0 - dem) / 90.0 + 0.9 * gaussian_field(rng, (nc, nc), 0.05 * nc) - 0.6 * np.cos(
        np.radians(aspect)
    )
    alpine_score = (dem - (1720.0 + 60.0 * gaussian_field(rng, (nc, nc), 0.06 * nc))) / 50.0
    # Rock where steep (rarely low down), where high and moderately steep, and on the summits.
    rock_score = np.maximum.reduce([
        (slope - 42.0) / 4.0 - np.maximum(0.0, (1400.0 - dem) / 150.0),
        (dem - 2270.0) / 60.0 + (slope - 24.0) / 6.0,
        (dem - 2430.0) / 25.0,
    ]) + 0.8 * gaussian_field(rng, (nc, nc), 0.015 * nc)
    tree_height = np.clip(28.0 - 12.0 * (dem - 900.0) / 1100.0, 7.0, 30.0)
    return [alpine_score, forest_score, broadleaf_score, rock_score, tree_height]


def _make_textures(rng: np.random.Generator, n: int) -> Textures:
    white = rng.standard_normal((n, n), dtype=np.float32)
    crowns = tree_tops(rng, (n, n), density=1 / 14, sigma=1.3)
    clumps = upsample(tree_tops(rng, (n // 2, n // 2), density=1 / 14, sigma=1.4), 2)
    return Textures(white=white, crowns=crowns, clumps=clumps)


def _vector_surface(layout, grid: Grid) -> np.ndarray:
    """Surface classes burnt from the vector layout at 1 m (0 where nothing is drawn)."""
    n = grid.n
    return _burn(
        [(layout.river.buffer(6.0), RIVER)]
        + [(s.buffer(1.5), RIVER) for s in layout.streams]
        + [(lake, LAKE) for lake in layout.lakes]
        + [(y, YARD) for y in layout.yards]
        + [(p, PARKING) for p in layout.parking]
        + [(line.buffer(w / 2), TRACK) for line, w in layout.tracks]
        + [(line.buffer(w / 2), ROAD) for line, w in layout.roads]
        + [(b.footprint, ROOF) for b in layout.buildings],
        (n, n),
        grid.transform,
    )


def _surface_rows(scores: list, clump: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Surface classes of one chunk of rows: habitats with edges that follow crowns, then the vector layout."""
    alpine, forest, broadleaf, rock, _ = scores
    s = np.where(alpine + 0.3 * clump > 0, np.uint8(ALPINE), np.uint8(MEADOW))
    forest = forest + 0.6 * clump > 0
    broadleaf = broadleaf + 0.6 * clump > 0
    s[forest & broadleaf] = DECIDUOUS
    s[forest & ~broadleaf] = CONIFER
    s[rock + 0.45 * clump > 0] = ROCK
    np.copyto(s, vs, where=vs > 0)
    return s


def _draw_fine(grid: Grid, layout, coarse_scores: list, textures: Textures):
    """Surface classes, canopy height and building ids at 1 m (row chunks keep temporaries in cache)."""
    n = grid.n
    crowns, clumps = textures.crowns, textures.clumps
    vector_surface = _vector_surface(layout, grid)
    building_id = _burn([(b.footprint, i + 1) for i, b in enumerate(layout.buildings)], (n, n), grid.transform,
                        dtype=np.uint16)
    building_heights = np.array([0.0] + [b.height_m for b in layout.buildings], dtype=np.float32)

    scores = [RowUpsampler(a) for a in coarse_scores]
    surface = np.empty((n, n), dtype=np.uint8)
    canopy = np.empty((n, n), dtype=np.float32)
    clump_mu, clump_sd = textures.stats("clumps")
    for r0 in range(0, n, _CHUNK_ROWS):
        r1 = min(r0 + _CHUNK_ROWS, n)
        rows = [u.rows(r0, r1) for u in scores]
        clump = (clumps[r0:r1] - clump_mu) * np.float32(1 / clump_sd)
        np.minimum(clump, 1.5, out=clump)  # rare tall peaks would scatter single trees over every meadow
        s = _surface_rows(rows, clump, vector_surface[r0:r1])
        surface[r0:r1] = s
        # Canopy: small conifer crowns, broad deciduous ones; trees shorter towards the treeline.
        conifer_crown = _crown_profile(crowns[r0:r1], 0.45)
        conifer_crown *= s == CONIFER
        broadleaf_crown = _crown_profile(0.85 * clumps[r0:r1] + 0.3 * crowns[r0:r1], 0.55)
        broadleaf_crown *= np.float32(0.9) * (s == DECIDUOUS)
        conifer_crown += broadleaf_crown
        conifer_crown *= rows[4]
        ids = building_id[r0:r1]
        np.copyto(conifer_crown, building_heights[ids], where=ids > 0)
        canopy[r0:r1] = conifer_crown
    return surface, canopy, building_id


def make_landscape(rng: np.random.Generator, grid: Grid) -> Landscape:
    """Build the whole world for one seed: relief, layout, moisture, nutrients, habitats and canopy."""
    terrain = make_terrain(rng, grid)
    layout = terrain.layout
    slope, aspect, grad_east, grad_north = slope_aspect(terrain.dem, grid.size_m)
    coarse = _coarse_distances(layout, grid)
    moisture = _moisture(rng, grid, terrain, slope, aspect, coarse)
    nutrient = np.maximum(np.exp(-coarse.settle_distance / 50.0), 0.45 * np.exp(-coarse.road_distance / 12.0))
    coarse_scores = _habitat_scores(rng, grid, terrain, slope, aspect, coarse)
    textures = _make_textures(rng, grid.n)
    surface, canopy, building_id = _draw_fine(grid, layout, coarse_scores, textures)
    openness = ndimage.gaussian_filter(block_mean(_OPENNESS[surface]), 4.0)

    return Landscape(
        grid=grid,
        terrain=terrain,
        slope=slope,
        aspect=aspect,
        grad_east=grad_east,
        grad_north=grad_north,
        moisture=moisture.astype(np.float32),
        nutrient=nutrient.astype(np.float32),
        openness=openness.astype(np.float32),
        road_distance=coarse.road_distance,
        surface=surface,
        habitat=SURFACE_TO_HABITAT[surface],
        canopy=canopy,
        building_id=building_id,
        textures=textures,
    )
