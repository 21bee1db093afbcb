"""Options of adding an embedding raster product to the store (light: the CLI reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from botaclip.errors import InvalidInputError, param

FORMATS = ("alphaearth", "float")
DEFAULT_WINDOW_PIXELS = 1 << 18  # ~512 x 512 pixels per read: 16 MB for 64 int8 bands, 64 MB once float32


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown {param('embedding')} format {fmt!r}; use one of {', '.join(FORMATS)} "
                                "(AlphaEarth's int8 COGs, or any float embedding raster such as TESSERA's)")
    return fmt


@dataclass(frozen=True)
class RasterEmbeddingConfig:
    """Options of :func:`add_raster_embedding` (and ``botaclip store add-raster --embedding``)."""

    fmt: str = "alphaearth"  # alphaearth | float
    min_valid: float = 0.0  # cells whose valid fraction is below this are not written (0-1)
    product: str | None = None  # provenance; default for alphaearth: AlphaEarth Foundations Satellite Embedding
    version: str | None = None  # provenance: the product's version (e.g. v1)
    year: int | None = None  # provenance: the year the embeddings describe (default: the year in the file names)
    window_pixels: int = DEFAULT_WINDOW_PIXELS  # about how many pixels one read holds (bounds memory)
    overwrite: bool = False  # replace an existing set (built aside, swapped in at the end)

    def __post_init__(self) -> None:
        check_format(self.fmt)
        if not 0.0 <= float(self.min_valid) <= 1.0:
            raise InvalidInputError(f"{param('min_valid')} must be between 0 and 1, got {self.min_valid}")
        if int(self.window_pixels) < 1024:
            raise InvalidInputError(f"{param('window_pixels')} must be at least 1024, got {self.window_pixels}")
