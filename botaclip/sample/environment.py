"""The conditions a plant, butterfly or soil animal meets at a point: the only inputs of every niche."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from botaclip.sample.fields import gaussian_field, sample_bilinear
from botaclip.sample.landscape import SURFACE_TO_HABITAT, Landscape

# Number of smooth random fields mixed into each taxon's niche: the part of its distribution that habitat,
# elevation and moisture do not explain (history, dispersal, competitors), small by design.
RESIDUAL_FIELDS = 6


@dataclass
class Environment:
    """Conditions at N points (Lambert-93 ``x``, ``y`` in metres)."""

    x: np.ndarray
    y: np.ndarray
    habitat: np.ndarray  # code 1..7 of the 1 m pixel under the point
    elevation: np.ndarray  # m
    moisture: np.ndarray  # 0..1
    nutrient: np.ndarray  # 0..1
    openness: np.ndarray  # 0..1
    road_distance: np.ndarray  # m
    residual: np.ndarray  # (RESIDUAL_FIELDS, N), unit variance

    def __len__(self) -> int:
        return int(self.x.size)

    def subset(self, index) -> "Environment":
        return Environment(
            x=self.x[index], y=self.y[index], habitat=self.habitat[index], elevation=self.elevation[index],
            moisture=self.moisture[index], nutrient=self.nutrient[index], openness=self.openness[index],
            road_distance=self.road_distance[index], residual=self.residual[:, index],
        )


def residual_fields(rng: np.random.Generator, land: Landscape) -> np.ndarray:
    """Smooth unit-variance random fields on the coarse grid, shape (RESIDUAL_FIELDS, nc, nc)."""
    nc = land.grid.nc
    return np.stack([gaussian_field(rng, (nc, nc), 0.06 * nc) for _ in range(RESIDUAL_FIELDS)])


def environment_at(land: Landscape, residual: np.ndarray, x, y) -> Environment:
    """Conditions at Lambert-93 points (metres); points must lie inside the grid."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    grid = land.grid
    row, col = grid.fine_index(x, y)
    crow, ccol = grid.coarse_index(x, y)
    return Environment(
        x=x,
        y=y,
        habitat=SURFACE_TO_HABITAT[land.surface[row, col]],
        elevation=sample_bilinear(land.dem, crow, ccol).astype(np.float64),
        moisture=sample_bilinear(land.moisture, crow, ccol).astype(np.float64),
        nutrient=sample_bilinear(land.nutrient, crow, ccol).astype(np.float64),
        openness=sample_bilinear(land.openness, crow, ccol).astype(np.float64),
        road_distance=sample_bilinear(land.road_distance, crow, ccol).astype(np.float64),
        residual=np.stack([sample_bilinear(f, crow, ccol) for f in residual]).astype(np.float64),
    )
