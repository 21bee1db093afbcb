"""Geographic input that several commands take, checked one way: bounding boxes in degrees and region
polygons (a self-intersecting polygon is repaired with `make_valid` instead of failing deep inside GEOS).
"""

from __future__ import annotations

from collections.abc import Sequence

import shapely

from botaclip.errors import BotaclipError


def check_bbox(west: float, south: float, east: float, north: float, text: str, order: str) -> None:
    """Refuse a box whose latitudes or longitudes are out of range or empty, naming which; `order` is the
    expected form (e.g. "minlon,minlat,maxlon,maxlat") for the message."""
    for name, lat in (("south", south), ("north", north)):
        if not -90 <= lat <= 90:
            raise BotaclipError(f"bbox {text!r}: latitude {lat:g} ({name}) is outside -90..90 degrees; the box is "
                                f"{order} in WGS84 degrees")
    for name, lng in (("west", west), ("east", east)):
        if not -180 <= lng <= 180:
            raise BotaclipError(f"bbox {text!r}: longitude {lng:g} ({name}) is outside -180..180 degrees; the box "
                                f"is {order} in WGS84 degrees")
    if not (west < east and south < north):
        raise BotaclipError(f"bbox {text!r} is empty: it needs west < east and south < north ({order})")


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
