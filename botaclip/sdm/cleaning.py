"""Cleaning a species' samples and assigning them to H3 cells, counting what each step removes.

Steps, in order: missing coordinates; coordinates out of range; coordinates exactly (0, 0); latitude and
longitude apparently swapped; coordinate uncertainty above the limit; several samples in one cell (merged: a
presence wins over absences; abundances are averaged). Cells without features are removed later, when the
features are joined, and counted in the same report. Nothing is imputed or moved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from botaclip.sdm.cells import latlng_to_cells
from botaclip.sdm.occurrences import Samples


@dataclass
class CleaningStep:
    """One cleaning step: how many samples (and presences among them) it removed, and how many remain."""

    name: str
    removed: int
    removed_presences: int
    remaining: int


@dataclass
class CleaningReport:
    """The counts of every cleaning step for one species, in order."""

    species: str
    samples: int
    presences: int
    steps: list[CleaningStep] = field(default_factory=list)

    def add(self, name: str, removed: int, removed_presences: int, remaining: int) -> None:
        self.steps.append(CleaningStep(name, int(removed), int(removed_presences), int(remaining)))

    def lines(self) -> list[str]:
        """Human-readable lines, one per step."""
        out = [f"{self.samples} samples ({self.presences} presences) for {self.species}"]
        for s in self.steps:
            out.append(f"  - {s.name}: {s.removed} removed ({s.removed_presences} presences), {s.remaining} left")
        return out

    def to_dict(self) -> dict:
        return {"species": self.species, "samples": self.samples, "presences": self.presences,
                "steps": [asdict(s) for s in self.steps]}


@dataclass(frozen=True)
class Extent:
    """Latitude/longitude bounds (degrees) of the indexed cells, used to recognise swapped coordinates."""

    lat_min: float
    lat_max: float
    lng_min: float
    lng_max: float

    def contains(self, lat: np.ndarray, lng: np.ndarray) -> np.ndarray:
        return (lat >= self.lat_min) & (lat <= self.lat_max) & (lng >= self.lng_min) & (lng <= self.lng_max)


def invalid_coordinates(lat: np.ndarray, lng: np.ndarray, extent: Extent | None = None) -> dict[str, np.ndarray]:
    """Masks of invalid points, by reason (each point in at most one, in this order).

    ``missing``: NaN/non-numeric. ``swapped``: latitude outside +-90 while longitude fits in it, or, given the
    extent of the indexed cells, a point outside it whose (lng, lat) falls inside. ``out_of_range``: other points
    with |lat| > 90 or |lng| > 180. ``zero``: exactly (0, 0), a common placeholder.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    missing = ~(np.isfinite(lat) & np.isfinite(lng))
    with np.errstate(invalid="ignore"):
        in_range = (np.abs(lat) <= 90) & (np.abs(lng) <= 180)
        swapped = ~missing & (np.abs(lat) > 90) & (np.abs(lat) <= 180) & (np.abs(lng) <= 90)
        if extent is not None:
            swapped |= ~missing & in_range & ~extent.contains(lat, lng) & extent.contains(lng, lat)
    out_of_range = ~missing & ~swapped & ~in_range
    zero = ~missing & (lat == 0) & (lng == 0)
    return {"missing": missing, "swapped": swapped, "out_of_range": out_of_range, "zero": zero}


_STEP_NAMES = {
    "missing": "missing coordinates",
    "out_of_range": "coordinates out of range",
    "zero": "coordinates exactly (0, 0)",
    "swapped": "latitude/longitude apparently swapped",
}


def clean_samples(
    samples: Samples,
    resolution: int,
    max_uncertainty: float | None = None,
    extent: Extent | None = None,
) -> tuple[pd.DataFrame, CleaningReport]:
    """Clean ``samples`` and merge them per H3 cell at ``resolution``.

    ``max_uncertainty``: drop samples whose coordinate uncertainty exceeds it (metres; unknown uncertainty is
    kept). Returns a table with one row per cell (``h3`` uint64, ``y``, ``given_background``) sorted by cell, and
    the report of what each step removed.
    """
    t = samples.table
    positive = (t["y"].to_numpy() > 0) & ~t["given_background"].to_numpy()
    report = CleaningReport(samples.species, len(t), int(positive.sum()))
    keep = np.ones(len(t), dtype=bool)
    masks = invalid_coordinates(t["lat"].to_numpy(), t["lng"].to_numpy(), extent)
    for key in ("missing", "out_of_range", "zero", "swapped"):
        drop = masks[key] & keep
        keep &= ~drop
        report.add(_STEP_NAMES[key], drop.sum(), (drop & positive).sum(), keep.sum())
    if max_uncertainty is not None:
        with np.errstate(invalid="ignore"):
            drop = keep & (t["uncertainty_m"].to_numpy() > max_uncertainty)
        keep &= ~drop
        report.add(f"uncertainty above {max_uncertainty:g} m", drop.sum(), (drop & positive).sum(), keep.sum())

    kept = t[keep]
    cells = latlng_to_cells(kept["lat"].to_numpy(), kept["lng"].to_numpy(), resolution)
    frame = pd.DataFrame({"h3": cells, "y": kept["y"].to_numpy(dtype=np.float64),
                          "given_background": kept["given_background"].to_numpy(dtype=bool)})
    frame["_pos"] = (frame["y"] > 0) & ~frame["given_background"]
    grouped = frame.groupby("h3", sort=True)
    if samples.kind == "abundance":
        merged = grouped.agg(y=("y", "mean"), given_background=("given_background", "all"), _pos=("_pos", "any"))
    else:
        # A presence wins: the merged cell is present if any sample in it is.
        merged = grouped.agg(y=("y", "max"), given_background=("given_background", "all"), _pos=("_pos", "any"))
        merged.loc[merged["_pos"], "given_background"] = False
    merged = merged.reset_index()
    report.add("duplicates in one cell", len(frame) - len(merged),
               int(frame["_pos"].sum() - merged["_pos"].sum()), len(merged))
    merged["h3"] = merged["h3"].astype(np.uint64)
    return merged[["h3", "y", "given_background"]], report
