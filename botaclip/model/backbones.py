"""The backbone registry: `--backbone dofa-small|dofa-base|dofa-large` -> a DOFA model, with or without weights."""

from __future__ import annotations

import os

from botaclip.errors import InvalidInputError
from botaclip.model.dofa import DOFA, DOFA_CONFIGS

__all__ = ["BACKBONES", "create_backbone"]

#: Names the CLI accepts. `dofa-tiny` is a test/demo size with no published weights.
BACKBONES: tuple[str, ...] = ("dofa-small", "dofa-base", "dofa-large", "dofa-tiny")


def create_backbone(name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> DOFA:
    """Build the backbone `name`, loading `weights` (a checkpoint path) if given.

    Without weights the model is randomly initialised from `seed` (deterministic) and a RandomInitWarning
    is raised now; record `model.provenance()` with whatever it produces. Nothing is downloaded.
    """
    key = str(name).strip().lower()
    if key not in BACKBONES:
        raise InvalidInputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    model = DOFA.from_config(DOFA_CONFIGS[key], seed=seed)
    if weights is not None:
        return model.load_checkpoint(weights)
    model.warn_if_random_init()
    return model
