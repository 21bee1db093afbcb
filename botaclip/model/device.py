"""The one place a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``) becomes a :class:`torch.device`."""

from __future__ import annotations

import torch

from botaclip.errors import InvalidInputError, param


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when a CUDA device exists, else CPU; ``cuda`` (or ``cuda:N``) without CUDA is an error,
    and so is a name torch does not know. Other torch backends (``mps``, ``xpu``) are taken where available."""
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"unknown device {device!r} ({param('device')}); use auto, cpu or cuda[:N]") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"{param('device')} {device!r} requested but no CUDA device is available; use "
                                    "cpu or auto")
        return dev
    backend = getattr(torch, dev.type, None) or getattr(torch.backends, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise InvalidInputError(f"{param('device')} {device!r} is not available here; use auto, cpu or cuda[:N]")
    return dev
