"""The settings of `botaclip store add-location` (:func:`botaclip.pipeline.location.add_location`): a frozen
dataclass, validated when built, light to import (the CLI reads its defaults from it)."""

from __future__ import annotations

from dataclasses import dataclass

from botaclip.errors import InvalidInputError, param

#: --model name -> (PyPI package, botaclip extra that installs it)
LOCATION_MODELS = {"geoclip": ("geoclip", "geoclip")}


def check_location_model(model: str) -> str:
    """The model name, or a one-line error listing the known ones."""
    if model not in LOCATION_MODELS:
        raise InvalidInputError(f"unknown {param('model')} {model!r}; location models: {', '.join(LOCATION_MODELS)}")
    return model


@dataclass(frozen=True)
class LocationConfig:
    """Options of :func:`~botaclip.pipeline.location.add_location`: the model, exactly one of ``like`` (a feature
    set whose cells to embed) and ``region`` ("sample", a bbox west,south,east,north in WGS84 degrees, a polygon
    file or an H3 cell file), the batch size (cells per forward pass), the device, at most ``limit`` new cells (a
    trial run), and ``overwrite``."""

    model: str = "geoclip"
    like: str | None = None
    region: str | None = None
    batch_size: int = 8192
    device: str = "cpu"
    limit: int | None = None
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_location_model(self.model)
        if (self.like is None) == (self.region is None):
            raise InvalidInputError(f"give exactly one of {param('like')} (a feature set whose cells to embed) and "
                                    f"{param('region')} (sample, a bbox west,south,east,north, a polygon or cell file)")
        for name, minimum in (("batch_size", 1), ("limit", 0)):
            value = getattr(self, name)
            if value is None and name == "limit":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InvalidInputError(f"{param(name)} must be a whole number >= {minimum}, got {value!r}")
