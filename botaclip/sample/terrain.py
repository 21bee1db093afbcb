"""Relief and man-made layout of the sample region: a glacial valley on the west flank of Belledonne.

The layout is drawn in normalised coordinates (u east, v north, 0..1 over the region), so a small test region
holds the same landscape as the 5 km default, only compressed: a valley floor with a river, a lake, a village
and a hamlet in the west; steep forested walls cut by ravines; a bench at 1,800-2,000 m with tarns, a ski station
and its pistes; rocky peaks in the east. Objects (buildings, road widths, tree crowns) keep their size in metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box

from botaclip.sample.fields import COARSE_FACTOR, Grid, fractal_field, gaussian_field, smoothstep

ELEVATION_RANGE_M = (800.0, 2500.0)
# Half-width of the flat valley floor, in normalised units (175 m in the 5 km region).
FLOOR_HALF_WIDTH = 0.035
# Slopes are computed as if the region were this wide, so small test regions are not absurdly steep.
REFERENCE_SIZE_M = 5000.0


@dataclass
class Building:
    """One building: footprint in Lambert-93 metres, long-axis angle (radians from east), height (m)."""

    footprint: Polygon
    angle: float
    kind: str  # house | barn | block
    height_m: float
    roof: int  # index into the roof palette of the renderer


@dataclass
class Layout:
    """Vector features in Lambert-93 metres: what is water and what is built, before any pixel is drawn."""

    river: LineString
    streams: list[LineString]
    lakes: list[Polygon]
    roads: list[tuple[LineString, float]]  # asphalt, (centre line, width m)
    tracks: list[tuple[LineString, float]]  # gravel
    buildings: list[Building]
    yards: list[Polygon]
    parking: list[Polygon]
    pistes: list[tuple[LineString, float]]
    settlements: list[tuple[float, float, float]] = field(default_factory=list)  # x, y, radius (m)


@dataclass
class Terrain:
    """The coarse-grid relief (5 m pixels, float32) and the layout drawn on it."""

    dem: np.ndarray  # elevation, m
    gully: np.ndarray  # 0..1, strength of the ravines (they gather water)
    valley_floor: np.ndarray  # 0..1, weight of the flat valley floor
    layout: Layout


def _ramp(edge0: float, edge1: float, x):
    """Half linear, half smooth step: walls that steepen gently instead of forming cliffs."""
    t = np.clip((np.asarray(x) - edge0) / (edge1 - edge0), 0.0, 1.0)
    return 0.5 * t + 0.5 * smoothstep(0.0, 1.0, t)


def _ellipse(x: float, y: float, ax: float, ay: float, angle_deg: float) -> Polygon:
    return affinity.rotate(affinity.scale(Point(x, y).buffer(1.0, quad_segs=24), ax, ay), angle_deg)


def _ellipse_radius(X, Y, x, y, ax, ay, angle_deg):
    a = np.deg2rad(angle_deg)
    dx, dy = X - x, Y - y
    along = dx * np.cos(a) + dy * np.sin(a)
    across = -dx * np.sin(a) + dy * np.cos(a)
    return np.sqrt((along / ax) ** 2 + (across / ay) ** 2)


def make_terrain(rng: np.random.Generator, grid: Grid) -> Terrain:
    """Draw the valley: DEM on the coarse grid (800-2,500 m) and every vector feature, all from ``rng``."""
    S = grid.size_m
    U, V = grid.coarse_uv()
    X, Y = grid.to_metres(U, V)
    phase = rng.uniform(0.0, 1.0, 8)

    def axis(v):
        """u of the valley axis (and roughly of the river) at northing v."""
        return 0.15 + 0.035 * np.sin(2 * np.pi * (0.55 * v + phase[0])) + 0.012 * np.sin(
            2 * np.pi * (1.6 * v + phase[1])
        )

    def east_u(de, v):
        """u at a fraction ``de`` of the way from the foot of the east wall to the east edge."""
        a = axis(v) + FLOOR_HALF_WIDTH
        return a + de * (1.0 - a)

    ua = axis(V)
    de = np.clip((U - ua - FLOOR_HALF_WIDTH) / (1.0 - ua - FLOOR_HALF_WIDTH), 0.0, 1.0)
    dw = np.clip((ua - FLOOR_HALF_WIDTH - U) / (ua - FLOOR_HALF_WIDTH), 0.0, 1.0)
    floor_weight = (1.0 - smoothstep(0.0, 0.06, de)) * (1.0 - smoothstep(0.0, 0.2, dw))

    # Glacial trough: steep walls up to a bench (the "shoulder"), then rocky peaks.
    profile = 0.58 * _ramp(0.0, 0.42, de) + 0.14 * _ramp(0.42, 0.72, de) + 0.28 * _ramp(0.70, 1.0, de)
    z = 830.0 + 90.0 * (1.0 - V) + 1600.0 * profile + 200.0 * _ramp(0.0, 1.0, dw)
    shape = U.shape
    relief = fractal_field(rng, shape, beta=3.8, min_period_px=max(4.0, 0.02 * grid.nc))
    detail = fractal_field(rng, shape, beta=3.0, min_period_px=6.0)
    ridges = 1.0 - 2.0 * np.abs(gaussian_field(rng, shape, 0.04 * grid.nc) / 3.0)
    rough = 1.0 - 0.92 * floor_weight
    z += rough * (100.0 * relief * (0.25 + de) + 6.0 * detail) + 40.0 * ridges * smoothstep(0.68, 1.0, de)

    # Ravines cut the walls and gather water; each carries a stream down to the river.
    gully = np.zeros(shape, dtype=np.float64)
    streams = []
    for v0 in (0.18, 0.33, 0.86):
        v_k = v0 + rng.uniform(-0.025, 0.025)
        ph = rng.uniform(0, 1)

        def path(u, v_k=v_k, ph=ph):
            return v_k + 0.022 * np.sin(2 * np.pi * (1.2 * u + ph))

        strength = np.exp(-(((V - path(U)) / 0.02) ** 2)) * smoothstep(0.0, 0.2, de) * (1 - smoothstep(0.5, 0.7, de))
        z -= 80.0 * strength
        gully = np.maximum(gully, strength)
        u_line = np.linspace(axis(v_k), east_u(0.55, v_k), 60)
        streams.append(LineString(np.column_stack(grid.to_metres(u_line, path(u_line)))))

    # Lakes: one on the valley floor (the river runs through it), two tarns on the bench.
    lakes = []
    lake_specs = [
        (axis(0.32) - 0.006, 0.32 + rng.uniform(-0.02, 0.02), 0.022, 0.055, rng.uniform(-8, 8)),
        (None, 0.45 + rng.uniform(-0.02, 0.02), 0.016, 0.011, rng.uniform(0, 180)),
        (None, 0.72 + rng.uniform(-0.02, 0.02), 0.013, 0.010, rng.uniform(0, 180)),
    ]
    for i, (u_c, v_c, au, av, angle) in enumerate(lake_specs):
        if u_c is None:
            u_c = east_u(0.55 + 0.06 * i, v_c)
        x_c, y_c = grid.to_metres(u_c, v_c)
        ax, ay = max(au * S, 9.0), max(av * S, 9.0)
        lakes.append(_ellipse(float(x_c), float(y_c), ax, ay, angle))
        r = _ellipse_radius(X, Y, x_c, y_c, ax, ay, angle)
        inside = r < 1.1
        if inside.any():
            level = z[inside].min() - 1.0
            blend = smoothstep(1.1, 2.2, r)
            # Inside: flat water; around: the ground rises back, with a moraine dam on the downhill side.
            z = np.where(inside, level, np.where(r < 2.2, np.maximum(level + (z - level) * blend, level + 2.0), z))

    lo, hi = ELEVATION_RANGE_M
    z = lo + (z - z.min()) * (hi - lo) / (z.max() - z.min())

    layout = _draw_layout(rng, grid, axis, east_u, lakes, streams)
    return Terrain(
        dem=z.astype(np.float32),
        gully=gully.astype(np.float32),
        valley_floor=floor_weight.astype(np.float32),
        layout=layout,
    )


def slope_aspect(dem: np.ndarray, size_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slope (degrees), aspect (degrees clockwise from north, downslope direction) and the east/north gradients.

    Gradients are rescaled as if the region were 5 km wide (see ``REFERENCE_SIZE_M``), so habitats and hillshade
    of a small test region look like those of the default region.
    """
    dz_drow, dz_dcol = np.gradient(dem.astype(np.float64), COARSE_FACTOR)
    scale = size_m / REFERENCE_SIZE_M
    dz_dx = dz_dcol * scale  # east
    dz_dy = -dz_drow * scale  # north (rows go south)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = (np.degrees(np.arctan2(-dz_dx, -dz_dy)) + 360.0) % 360.0
    return slope.astype(np.float32), aspect.astype(np.float32), dz_dx.astype(np.float32), dz_dy.astype(np.float32)


def _line(grid: Grid, uv) -> LineString:
    uv = np.asarray(uv, dtype=np.float64)
    x, y = grid.to_metres(uv[:, 0], uv[:, 1])
    return LineString(np.column_stack([x, y]))


def _rect(cx: float, cy: float, length: float, width: float, angle: float) -> Polygon:
    r = box(-length / 2, -width / 2, length / 2, width / 2)
    return affinity.translate(affinity.rotate(r, angle, use_radians=True), cx, cy)


def _draw_layout(rng, grid: Grid, axis, east_u, lakes, streams) -> Layout:
    S = grid.size_m
    object_scale = float(np.clip(S / REFERENCE_SIZE_M, 0.4, 1.0))

    v = np.linspace(-0.02, 1.02, 420)
    meander = min(30.0 / S, 0.006)
    river_u = axis(v) + meander * np.sin(2 * np.pi * (v * S / 700.0 + rng.uniform()))
    river = _line(grid, np.column_stack([river_u, v]))

    road_u = axis(v) + 0.6 * FLOOR_HALF_WIDTH + (6.0 / S) * np.sin(2 * np.pi * (v * S / 900.0 + rng.uniform()))
    roads: list[tuple[LineString, float]] = [(_line(grid, np.column_stack([road_u, v])), 7.0)]

    village = (axis(0.62) + FLOOR_HALF_WIDTH + 0.012, 0.62, 0.055, "house", 3)
    hamlet = (axis(0.13) - 0.012, 0.13, 0.03, "house", 2)
    station = (east_u(0.5, 0.58), 0.58, 0.05, "block", 3)

    roads.append((_switchback(rng, grid, village[:2], station[:2]), 6.0))
    tracks = _draw_tracks(rng, grid, (axis, east_u), lakes, station[:2])
    buildings: list[Building] = []
    settlements = _draw_settlements(rng, grid, (village, hamlet, station), roads, buildings)
    _draw_barns(rng, grid, east_u, settlements, buildings)
    kept, yards = _clear_buildings(buildings, roads, lakes, river)

    sx, sy = (float(a) for a in grid.to_metres(*station[:2]))
    park_angle = rng.uniform(0, np.pi)
    park_offset = 45.0 * object_scale
    parking = [_rect(sx + park_offset * np.cos(park_angle + 1.3), sy + park_offset * np.sin(park_angle + 1.3),
                     70 * object_scale, 35 * object_scale, park_angle)]
    pistes = _draw_pistes(rng, grid, east_u, station[:2], 35.0 * object_scale)
    return Layout(
        river=river, streams=streams, lakes=lakes, roads=roads, tracks=tracks, buildings=kept, yards=yards,
        parking=parking, pistes=pistes, settlements=settlements,
    )


def _switchback(rng, grid: Grid, start, end, legs: int = 6) -> LineString:
    """Switchback road from the village up the wall to the station."""
    (u0, v0), (u1, v1) = start, end
    pts = [(u0, v0)]
    for i in range(1, legs):
        pts.append((u0 + (u1 - u0) * i / legs, (v0 + v1) / 2 + (0.05 if i % 2 else -0.05) + rng.uniform(-0.01, 0.01)))
    pts.append((u1, v1))
    return _line(grid, pts)


def _draw_tracks(rng, grid: Grid, valley, lakes, station) -> list[tuple[LineString, float]]:
    """Gravel tracks: station to the tarns; a forest track up the wall from the hamlet's side.

    ``valley`` is (axis, east_u): the valley axis and the east wall's coordinate functions."""
    axis, east_u = valley
    S = grid.size_m
    u1, v1 = station
    tracks: list[tuple[LineString, float]] = []
    for lake in lakes[1:]:
        c = lake.centroid
        sx, sy = grid.to_metres(u1, v1)
        mx, my = (sx + c.x) / 2 + rng.uniform(-0.03, 0.03) * S, (sy + c.y) / 2 + rng.uniform(-0.03, 0.03) * S
        shore = lake.exterior.interpolate(lake.exterior.project(Point(mx, my)))
        tracks.append((LineString([(sx, sy), (mx, my), (shore.x, shore.y)]), 3.5))
    vt = 0.25 + rng.uniform(-0.02, 0.02)
    tracks.append((_line(grid, [(axis(vt) + 0.6 * FLOOR_HALF_WIDTH, vt), (east_u(0.2, vt + 0.06), vt + 0.06),
                                 (east_u(0.3, vt - 0.02), vt - 0.02), (east_u(0.42, vt + 0.03), vt + 0.03)]), 3.5))
    return tracks


def _draw_settlements(rng, grid: Grid, places, roads: list, buildings: list[Building]) -> list:
    """Streets and buildings of each settlement (appended to ``roads`` and ``buildings``); returns their
    (x, y, radius in metres)."""
    settlements = []
    for u_c, v_c, radius, kind, n_streets in places:
        cx, cy = (float(a) for a in grid.to_metres(u_c, v_c))
        r_m = radius * grid.size_m
        settlements.append((cx, cy, r_m))
        theta0 = rng.uniform(0, 2 * np.pi)
        for k in range(n_streets):
            theta = theta0 + 2 * np.pi * k / n_streets + rng.normal(0, 0.25)
            street = LineString([(cx, cy), (cx + r_m * np.cos(theta), cy + r_m * np.sin(theta))])
            roads.append((street, 5.0))
            _place_along_street(rng, street, theta, kind, buildings)
    return settlements


def _draw_barns(rng, grid: Grid, east_u, settlements, buildings: list[Building]) -> None:
    """Isolated barns in the meadows and pastures of the wall and the bench."""
    n_barns = max(2, int(round(10 * (grid.size_m / REFERENCE_SIZE_M) ** 2)))
    while n_barns > 0:
        vb = rng.uniform(0.03, 0.97)
        ub = east_u(rng.uniform(0.08, 0.7), vb)
        bx, by = (float(a) for a in grid.to_metres(ub, vb))
        if all(np.hypot(bx - sx, by - sy) > sr + 40 for sx, sy, sr in settlements):
            angle = rng.uniform(0, np.pi)
            footprint = _rect(bx, by, rng.uniform(14, 20), rng.uniform(9, 13), angle)
            buildings.append(Building(footprint, angle, "barn", rng.uniform(5, 7), int(rng.integers(0, 3))))
            n_barns -= 1


def _clear_buildings(buildings: list[Building], roads, lakes, river) -> tuple[list[Building], list[Polygon]]:
    """Drop buildings on roads, near water or overlapping one kept before; returns the kept ones and yards."""
    road_union = shapely.unary_union([line.buffer(w / 2 + 1.5) for line, w in roads])
    water_union = shapely.unary_union(lakes + [river.buffer(10.0)])
    shapely.prepare(road_union)
    shapely.prepare(water_union)
    kept: list[Building] = []
    yards: list[Polygon] = []
    for b in buildings:
        halo = b.footprint.buffer(3.0)
        if road_union.intersects(b.footprint) or water_union.intersects(halo):
            continue
        if any(halo.intersects(o.footprint) for o in kept):
            continue
        kept.append(b)
        yards.append(b.footprint.buffer(3.5 if b.kind != "block" else 6.0, join_style="mitre"))
    return kept, yards


def _draw_pistes(rng, grid: Grid, east_u, station, width: float) -> list[tuple[LineString, float]]:
    """Ski pistes: two up to the peaks, one down through the forest of the wall."""
    bends = 0.64 + rng.uniform(-0.02, 0.02), 0.53 + rng.uniform(-0.02, 0.02), 0.54 + rng.uniform(-0.02, 0.02)
    routes = [
        [station, (east_u(0.7, bends[0]), bends[0]), (east_u(0.93, 0.7), 0.7)],
        [(east_u(0.95, 0.5), 0.5), (east_u(0.72, bends[1]), bends[1]), station],
        [station, (east_u(0.35, bends[2]), bends[2]), (east_u(0.18, 0.52), 0.52)],
    ]
    return [(_line(grid, route), width) for route in routes]


def _place_along_street(rng, street: LineString, theta: float, kind: str, out: list[Building]) -> None:
    """Buildings on both sides of a street, facing it, denser near the centre of the settlement."""
    if kind == "block":
        spacing, offset, length, width, height = (48, 62), 26.0, (30, 45), (14, 20), (12, 18)
    else:
        spacing, offset, length, width, height = (20, 30), 12.0, (10, 16), (8, 12), (6, 9)
    t = rng.uniform(12, 20)
    while t < street.length:
        density = 1.0 - 0.6 * t / street.length
        for side in (-1, 1):
            if rng.uniform() < 0.8 * density:
                p = street.interpolate(t)
                off = side * (offset + rng.uniform(-2, 2))
                cx, cy = p.x - off * np.sin(theta), p.y + off * np.cos(theta)
                angle = theta + rng.normal(0, 0.05)
                footprint = _rect(cx, cy, rng.uniform(*length), rng.uniform(*width), angle)
                roof = int(rng.integers(0, 5)) if kind == "house" else 5
                out.append(Building(footprint, angle, kind, rng.uniform(*height), roof))
        t += rng.uniform(*spacing)
