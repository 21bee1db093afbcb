"""Field data drawn from the true niches: vegetation relevés, butterfly records and soil samples.

Each survey samples the world the way people do: relevés stratified over habitats (rare habitats and wet
places a little over-sampled, none in open water); butterflies recorded where observers walk, near roads and
tracks, a few dozen records per species; soil cores at a few hundred sites.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from botaclip.errors import InvalidInputError, param
from botaclip.sample.environment import Environment
from botaclip.sample.landscape import HABITAT_CODE
from botaclip.sample.species import GUILD_SD, SOIL_DISPERSION, Community, plant_predictor, soil_expected

# Relative survey effort per habitat (before the square-root stratification by area).
PLOT_EFFORT = {"deciduous_forest": 1.0, "coniferous_forest": 1.0, "meadow": 1.0, "alpine_pasture": 1.0,
               "scree_rock": 1.0, "water": 0.0, "built": 0.2}
SOIL_EFFORT = {"deciduous_forest": 1.0, "coniferous_forest": 1.0, "meadow": 1.0, "alpine_pasture": 1.0,
               "scree_rock": 0.3, "water": 0.0, "built": 0.0}
BUTTERFLY_RECORDS = (20, 80)  # records per species, inclusive
OBSERVER_REACH_M = 200.0  # observer effort decays with distance to the nearest road or track
# Braun-Blanquet classes: upper bound of cover (%) and the percent cover reported for the class.
_BB_UPPER = np.array([0.2, 1.0, 5.0, 25.0, 50.0, 75.0])
_BB_COVER = np.array([0.1, 0.5, 3.0, 15.0, 37.5, 62.5, 87.5])

Acceptable = Callable[[np.ndarray, np.ndarray], np.ndarray]


def weighted_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct indices drawn with probability proportional to ``weights`` (Efraimidis-Spirakis), O(N)."""
    weights = np.asarray(weights, dtype=np.float64)
    u = rng.random(weights.size)
    keys = np.full(weights.size, -np.inf)
    positive = weights > 0
    keys[positive] = np.log(u[positive]) / weights[positive]
    top = np.argpartition(-keys, k - 1)[:k]
    return top[np.argsort(-keys[top], kind="stable")]


def _jitter(rng, env: Environment, index: np.ndarray, half_cell: float, acceptable: Acceptable):
    """Move sampled 10 m grid points to a random spot of their cell, unless that spot is unacceptable."""
    x = env.x[index] + rng.uniform(-half_cell, half_cell, index.size)
    y = env.y[index] + rng.uniform(-half_cell, half_cell, index.size)
    keep = acceptable(x, y)
    return np.where(keep, x, env.x[index]), np.where(keep, y, env.y[index])


def survey_locations(
    rng: np.random.Generator,
    env: Environment,
    k: int,
    effort: dict[str, float],
    acceptable: Acceptable,
    what: str,
    half_cell: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k`` survey locations (Lambert-93 x, y in metres) among the grid points of ``env``.

    Stratified: a habitat's share of locations grows with its effort and the square root of its area, so rare
    habitats are sampled more than their area alone would give; wet places get extra effort.
    """
    counts = np.bincount(env.habitat, minlength=len(HABITAT_CODE) + 1).astype(np.float64)
    per_point = np.zeros(counts.size)
    for name, code in HABITAT_CODE.items():
        if counts[code] > 0:
            per_point[code] = effort[name] / np.sqrt(counts[code])
    weights = per_point[env.habitat] * (1.0 + 1.5 * env.moisture**2)
    available = int(np.count_nonzero(weights > 0))
    if k > available:
        raise InvalidInputError(
            f"{k} {what} do not fit in this region (at most {available}); ask for fewer or a larger {param('size_km')}"
        )
    index = weighted_sample(rng, weights, k)
    return _jitter(rng, env, index, half_cell, acceptable)


def sample_releves(rng: np.random.Generator, community: Community, env: Environment) -> pd.DataFrame:
    """Relevés at the points of ``env``: a long table (plot, species, cover %) listing present species only.

    Presence follows the probit model of :mod:`botaclip.sample.species`; cover grows with how far the latent
    suitability exceeds the presence threshold and is reported as a Braun-Blanquet class midpoint.
    """
    plants = community.plants
    guilds = sorted({p.guild for p in plants})
    guild_of = np.array([guilds.index(p.guild) for p in plants])
    eta = np.stack([plant_predictor(p, env) for p in plants])
    shared = rng.normal(0.0, GUILD_SD, (len(guilds), len(env)))
    latent = eta + shared[guild_of] + rng.standard_normal(eta.shape)
    present = latent > 0
    # A plot always holds some vegetation: where nothing passed the threshold, keep the closest species.
    empty = np.flatnonzero(~present.any(axis=0))
    present[latent[:, empty].argmax(axis=0), empty] = True
    max_cover = np.array([p.max_cover for p in plants])[:, None]
    cover = max_cover * (1.0 - np.exp(-0.8 * np.maximum(latent, 0.05))) * np.exp(rng.normal(0.0, 0.35, eta.shape))
    cover_class = _BB_COVER[np.searchsorted(_BB_UPPER, cover)]
    species, plot = np.nonzero(present)
    order = np.lexsort((species, plot))
    species, plot = species[order], plot[order]
    return pd.DataFrame({
        "plot": plot,
        "species": np.array([p.taxon for p in plants], dtype=object)[species],
        "cover": cover_class[species, plot],
    })


def sample_butterflies(
    rng: np.random.Generator,
    community: Community,
    env: Environment,
    probability: dict[str, np.ndarray],
    acceptable: Acceptable,
) -> pd.DataFrame:
    """Presence-only records: per species 20-80 places drawn in proportion to suitability x observer effort.

    Returns x, y (reported Lambert-93 metres), species and coordinate uncertainty (m); the reported position
    is the true one displaced by up to the stated uncertainty.
    """
    effort = 0.05 + np.exp(-env.road_distance / OBSERVER_REACH_M)
    frames = []
    for niche in community.butterflies:
        k = int(rng.integers(BUTTERFLY_RECORDS[0], BUTTERFLY_RECORDS[1] + 1))
        index = weighted_sample(rng, probability[niche.taxon] * effort, k)
        x, y = _jitter(rng, env, index, 5.0, acceptable)
        uncertainty = rng.choice([5, 10, 25, 50, 100], size=k, p=[0.2, 0.3, 0.25, 0.15, 0.1])
        angle = rng.uniform(0, 2 * np.pi, k)
        radius = uncertainty * np.sqrt(rng.uniform(0, 1, k))
        rx, ry = x + radius * np.cos(angle), y + radius * np.sin(angle)
        keep = acceptable(rx, ry)
        frames.append(pd.DataFrame({
            "x": np.where(keep, rx, x), "y": np.where(keep, ry, y), "species": niche.taxon,
            "coordinateUncertaintyInMeters": uncertainty,
        }))
    return pd.concat(frames, ignore_index=True)


def sample_soil(rng: np.random.Generator, community: Community, env: Environment) -> pd.DataFrame:
    """Counts of every soil trophic group at every site (zeros included): negative binomial around the truth."""
    rows = []
    for niche in community.soil:
        mean = soil_expected(niche, env)
        counts = rng.poisson(rng.gamma(SOIL_DISPERSION, mean / SOIL_DISPERSION))
        rows.append(pd.DataFrame({"site": np.arange(len(env)), "species": niche.taxon, "individualCount": counts}))
    table = pd.concat(rows, ignore_index=True)
    return table.sort_values(["site", "species"], kind="stable").reset_index(drop=True)

