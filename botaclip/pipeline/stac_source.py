"""Imagery from STAC, as the index and train jobs take it: :class:`StacSource` (the ``stac``, ``assets`` and
``sort`` options, declared and validated here once) and :func:`stac_inputs`, which turns one into the rasters and
bands the chip reader opens.

Both jobs nest a :class:`StacSource` in their chip settings (``ChipConfig.stac_source``,
``FeatureConfig.stac_source``) as an inline group: its fields keep their flat keyword names (``stac=``,
``assets=``, ``sort=``, the CLI's ``--stac``, ``--assets``, ``--sort``), see :func:`botaclip.config.inline`.

This module stays light (no rasterio): the config modules import it; :func:`stac_inputs` imports
:mod:`botaclip.imagery.stac` only when a STAC source is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from botaclip.errors import InvalidInputError, param

# As botaclip.imagery.stac.SORTS, which is not imported here: it pulls in rasterio (a test checks they agree).
SORTS = ("datetime", "cloud")


@dataclass(frozen=True)
class StacSource:
    """STAC imagery instead of raster files: an item / ItemCollection / saved search result (a JSON file or an
    http(s) URL), the asset keys read as bands (comma-separated or a sequence, in band order), and the mosaic
    order of several items (``datetime``: most recent first; ``cloud``: least cloudy first). ``StacSource()``,
    without ``stac``, is no STAC imagery: the job reads its raster files."""

    stac: str | None = None
    assets: str | tuple[str, ...] | None = None
    sort: str = "datetime"

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise InvalidInputError(f"{param('sort')} must be one of {', '.join(SORTS)}, got {self.sort!r}")
        if self.assets is not None and self.stac is None:
            raise InvalidInputError(f"{param('assets')} picks the assets of a STAC item; give {param('stac')} too")
        if self.stac is not None and self.assets is None:
            raise InvalidInputError(f"{param('stac')} needs {param('assets')}: the asset keys to read, in band "
                                    "order, e.g. red,green,blue,nir")

    @property
    def given(self) -> bool:
        """Whether imagery comes from STAC (``stac`` is set)."""
        return self.stac is not None

    def check_alone(self, imagery: Sequence[str]) -> None:
        """Refuse raster files ``imagery`` given as well as STAC imagery."""
        if self.given and len(imagery) > 0:
            raise InvalidInputError(f"give either {param('imagery')} or {param('stac')}, not both")


def stac_inputs(source: StacSource, imagery: Sequence[str], say: Callable[[str], None], *,
                bands: str | None = None, wavelengths: Sequence[float] | None = None,
                cache: str | os.PathLike | None = None) -> tuple[list[str], object | None]:
    """The rasters a job reads and their bands.

    Without STAC (``source.stac`` is None): ``imagery`` as given and no bands (None: the job's own). With it:
    the items' rasters (one VRT per item, in mosaic order, written under ``cache``; default
    ``<botaclip cache>/stac``) and their :class:`~botaclip.imagery.bands.BandSpec`: the items' centre
    wavelengths (µm), replaced by ``wavelengths`` (µm, one per asset) when given, or the band preset ``bands``.
    ``imagery`` must then be empty. The line ``"imagery: N STAC item(s) from ..."`` goes to ``say``.

    Raises one-line :class:`~botaclip.errors.BotaclipError` s for bad input (a missing file, an asset the items
    lack, items without wavelengths, ...).
    """
    source.check_alone(imagery)
    if not source.given:
        return list(imagery), None
    from botaclip.imagery.stac import stac_imagery

    found = stac_imagery(source.stac, source.assets, sort=source.sort, wavelengths=wavelengths, cache=cache)
    say(f"imagery: {found.describe()}")
    return list(found.paths), found.band_spec(bands)


__all__ = ["SORTS", "StacSource", "stac_inputs"]
