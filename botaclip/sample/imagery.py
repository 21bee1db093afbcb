"""How the landscape looks from a survey aircraft: a 4-band (R, G, B, NIR) 1 m orthophoto mosaic.

Each surface gets its colour and texture (crowns and their shadows in forests, fine grain and mown parcels in
meadows, coarse bright blocks on scree, smooth dark water, roofs and roads), lit by the sun over the terrain.
Vegetation is greener and brighter in the near infrared where it is wetter or richer in nutrients, so what the
species respond to can be seen. On top come the nuisances of real mosaics that say nothing about plants: flight
strips with their own brightness, colour cast, haze and across-track gradient, cast shadows, sensor noise, and a
ragged no-data strip along the mosaic edge.
"""

from __future__ import annotations

import numpy as np
from rasterio import features
from shapely.geometry import Polygon

from botaclip.sample.fields import Grid, RowUpsampler, gaussian_field, smooth_curve, smoothstep
from botaclip.sample.landscape import (
    ALPINE,
    CONIFER,
    DECIDUOUS,
    LAKE,
    MEADOW,
    PARKING,
    RIVER,
    ROAD,
    ROCK,
    ROOF,
    TRACK,
    YARD,
    Landscape,
)

BANDS = ("red", "green", "blue", "nir")
# Band centre wavelengths (µm) of a typical aerial RGB+NIR camera, for the DOFA wavelength encoding.
WAVELENGTHS_UM = (0.665, 0.56, 0.49, 0.842)
SUN_AZIMUTH_DEG = 155.0  # a late-morning survey flight: shadows fall to the north-north-west
SUN_ELEVATION_DEG = 50.0

# Sunlit reflectance on flat ground, as 8-bit digital numbers (R, G, B, NIR).
_COLOURS = {
    DECIDUOUS: (70, 100, 56, 200),
    CONIFER: (46, 70, 52, 135),
    MEADOW: (105, 132, 74, 178),
    ALPINE: (128, 130, 92, 140),
    ROCK: (168, 165, 156, 165),
    LAKE: (24, 44, 54, 10),
    RIVER: (58, 86, 90, 28),
    ROAD: (78, 79, 83, 66),
    TRACK: (168, 152, 126, 150),
    YARD: (140, 135, 124, 118),
    PARKING: (92, 92, 96, 76),
    ROOF: (150, 80, 60, 110),
}
# Texture amplitudes: pixel grain, ~4 m blobs, ~8 m blobs, ~10 m patches.
_TEXTURE = {
    DECIDUOUS: (0.05, 0.06, 0.10, 0.05),
    CONIFER: (0.06, 0.06, 0.06, 0.05),
    MEADOW: (0.05, 0.03, 0.04, 0.07),
    ALPINE: (0.07, 0.06, 0.07, 0.09),
    ROCK: (0.08, 0.10, 0.10, 0.12),
    LAKE: (0.01, 0.0, 0.015, 0.01),
    RIVER: (0.03, 0.04, 0.0, 0.02),
    ROAD: (0.03, 0.0, 0.0, 0.02),
    TRACK: (0.07, 0.05, 0.0, 0.04),
    YARD: (0.07, 0.04, 0.03, 0.05),
    PARKING: (0.03, 0.0, 0.0, 0.02),
    ROOF: (0.03, 0.0, 0.0, 0.0),
}
# How much moisture and nutrients show in the vegetation's colour.
_VIGOUR = {MEADOW: 1.0, ALPINE: 0.8, DECIDUOUS: 0.35, CONIFER: 0.3}
_VIGOUR_BAND = (-0.6, 0.5, -0.3, 1.0)
# Roof palette (R, G, B, NIR): terracotta, brown tile, slate, metal, red-brown, flat gravel roof.
_ROOFS = np.array(
    [(150, 80, 60, 110), (112, 82, 66, 96), (72, 74, 80, 70), (160, 160, 162, 150), (132, 72, 56, 100),
     (170, 168, 160, 150)],
    dtype=np.float32,
)
# Shadows keep sky light, which is blue: blue is darkened least.
_SHADOW_DEPTH = (0.60, 0.57, 0.45, 0.55)
# A mown parcel is brighter and yellower, with less NIR.
_PARCEL_BAND = (0.12, 0.04, 0.08, -0.14)


def _lut(table: dict, index: int, default: float = 0.0) -> np.ndarray:
    lut = np.full(256, default, dtype=np.float32)
    for code, values in table.items():
        lut[code] = values if np.isscalar(values) else values[index]
    return lut


def make_footprint(rng: np.random.Generator, grid: Grid) -> Polygon:
    """Valid-data area of the mosaic (Lambert-93): the region minus a ragged no-data strip along the east edge
    (50-150 m wide) and a shorter one along the south edge, as where a mosaic's last flight strip ends."""
    S = grid.size_m
    step = 25.0
    wide, narrow = min(150.0, 0.12 * S), min(50.0, 0.04 * S)
    ys = np.arange(grid.top, grid.bottom - step / 2, -step)
    ys[-1] = grid.bottom
    east = narrow + (wide - narrow) * np.clip(0.5 + 0.3 * smooth_curve(rng, ys.size, 8.0), 0.0, 1.0)
    east += rng.uniform(-6.0, 6.0, ys.size)
    end = grid.left + S * rng.uniform(0.35, 0.6)
    xs = np.arange(end, grid.left - step / 2, -step)
    xs[-1] = grid.left
    south = (0.5 * narrow + 0.5 * wide) * np.clip(0.6 + 0.25 * smooth_curve(rng, xs.size, 6.0), 0.2, 1.0)
    south *= smoothstep(end, end - 150.0, xs) if xs.size > 1 else 1.0
    ring = [(grid.left, grid.top)]
    ring += [(grid.right - e, y) for e, y in zip(east, ys)]
    ring += [(x, grid.bottom + h) for x, h in zip(xs, south)]
    polygon = Polygon(ring)
    return polygon if polygon.is_valid else polygon.buffer(0)


def valid_mask(footprint: Polygon, grid: Grid) -> np.ndarray:
    """Boolean (n, n) mask of the 1 m pixels whose centre lies in the footprint."""
    return features.rasterize([(footprint, 1)], out_shape=(grid.n, grid.n), transform=grid.transform, fill=0,
                              dtype=np.uint8).astype(bool)


def _sun() -> tuple[float, float, float]:
    az, el = np.radians(SUN_AZIMUTH_DEG), np.radians(SUN_ELEVATION_DEG)
    return float(np.sin(az) * np.cos(el)), float(np.cos(az) * np.cos(el)), float(np.sin(el))


def _lambert(grad_east: np.ndarray, grad_north: np.ndarray, ambient: float = 0.3) -> np.ndarray:
    """Brightness of a surface with the given slopes relative to flat ground (1.0), with sky light."""
    se, sn, su = _sun()
    cos_i = (su - grad_east * se - grad_north * sn) / np.sqrt(1.0 + grad_east * grad_east + grad_north * grad_north)
    np.maximum(cos_i, 0.0, out=cos_i)
    return (ambient + (1.0 - ambient) * cos_i) / (ambient + (1.0 - ambient) * su)


def _shade(height: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Light on crowns and roofs (relative, from the height field's slopes) and cast-shadow strength (0..1).

    ``height`` holds one row above the output rows and ``_HALO`` rows below them (zeros past the image edge);
    the first ``rows`` output rows are returned.
    """
    n1 = height.shape[1]
    ge = np.zeros((rows, n1), dtype=np.float32)
    ge[:, 1:-1] = height[1 : rows + 1, 2:] - height[1 : rows + 1, :-2]
    gn = height[0:rows] - height[2 : rows + 2]
    ge *= np.float32(0.5)
    gn *= np.float32(0.5)
    light = _lambert(ge, gn).astype(np.float32)
    np.clip(light, 0.45, 1.3, out=light)
    # Cast shadows: a pixel is shaded when something towards the sun rises above the sun ray through it.
    occluder = np.zeros((rows, n1), dtype=np.float32)
    for r, c, drop in _SHADOW_STEPS:
        target = occluder[:, : n1 - c]
        np.maximum(target, height[1 + r : 1 + r + rows, c:] - drop, out=target)
    occluder -= height[1 : rows + 1]
    occluder -= np.float32(0.3)
    occluder *= np.float32(1 / 1.5)
    np.clip(occluder, 0.0, 1.0, out=occluder)
    return light, occluder


def _shadow_steps() -> list[tuple[int, int, np.float32]]:
    se, sn, su = _sun()
    horiz = np.hypot(se, sn)
    drow, dcol = -sn / horiz, se / horiz  # image rows grow southwards
    steps = []
    for dist in np.arange(1.0, 23.5, 1.5):
        r, c = int(round(dist * drow)), int(round(dist * dcol))
        steps.append((r, c, np.float32(np.hypot(r, c) * su / horiz)))
    return steps


_SHADOW_STEPS = _shadow_steps()
_HALO = max(r for r, _, _ in _SHADOW_STEPS) + 1
_CHUNK_ROWS = 100  # rows rendered at a time: temporaries stay in cache


def _height_rows(land: Landscape, micro_lut: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """Height field of rows r0..r1 with a halo (one row above, shadow reach below); boulders and tussocks add
    micro-relief."""
    n = land.grid.n
    rows = r1 - r0
    h0, h1 = max(r0 - 1, 0), min(r1 + _HALO, n)
    height = np.zeros((rows + 1 + _HALO, n), dtype=np.float32)
    block = land.canopy[h0:h1] + micro_lut[land.surface[h0:h1]] * land.textures.crowns[h0:h1]
    height[h0 - (r0 - 1) : h0 - (r0 - 1) + (h1 - h0)] = block
    if r0 == 0:
        height[0] = height[1]
    return height


def render_orthophoto(rng: np.random.Generator, land: Landscape, valid: np.ndarray) -> np.ndarray:
    """Render the (4, n, n) uint8 orthophoto (R, G, B, NIR); no-data pixels 0, valid pixels 1..255."""
    grid = land.grid
    n = grid.n
    surface, tex = land.surface, land.textures

    # Every random draw happens here, before the row loop, so chunking cannot change the picture.
    patches = RowUpsampler(gaussian_field(rng, (grid.nc, grid.nc), 1.5))
    parcels = _MeadowParcels(rng)
    strips = _FlightStrips(rng, grid)

    terrain_light = RowUpsampler(_lambert(land.grad_east, land.grad_north))
    moisture = RowUpsampler(land.moisture - 0.5)
    nutrient = RowUpsampler(land.nutrient)
    larch_zone = RowUpsampler(smoothstep(1650.0, 1950.0, land.dem))
    roof_rows, roof_cols, roof_colour = _roofs(land)

    colour = [_lut(_COLOURS, b, 100.0) for b in range(4)]
    texture_amp = [_lut(_TEXTURE, k) for k in range(4)]
    vigour_lut = _lut(_VIGOUR, 0)
    micro_lut = _lut({ROCK: 1.2, ALPINE: 0.2}, 0)
    noise_views = (tex.white[::-1], tex.white[:, ::-1], tex.white[::-1, ::-1], tex.white.T)
    out = np.empty((4, n, n), dtype=np.uint8)

    for r0 in range(0, n, _CHUNK_ROWS):
        r1 = min(r0 + _CHUNK_ROWS, n)
        rows = r1 - r0
        s = surface[r0:r1]

        light, shadow = _shade(_height_rows(land, micro_lut, r0, r1), rows)
        light *= terrain_light.rows(r0, r1)

        texture = np.ones((rows, n), dtype=np.float32)
        for amp_lut, field in zip(texture_amp, (tex.white[r0:r1], tex.crowns[r0:r1], tex.clumps[r0:r1],
                                                patches.rows(r0, r1))):
            texture += amp_lut[s] * field
        texture *= light
        texture *= strips.across(r0, r1)

        vigour = moisture.rows(r0, r1)
        vigour *= np.float32(0.35)
        vigour += np.float32(0.25) * nutrient.rows(r0, r1)
        vigour *= vigour_lut[s]
        parcel = parcels.tone(r0, r1, n)
        parcel *= s == MEADOW
        strip = strips.index(r0, r1)

        # Sub-surfaces that change colour, not texture: shrubs and boulders in pastures, larches near treeline.
        clumps, crowns = tex.clumps[r0:r1], tex.crowns[r0:r1]
        alpine = s == ALPINE
        shrubs = np.flatnonzero(alpine & (clumps > 0.8))
        boulders = np.flatnonzero(alpine & (crowns > 1.3))
        larch = np.flatnonzero((s == CONIFER) & (clumps > 0.35))
        larch_weight = larch_zone.rows(r0, r1).ravel()[larch]
        vigour.reshape(-1)[boulders] = 0.0
        k0, k1 = np.searchsorted(roof_rows, [r0, r1])
        roofs = (roof_rows[k0:k1] - r0) * n + roof_cols[k0:k1]

        for b in range(4):
            value = colour[b][s]
            flat = value.reshape(-1)
            flat[shrubs] *= (0.7, 0.88, 0.8, 0.9)[b]
            flat[boulders] = _COLOURS[ROCK][b]
            flat[larch] += larch_weight * (18.0, 24.0, 6.0, 30.0)[b]
            flat[roofs] = roof_colour[k0:k1, b]
            value *= texture
            value *= 1.0 - np.float32(_SHADOW_DEPTH[b]) * shadow
            value *= 1.0 + np.float32(_VIGOUR_BAND[b]) * vigour
            value *= 1.0 + np.float32(_PARCEL_BAND[b]) * parcel
            value *= strips.gain[b][strip]
            value += strips.offset[b][strip]
            value += np.float32(1.2) * noise_views[b][r0:r1]
            np.clip(value, 1.0, 255.0, out=value)
            value += np.float32(0.5)
            band = value.astype(np.uint8)
            band[~valid[r0:r1]] = 0
            out[b, r0:r1] = band
    return out


class _MeadowParcels:
    """Tone (-1 tall grass .. +1 freshly mown) of long hay parcels on a rotated grid."""

    WIDTH_M, LENGTH_M = 30.0, 110.0

    def __init__(self, rng: np.random.Generator):
        theta = rng.uniform(0, np.pi)
        self.cos, self.sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        self.shifts = rng.uniform(0.0, self.LENGTH_M, 1024).astype(np.float32)
        self.tones = rng.uniform(-1.0, 1.0, 1024 * 64).astype(np.float32)

    def tone(self, r0: int, r1: int, n: int) -> np.ndarray:
        x = np.arange(n, dtype=np.float32)[None, :]
        y = np.arange(r0, r1, dtype=np.float32)[:, None]
        across = x * self.cos + y * self.sin
        # A gentle warp makes some parcels narrower than others.
        across += np.float32(9.0) * np.sin(across * np.float32(2 * np.pi / 97.0))
        column = (across * np.float32(1 / self.WIDTH_M) + np.float32(1024)).astype(np.int64) % 1024
        along = y * self.cos - x * self.sin + self.shifts[column]
        index = (along * np.float32(1 / self.LENGTH_M) + np.float32(128)).astype(np.int64) % 64
        index += column * 64
        return self.tones[index]


class _FlightStrips:
    """North-south flight strips with ragged seamlines; each has its own gain, colour cast, haze and
    across-track brightness gradient (sun and view angles change across a photo)."""

    def __init__(self, rng: np.random.Generator, grid: Grid):
        n = grid.n
        self.count = count = max(2, int(round(grid.size_m / 1250.0)))
        amplitude = min(40.0, 0.03 * grid.size_m)
        self.seams = np.stack(
            [n * k / count + amplitude * smooth_curve(rng, n, 0.05 * n) for k in range(1, count)]
        ).astype(np.float32)
        common = rng.uniform(0.92, 1.08, count)
        self.gain = [(common * rng.normal(1.0, 0.03, count)).astype(np.float32) for _ in range(4)]
        haze = rng.uniform(0.0, 6.0, count)
        self.offset = [(rng.normal(0.0, 2.5, count) + haze * w).astype(np.float32) for w in (0.3, 0.5, 1.0, 0.1)]
        self.slope = (rng.uniform(0.03, 0.07, count) * np.where(np.arange(count) % 2, -1.0, 1.0)).astype(np.float32)
        self.centre = ((np.arange(count) + 0.5) * n / count).astype(np.float32)
        self.width = np.float32(n / count)
        self.cols = np.arange(n, dtype=np.float32)

    def index(self, r0: int, r1: int) -> np.ndarray:
        strip = np.zeros((r1 - r0, self.cols.size), dtype=np.uint8)
        for seam in self.seams:
            strip += self.cols[None, :] >= seam[r0:r1, None]
        return strip

    def across(self, r0: int, r1: int) -> np.ndarray:
        strip = self.index(r0, r1)
        factor = self.cols[None, :] - self.centre[strip]
        factor *= self.slope[strip] / self.width
        factor += np.float32(1.0)
        return factor


def _roofs(land: Landscape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of every roof and their colour: pitched roofs have a sunny and a shaded face, flat roofs do not."""
    ids = land.building_id
    rows, cols = np.nonzero(ids)
    buildings = land.terrain.layout.buildings
    if rows.size == 0:
        return rows, cols, np.zeros((0, 4), dtype=np.float32)
    which = ids[rows, cols].astype(np.int64) - 1
    centre_x = np.array([b.footprint.centroid.x for b in buildings])[which]
    centre_y = np.array([b.footprint.centroid.y for b in buildings])[which]
    angle = np.array([b.angle for b in buildings])[which]
    flat = np.array([b.kind == "block" for b in buildings])[which]
    roof = np.array([b.roof for b in buildings])[which]
    grid = land.grid
    dx = grid.left + cols + 0.5 - centre_x
    dy = grid.top - rows - 0.5 - centre_y
    side = np.where(-dx * np.sin(angle) + dy * np.cos(angle) >= 0, 1.0, -1.0)
    pitch = np.radians(30.0)
    normal_e = -np.sin(angle) * side * np.sin(pitch)
    normal_n = np.cos(angle) * side * np.sin(pitch)
    face = _lambert(-normal_e / np.cos(pitch), -normal_n / np.cos(pitch))
    face = np.where(flat, 1.0, face)
    colour = _ROOFS[roof] * face[:, None].astype(np.float32)
    return rows, cols, colour
