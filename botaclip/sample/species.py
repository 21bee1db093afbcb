"""Niches of the sample region's taxa and the true suitability they imply at any point.

- Plants (probit model): eta = habitat effect + Gaussian elevation response + Gaussian moisture response
  + nutrient effect + a small smooth residual + intercept. In a relevé, a species is present when
  eta + u_guild + e > 0 with u_guild ~ N(0, GUILD_SD^2) shared by the plot's species of one guild (so guild
  members co-occur beyond what the environment explains) and e ~ N(0, 1). Its occurrence probability, the true
  suitability, is therefore Phi(eta / sqrt(1 + GUILD_SD^2)).
- Butterflies: occurrence probability = peak-calibrated product of host-plant availability (probability that
  at least one host grows there), openness response and a Gaussian elevation response, times a small residual.
- Soil trophic groups: expected abundance = exp(log mean + habitat effect + elevation response + moisture and
  nutrient effects + small residual); observed counts are negative binomial around it.

Every input is in :class:`~botaclip.sample.environment.Environment`: nothing depends on hidden pixel values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

from botaclip.sample.environment import RESIDUAL_FIELDS, Environment
from botaclip.sample.landscape import HABITATS
from botaclip.sample.taxa import BUTTERFLIES, PLANT_GUILDS, SOIL_GROUPS

GUILD_SD = 0.6
_MARGINAL_SCALE = float(np.sqrt(1.0 + GUILD_SD**2))
# Quantile of a taxon's suitability over the region that its calibrated peak refers to.
_PEAK_QUANTILE = 99.5
SOIL_DISPERSION = 2.5  # negative binomial shape: variance = mean + mean^2 / SOIL_DISPERSION


@dataclass
class Niche:
    """One taxon's niche. Habitat effects follow ``HABITATS`` order; NaN where a field does not apply."""

    taxon: str
    group: str  # plant | butterfly | soil
    guild: str
    habitat: np.ndarray  # (7,) effects (probit scale for plants, log scale for soil, unused for butterflies)
    elevation_opt: float
    elevation_tol: float
    moisture_opt: float = float("nan")
    moisture_tol: float = float("nan")
    moisture_effect: float = float("nan")
    nutrient_effect: float = 0.0
    residual: np.ndarray = field(default_factory=lambda: np.zeros(RESIDUAL_FIELDS))
    intercept: float = 0.0
    peak: float = float("nan")
    max_cover: float = float("nan")
    mean_abundance: float = float("nan")
    hosts: tuple[str, ...] = ()
    openness: str = ""


def _residual_weights(rng: np.random.Generator, sd: float) -> np.ndarray:
    return rng.normal(0.0, sd / np.sqrt(RESIDUAL_FIELDS), RESIDUAL_FIELDS)


def plant_niches(rng: np.random.Generator) -> list[Niche]:
    """Draw every plant's niche from its guild template (intercepts still 0: see ``calibrate_plants``)."""
    niches = []
    for guild, spec in PLANT_GUILDS.items():
        for name in spec["species"]:
            habitat = np.asarray(spec["habitat"], dtype=np.float64)
            # Species of a guild differ a little in how much they tolerate the guild's secondary habitats.
            habitat = np.where(habitat < 0, np.minimum(habitat + rng.normal(0.0, 0.35, habitat.size), -0.2), 0.0)
            niches.append(
                Niche(
                    taxon=name,
                    group="plant",
                    guild=guild,
                    habitat=habitat,
                    elevation_opt=float(rng.uniform(*spec["elevation"])),
                    elevation_tol=float(rng.uniform(*spec["tolerance"])),
                    moisture_opt=float(rng.uniform(*spec["moisture"])),
                    moisture_tol=float(rng.uniform(*spec["moisture_tol"])),
                    nutrient_effect=float(rng.uniform(*spec["nutrient"])),
                    residual=_residual_weights(rng, 0.35),
                    peak=float(rng.uniform(0.55, 0.92)),
                    max_cover=float(rng.uniform(*spec["cover"])),
                )
            )
    return niches


def plant_predictor(niche: Niche, env: Environment) -> np.ndarray:
    """Probit-scale linear predictor eta of a plant at the points of ``env`` (intercept included)."""
    eta = niche.habitat[env.habitat - 1].astype(np.float64)
    eta -= 0.5 * ((env.elevation - niche.elevation_opt) / niche.elevation_tol) ** 2
    eta -= 0.5 * ((env.moisture - niche.moisture_opt) / niche.moisture_tol) ** 2
    eta += niche.nutrient_effect * env.nutrient
    eta += niche.residual @ env.residual
    eta += niche.intercept
    return eta


def plant_probability(niche: Niche, env: Environment) -> np.ndarray:
    """True occurrence probability of a plant in a relevé at each point (guild effect integrated out)."""
    return ndtr(plant_predictor(niche, env) / _MARGINAL_SCALE)


def calibrate_plants(niches: list[Niche], env: Environment) -> dict[str, np.ndarray]:
    """Set intercepts so each plant's suitability reaches its ``peak`` in the best places of this landscape.

    Returns the calibrated occurrence probabilities at the points of ``env`` (computed once, reused).
    """
    probability = {}
    for niche in niches:
        niche.intercept = 0.0
        eta = plant_predictor(niche, env)
        niche.intercept = float(ndtri(niche.peak) * _MARGINAL_SCALE - np.percentile(eta, _PEAK_QUANTILE))
        eta += niche.intercept
        eta *= 1.0 / _MARGINAL_SCALE
        probability[niche.taxon] = ndtr(eta)
    return probability


def butterfly_niches(rng: np.random.Generator) -> list[Niche]:
    """Butterfly niches: hosts and openness from ``taxa.BUTTERFLIES``, peaks drawn (scale set by calibration)."""
    return [
        Niche(
            taxon=name,
            group="butterfly",
            guild="butterfly",
            habitat=np.full(len(HABITATS), np.nan),
            elevation_opt=float(spec["elevation"][0] + rng.normal(0.0, 40.0)),
            elevation_tol=float(spec["elevation"][1]),
            residual=_residual_weights(rng, 0.25),
            peak=float(rng.uniform(0.5, 0.9)),
            hosts=tuple(spec["hosts"]),
            openness=spec["openness"],
        )
        for name, spec in BUTTERFLIES.items()
    ]


def _butterfly_raw(niche: Niche, env: Environment, plant_prob: dict[str, np.ndarray]) -> np.ndarray:
    absent = np.ones(len(env))
    for host in niche.hosts:
        absent *= 1.0 - plant_prob[host]
    hosts = (1.0 - absent) ** 0.7
    o = np.clip(env.openness, 0.0, 1.0)
    openness = o**1.5 if niche.openness == "open" else np.clip(4.0 * o * (1.0 - o), 0.0, 1.0)
    elevation = np.exp(-0.5 * ((env.elevation - niche.elevation_opt) / niche.elevation_tol) ** 2)
    return hosts * openness * elevation * np.exp(niche.residual @ env.residual)


def butterfly_probability(niche: Niche, env: Environment, plant_prob: dict[str, np.ndarray]) -> np.ndarray:
    """True occurrence probability of a butterfly at each point; ``plant_prob`` maps host name -> probability."""
    return np.minimum(1.0, np.exp(niche.intercept) * _butterfly_raw(niche, env, plant_prob))


def calibrate_butterflies(niches: list[Niche], env: Environment, plant_prob: dict[str, np.ndarray]) -> dict:
    """Scale each butterfly's suitability so it reaches its ``peak`` in the best places (log scale kept).

    Returns the calibrated occurrence probabilities at the points of ``env``.
    """
    probability = {}
    for niche in niches:
        raw = _butterfly_raw(niche, env, plant_prob)
        niche.intercept = float(np.log(niche.peak / max(np.percentile(raw, _PEAK_QUANTILE), 1e-12)))
        probability[niche.taxon] = np.minimum(1.0, np.exp(niche.intercept) * raw)
    return probability


def soil_niches(rng: np.random.Generator) -> list[Niche]:
    """Soil trophic-group niches from ``taxa.SOIL_GROUPS`` with small random departures."""
    return [
        Niche(
            taxon=name,
            group="soil",
            guild="soil",
            habitat=np.asarray(spec["habitat"], dtype=np.float64) + rng.normal(0.0, 0.1, len(HABITATS)),
            elevation_opt=float(spec["elevation"][0]),
            elevation_tol=float(spec["elevation"][1]),
            moisture_effect=float(spec["moisture"]),
            nutrient_effect=float(spec["nutrient"]),
            residual=_residual_weights(rng, 0.25),
            intercept=float(np.log(spec["mean"])),
            mean_abundance=float(spec["mean"]),
        )
        for name, spec in SOIL_GROUPS.items()
    ]


def soil_expected(niche: Niche, env: Environment) -> np.ndarray:
    """Expected abundance (individuals per sample) of a soil trophic group at each point."""
    log_mu = niche.intercept + niche.habitat[env.habitat - 1]
    log_mu = log_mu - 0.5 * ((env.elevation - niche.elevation_opt) / niche.elevation_tol) ** 2
    log_mu = log_mu + niche.moisture_effect * (env.moisture - 0.5) + niche.nutrient_effect * env.nutrient
    return np.exp(log_mu + niche.residual @ env.residual)


@dataclass
class Community:
    """All taxa of the region, calibrated on its landscape."""

    plants: list[Niche]
    butterflies: list[Niche]
    soil: list[Niche]

    @property
    def niches(self) -> list[Niche]:
        return self.plants + self.butterflies + self.soil

    @classmethod
    def draw(cls, rng: np.random.Generator, env: Environment) -> tuple["Community", dict[str, np.ndarray]]:
        """Draw every niche and calibrate it on ``env`` (points covering the landscape).

        Returns the community and its suitability at the points of ``env`` (as ``suitability(env)`` would).
        """
        plants = plant_niches(rng)
        suitability = calibrate_plants(plants, env)
        butterflies = butterfly_niches(rng)
        soil = soil_niches(rng)
        suitability.update(calibrate_butterflies(butterflies, env, suitability))
        for niche in soil:
            suitability[niche.taxon] = soil_expected(niche, env)
        return cls(plants, butterflies, soil), suitability

    def plant_probabilities(self, env: Environment) -> dict[str, np.ndarray]:
        return {n.taxon: plant_probability(n, env) for n in self.plants}

    def suitability(self, env: Environment) -> dict[str, np.ndarray]:
        """Truth at each point: occurrence probability (plants, butterflies), expected abundance (soil)."""
        out = self.plant_probabilities(env)
        plant_prob = dict(out)
        for niche in self.butterflies:
            out[niche.taxon] = butterfly_probability(niche, env, plant_prob)
        for niche in self.soil:
            out[niche.taxon] = soil_expected(niche, env)
        return out
