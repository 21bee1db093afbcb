"""Geographic input that several commands take, checked one way: bounding boxes (``west,south,east,north`` in
degrees, the only order botaclip reads) and region polygons (a self-intersecting polygon is repaired with
`make_valid` instead of failing deep inside GEOS).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import shapely

from botaclip.errors import InvalidInputError, param

BBOX_ORDER = "west,south,east,north"
"""The one order of a bounding box everywhere in botaclip (``--region``, ``--within``): longitudes and latitudes
in WGS84 degrees, like GeoJSON's ``bbox`` and shapely's ``box``."""


def is_bbox_text(text: str) -> bool:
    """Whether ``text`` is meant as a bounding box: four comma-separated values and not an existing file."""
    text = str(text).strip()
    return text.count(",") == 3 and not os.path.exists(text)


def parse_bbox(text: str, name: str = "region") -> tuple[float, float, float, float]:
    """Parse a bounding box ``west,south,east,north`` (WGS84 degrees) into four floats, refusing one that is not
    four numbers, out of range or empty; ``name`` is the parameter the text came from, for the message.

    A box whose numbers read as the lat/lng-swapped order (``south,west,north,east``) is refused with the swapped
    version as a hint, never silently taken as another place.
    """
    text = str(text).strip()
    parts = [p.strip() for p in text.split(",")]
    try:
        west, south, east, north = (float(v) for v in parts)
    except ValueError:
        raise InvalidInputError(f"{param(name)} {text!r} is not a box of four numbers {BBOX_ORDER} "
                                "(WGS84 degrees)") from None
    problem = _bbox_problem(west, south, east, north)
    if problem:
        hint = ""
        if _bbox_problem(south, west, north, east) is None:  # read as south,west,north,east it would be valid
            swapped = ",".join(parts[i] for i in (1, 0, 3, 2))
            hint = f"; if the numbers are lat,lng (south,west,north,east), give {swapped}"
        raise InvalidInputError(f"{param(name)} bbox {text!r}: {problem}; the order is {BBOX_ORDER} in WGS84 "
                                f"degrees{hint}")
    return west, south, east, north


def _bbox_problem(west: float, south: float, east: float, north: float) -> str | None:
    """What is wrong with a box (latitude or longitude out of range, or empty), or None."""
    for label, lat in (("south", south), ("north", north)):
        if not -90 <= lat <= 90:
            return f"latitude {lat:g} ({label}) is outside -90..90 degrees"
    for label, lng in (("west", west), ("east", east)):
        if not -180 <= lng <= 180:
            return f"longitude {lng:g} ({label}) is outside -180..180 degrees"
    if not (west < east and south < north):
        return "the box is empty: it needs west < east and south < north"
    return None


def union_of_polygons(geoms: Sequence, source: str) -> tuple[shapely.Geometry, list[str]]:
    """The union of `geoms` (None and empty ones ignored), after repairing invalid ones (self-intersections,
    bow ties) with `make_valid`; returns (geometry, notes saying which features were repaired)."""
    fixed, repaired = [], []
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        if not g.is_valid:
            repaired.append(i)
            g = shapely.make_valid(g)
        fixed.append(g)
    notes = []
    if repaired:
        which = ", ".join(map(str, repaired[:5])) + (" ..." if len(repaired) > 5 else "")
        notes.append(f"note: {len(repaired)} invalid polygon(s) of {source} (feature index {which}: "
                     "self-intersecting or similar) were repaired with make_valid")
    return shapely.union_all(fixed), notes
