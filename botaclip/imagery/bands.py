"""Band presets: which wavelength (µm) each raster band carries and how to normalise it.

DOFA builds its patch embedding from the wavelengths of the input bands, so a raster is usable once each of its
bands is mapped to a centre wavelength in micrometres. Presets cover the common sensors; any other stack is given
explicitly (``--wavelengths 0.665,0.56,0.49``).

Normalisation: DOFA expects RGB normalised with the ImageNet statistics on the 0-255 scale. Presets that come with
fixed statistics (rgb, rgbn) use them; sensors whose scale depends on the product (Landsat, Sentinel-2 digital
numbers or reflectance × 10000) are normalised with per-band statistics computed once per raster (see
:mod:`botaclip.imagery.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass

from botaclip.errors import InvalidInputError, param

# ImageNet channel statistics on the 0-255 scale (R, G, B), as used by DOFA for RGB input.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
# No published statistic exists for 8-bit NIR in DOFA; the average of the ImageNet channels keeps NIR on the same
# footing as RGB. Use normalisation "stats" to compute statistics from the imagery itself instead.
_NIR_MEAN_255 = sum(IMAGENET_MEAN_255) / 3
_NIR_STD_255 = sum(IMAGENET_STD_255) / 3

NORMALIZATIONS = ("auto", "preset", "stats")


@dataclass(frozen=True)
class BandSpec:
    """The meaning of a raster's bands.

    Attributes:
        name: preset name, or "custom" for explicit wavelengths.
        wavelengths: centre wavelength of each band in µm, in band order.
        mean, std: fixed per-band normalisation statistics in the raster's own units, or None when the preset
            has none (statistics are then computed from each raster).
    """

    name: str
    wavelengths: tuple[float, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.wavelengths)

    @property
    def has_fixed_stats(self) -> bool:
        """True when the preset carries its own normalisation statistics."""
        return self.mean is not None and self.std is not None

    def describe(self) -> str:
        """A short human-readable form, e.g. ``rgb (0.665, 0.56, 0.49 µm)``."""
        return f"{self.name} ({', '.join(f'{w:g}' for w in self.wavelengths)} µm)"


PRESETS: dict[str, BandSpec] = {
    # Natural-colour orthophotos (IGN BD ORTHO, NAIP RGB, ...): band order R, G, B.
    "rgb": BandSpec("rgb", (0.665, 0.56, 0.49), IMAGENET_MEAN_255, IMAGENET_STD_255),
    # Four-band orthophotos R, G, B, NIR (IGN BD ORTHO IRC stacks, NAIP).
    "rgbn": BandSpec(
        "rgbn",
        (0.665, 0.56, 0.49, 0.842),
        IMAGENET_MEAN_255 + (_NIR_MEAN_255,),
        IMAGENET_STD_255 + (_NIR_STD_255,),
    ),
    # Landsat 7 ETM+ surface reflectance, reflective bands B1, B2, B3, B4, B5, B7.
    "landsat7": BandSpec("landsat7", (0.485, 0.56, 0.66, 0.835, 1.65, 2.22)),
    # Landsat 8/9 OLI surface reflectance, bands B1-B7.
    "landsat8": BandSpec("landsat8", (0.443, 0.482, 0.561, 0.655, 0.865, 1.609, 2.201)),
    # Sentinel-2 L2A, the 12 bands B1, B2, B3, B4, B5, B6, B7, B8, B8A, B9, B11, B12.
    "sentinel2": BandSpec(
        "sentinel2", (0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19)
    ),
}


def band_spec(preset: str | None = None, wavelengths: str | list[float] | tuple[float, ...] | None = None) -> BandSpec:
    """Resolve ``--bands PRESET`` or ``--wavelengths W1,W2,...`` (µm) into a :class:`BandSpec`.

    Explicit wavelengths equal to a preset's pick up that preset's statistics. Neither given means ``rgb``.
    """
    if preset is not None and wavelengths is not None:
        raise InvalidInputError(f"give either {param('bands')} or {param('wavelengths')}, not both")
    if wavelengths is None:
        key = (preset or "rgb").strip().lower()
        if key not in PRESETS:
            raise InvalidInputError(
                f"unknown band preset {preset!r}; choose one of {', '.join(PRESETS)} or give {param('wavelengths')}"
            )
        return PRESETS[key]
    values = _parse_wavelengths(wavelengths)
    for spec in PRESETS.values():
        if len(spec.wavelengths) == len(values) and all(abs(a - b) < 1e-6 for a, b in zip(spec.wavelengths, values)):
            return spec
    return BandSpec("custom", values)


def preset_for_band_count(count: int, source: str = "the imagery") -> BandSpec:
    """The preset assumed when no bands are given: 3 bands -> rgb, 4 -> rgbn; anything else must be explicit."""
    if count == 3:
        return PRESETS["rgb"]
    if count == 4:
        return PRESETS["rgbn"]
    raise InvalidInputError(
        f"{source} has {count} band(s); say what they are with {param('bands')} ({', '.join(PRESETS)}) or {param('wavelengths')}"
    )


def _parse_wavelengths(wavelengths: str | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    if isinstance(wavelengths, str):
        parts = [p for p in wavelengths.replace(" ", "").split(",") if p]
        try:
            values = tuple(float(p) for p in parts)
        except ValueError:
            raise InvalidInputError(
                f"{param('wavelengths')} {wavelengths!r} is not a comma-separated list of numbers (µm), e.g. 0.665,0.56,0.49"
            ) from None
    else:
        values = tuple(float(v) for v in wavelengths)
    if not values:
        raise InvalidInputError(f"{param('wavelengths')} is empty; give one wavelength in µm per band, e.g. 0.665,0.56,0.49")
    for v in values:
        # DOFA covers optical to SAR; anything outside (0.2, 100) µm is almost certainly given in nm by mistake.
        if not 0.2 <= v <= 100.0:
            raise InvalidInputError(
                f"wavelength {v:g} is out of range; wavelengths are centre wavelengths in µm (e.g. 0.665 for red, "
                "not 665)"
            )
    return values


def check_normalization(normalization: str, spec: BandSpec) -> str:
    """Validate a normalisation mode and resolve ``auto``: ``preset`` when the bands carry fixed statistics,
    ``stats`` (per-raster statistics) otherwise."""
    mode = normalization.strip().lower()
    if mode not in NORMALIZATIONS:
        raise InvalidInputError(f"unknown normalisation {normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if mode == "auto":
        return "preset" if spec.has_fixed_stats else "stats"
    if mode == "preset" and not spec.has_fixed_stats:
        raise InvalidInputError(
            f"bands {spec.describe()} have no preset statistics; use {param('normalize')} stats (per-raster statistics)"
        )
    return mode
