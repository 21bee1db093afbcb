"""botaclip.model: the DOFA backbone, the BotaCLIP adapter and its training.

Names are loaded on first use (PEP 562), so that ``botaclip.model.train_config`` (the training hyper-parameters,
read by the CLI for its defaults) can be imported without importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AdapterBundle": "adapter",
    "load_adapter": "adapter",
    "BACKBONES": "backbones",
    "create_backbone": "backbones",
    "BotaCLIP": "botaclip",
    "ImageAdapter": "botaclip",
    "ReleveEncoder": "botaclip",
    "fit_state_dict": "checkpoint",
    "load_dofa_checkpoint": "checkpoint",
    "read_checkpoint": "checkpoint",
    "DOFA": "dofa",
    "DOFA_CONFIGS": "dofa",
    "DOFAConfig": "dofa",
    "RandomInitWarning": "dofa",
    "Embedder": "embedder",
    "GeometryRegularizer": "loss",
    "SigLIPLoss": "loss",
    "LocationEmbedder": "location",
    "load_location_encoder": "location",
}

__all__ = [
    "AdapterBundle",
    "BotaCLIP",
    "GeometryRegularizer",
    "ImageAdapter",
    "ReleveEncoder",
    "SigLIPLoss",
    "load_adapter",
    "BACKBONES",
    "DOFA",
    "DOFAConfig",
    "DOFA_CONFIGS",
    "Embedder",
    "RandomInitWarning",
    "create_backbone",
    "fit_state_dict",
    "load_dofa_checkpoint",
    "read_checkpoint",
    "LocationEmbedder",
    "load_location_encoder",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"botaclip.model.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'botaclip.model' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
