"""The README written into every sample region directory."""

from __future__ import annotations

from botaclip import __version__
from botaclip.sample.landscape import HABITATS
from botaclip.sample.region import SAMPLE_VERSION


def readme_text(seed: int, size_km: float, plots: int, bounds: tuple[float, float, float, float],
                counts: dict[str, int]) -> str:
    return _header(seed, size_km, plots, bounds) + _files_section(counts) + _method_section(counts)


def _header(seed: int, size_km: float, plots: int, bounds: tuple[float, float, float, float]) -> str:
    left, bottom, right, top = bounds
    return f"""# botaclip sample region (synthetic)

Built by `botaclip sample make --seed {seed} --size-km {size_km:g} --plots {plots}` (botaclip {__version__},
sample generator v{SAMPLE_VERSION}). The same parameters always give the same tables and pixels.

Everything here is SYNTHETIC: an invented alpine valley placed in the French Alps (west flank of Belledonne, near
Chamrousse) so that coordinates, CRS and H3 cells are realistic. The species names are real alpine taxa, their
niches and records are not: do not use them as ecological data.

## Coordinates and units
- Rasters are in Lambert-93 (EPSG:2154), metres, north-up. Region bounds (left, bottom, right, top):
  {left:.0f}, {bottom:.0f}, {right:.0f}, {top:.0f} ({size_km:g} km x {size_km:g} km).
- Tables give WGS84 latitude/longitude in decimal degrees (decimalLatitude, decimalLongitude); plots.csv also
  gives Lambert-93 x_l93, y_l93 (m).
- Elevation in metres above sea level; moisture is an index from 0 (dry) to 1 (waterlogged); cover in percent.
- H3 cells are resolution 10 (about 0.015 km2), stored as unsigned 64-bit integers.

"""


def _files_section(counts: dict[str, int]) -> str:
    habitats = ", ".join(f"{i} {name}" for i, name in enumerate(HABITATS, start=1))
    return f"""## Files
- `ortho.tif`: the orthophoto. uint8, 4 bands (1 red 0.665 um, 2 green 0.56 um, 3 blue 0.49 um, 4 nir
  0.842 um), 1 m pixels, nodata 0 (valid pixels are 1..255), tiled 256 x 256, DEFLATE. A ragged no-data strip
  runs along the east edge and part of the south edge, as at the end of a mosaic.
- `dem.tif`: elevation (m), float32, 5 m pixels, nodata -9999 (no holes).
- `habitat.tif`: habitat code per 1 m pixel (same grid as ortho.tif), uint8, 255 outside the valid footprint,
  with a colour table. Codes: {habitats}.
- `habitats.csv`: code,name of the habitats.
- `region.geojson`: the valid-data footprint (where ortho.tif has data), one polygon feature, EPSG:4326.
- `plots.csv`: {counts['plots']} vegetation plots (relevés): releve_id, decimalLatitude, decimalLongitude, x_l93,
  y_l93, elevation_m, habitat (at the plot), moisture.
- `releves.csv`: long table of the plots' species, {counts['releve_rows']} rows: releve_id, decimalLatitude,
  decimalLongitude, species, cover (percent; Braun-Blanquet class midpoints 0.1, 0.5, 3, 15, 37.5, 62.5, 87.5).
  Only present species are listed: a species absent from a plot has no row.
- `butterflies.csv`: {counts['butterfly_records']} presence-only records (Darwin Core): occurrenceID, species,
  decimalLatitude, decimalLongitude, occurrenceStatus (PRESENT), coordinateUncertaintyInMeters.
- `soil.csv`: abundances of {counts['soil_groups']} soil trophic groups at {counts['soil_sites']} sites: site_id,
  decimalLatitude, decimalLongitude, species (the group), individualCount (every site has a row for every group,
  zeros included).
- `species.csv`: every taxon ({counts['plants']} plants, {counts['butterflies']} butterflies,
  {counts['soil_groups']} soil groups) with its group, guild and niche: pref_<habitat> (habitat effects; probit scale for plants, log scale
  for soil), elevation_opt_m / elevation_tol_m, moisture_opt / moisture_tol (plants), moisture_effect (soil),
  nutrient_effect, intercept, peak_suitability, max_cover_pct, mean_abundance, hosts and openness_response
  (butterflies).
- `truth.parquet`: the truth, a long table over the {counts['cells']} H3 cells whose centre lies in the footprint:
  h3 (uint64), taxon, group (plant | butterfly | soil), suitability. For plants and butterflies suitability is
  the occurrence probability (0..1); for soil groups it is the EXPECTED ABUNDANCE (individuals per sample, the
  mean of the counts in soil.csv), not a probability.
- `cells.parquet`: one row per cell: h3 (uint64), lat, lng (cell centre), habitat (dominant), elevation_m and
  moisture (means), valid_fraction (share of the cell with imagery), frac_<habitat> (habitat shares).
- `sample.json`: generator version, parameters, counts, bounds.

"""


def _method_section(counts: dict[str, int]) -> str:
    return f"""## How the world was made
1. Relief: a glacial valley. A flat floor (800-950 m) with a river and a lake in the west; steep walls cut by
   three ravines; a bench at 1,800-2,000 m with two tarns; rocky peaks up to 2,500 m in the east; fractal relief
   on top. Slopes are computed as for a 5 km region whatever the size, so small regions look alike.
2. Moisture (0..1) from terrain convergence, distance to water, ravines, flatness, north aspect, altitude and a
   smooth random field. Nutrients (0..1) from distance to buildings and roads.
3. Habitats from elevation, slope and smooth random fields: forest below a wavy treeline (about 1,960 m) except
   on the valley floor, near settlements, on ski pistes and in random clearings; deciduous forest low and on
   south-facing slopes, coniferous higher; montane meadow below about 1,720 m, alpine pasture above; scree and
   rock on steep or high ground. Water (river, streams, lakes) and built surfaces (a village, a hamlet, a ski
   station with its switchback road, barns, tracks) are drawn as vectors. Trees are individual crowns.
4. Imagery: each surface has its colour and texture (crowns and their shadows, fine-grained meadows and mown
   hay parcels, bright coarse scree, smooth dark water, pitched and flat roofs, roads), lit by the sun
   (azimuth 155 deg, elevation 50 deg) over the terrain; vegetation is greener and brighter in the NIR where it
   is wet or rich in nutrients. Nuisances that say nothing about plants: flight strips with their own gain,
   colour cast, haze and across-track gradient; cast shadows; sensor noise; the no-data strip.
5. Plants ({counts['plants']} species in guilds: broadleaf forest, conifer forest, meadow, alpine pasture, scree,
   wetland, ruderal, generalists). Probit niche: eta = habitat effect - (elevation - optimum)^2 / (2 tol^2)
   - (moisture - optimum)^2 / (2 tol^2) + nutrient effect x nutrients + a small smooth residual (sd about 0.35:
   the part no covariate explains) + intercept. In a plot a species is present when eta + u + e > 0, with u
   shared by the plot's species of one guild (sd 0.6: co-occurrence) and e ~ N(0, 1). Intercepts are set so each
   species reaches its peak suitability (0.55-0.92) in the best 0.5% of the region.
6. Plots are stratified over habitats (share ~ effort x sqrt(area); more in wet places; none in water).
7. Butterflies: suitability = (P(at least one host plant present))^0.7 x openness response (open land, or forest
   edges) x elevation response x small residual, scaled to a peak of 0.5-0.9. Records: 20-80 per species,
   drawn in proportion to suitability x observer effort (0.05 + exp(-distance to road or track / 200 m)), then
   displaced by up to their coordinate uncertainty.
8. Soil: expected abundance = exp(log mean + habitat effect + elevation response + moisture and nutrient
   effects + small residual); counts are negative binomial (shape 2.5) around it at {counts['soil_sites']} sites.

## The truth
For each H3 cell, suitability is averaged over a 10 m lattice of points with valid imagery in the cell (about
150 points): it is what a survey at a random valid spot in the cell would find on average. Everything it depends
on (habitat, elevation, moisture, nutrients, openness) is visible in the imagery or correlated with what is
visible, plus the small residual that nothing observable explains.
"""
