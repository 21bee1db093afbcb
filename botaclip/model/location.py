"""Pretrained location encoders: a (lat, lng) in degrees -> a unit-length embedding, no imagery needed.

GeoCLIP (Vivanco Cepeda, Nayak, Shah; NeurIPS 2023; `geoclip` on PyPI, MIT) learned its location encoder against
CLIP image features of worldwide geotagged photos. Its weights ship inside the wheel
(``geoclip/model/weights/location_encoder_weights.pth``, about 38 MB), so nothing is downloaded.

Only the location encoder is loaded. Importing ``geoclip`` itself would import its CLIP image model (transformers,
huggingface_hub), so the package is located without being imported and the encoder is rebuilt here with the
package's architecture and parameter names: the Equal Earth projection, then three capsules (random Fourier
features at sigma 2^0, 2^4, 2^8 and a 4-layer MLP) whose 512-d outputs are summed. The weights are read with
``torch.load(..., weights_only=True)`` and loaded strictly, so a file that does not match the architecture is
refused. Outputs match the package's own ``geoclip.LocationEncoder`` (tests/test_location.py holds golden values
computed with it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from botaclip.errors import InvalidInputError, MissingDependencyError, MissingFileError
from botaclip.pipeline.location_config import check_location_model

GEOCLIP_DIM = 512
GEOCLIP_SIGMAS = (2.0**0, 2.0**4, 2.0**8)
GEOCLIP_WEIGHTS = "model/weights/location_encoder_weights.pth"  # inside the installed package

# Equal Earth projection (Šavrič, Patterson, Jenny 2018) as GeoCLIP applies it, with its scale factor.
_A1, _A2, _A3, _A4, _SF = 1.340264, -0.081106, 0.000893, 0.003796, 66.50336


@dataclass(frozen=True)
class WeightsFile:
    """Where a location model's weights are, and what they are (for the feature set's provenance)."""

    package: str
    version: str
    path: Path
    sha256: str

    def provenance(self, model: str) -> dict:
        return {"model": model, "package": self.package, "package_version": self.version,
                "weights_file": self.path.name, "weights_sha256": self.sha256}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def geoclip_weights() -> WeightsFile:
    """The GeoCLIP location encoder's weights inside the installed ``geoclip`` package, found without importing
    it (importing it would load its CLIP image model)."""
    try:
        spec = importlib.util.find_spec("geoclip")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("--model geoclip needs the geoclip package: pip install 'botaclip[geoclip]' "
                                     "(or pip install geoclip==1.3.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / GEOCLIP_WEIGHTS
    if not path.is_file():
        raise MissingFileError(f"the geoclip package has no location-encoder weights at {path}; reinstall it: "
                               "pip install --force-reinstall geoclip==1.3.0")
    try:
        version = importlib.metadata.version("geoclip")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return WeightsFile(package="geoclip", version=version, path=path, sha256=_sha256(path))


def equal_earth(latlng: torch.Tensor) -> torch.Tensor:
    """GeoCLIP's input: (lat, lng) degrees [N, 2] -> Equal Earth (x, y) scaled by SF / 180, float32 as in the
    package (same operations in the same order, so results agree to float rounding)."""
    lat, lng = torch.deg2rad(latlng[:, 0]), torch.deg2rad(latlng[:, 1])
    sqrt3 = torch.sqrt(torch.tensor(3.0))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat))
    denominator = 3 * (9 * _A4 * theta**8 + 7 * _A3 * theta**6 + 3 * _A2 * theta**2 + _A1)
    x = (2 * sqrt3 * lng * torch.cos(theta)) / denominator
    y = _A4 * theta**9 + _A3 * theta**7 + _A2 * theta**3 + _A1 * theta
    return (torch.stack((x, y), dim=1) * _SF) / 180


class FourierFeatures(nn.Module):
    """Random Fourier features (cos, sin of 2 pi B v) with a fixed matrix ``b`` [256, 2] (loaded, not sampled)."""

    def __init__(self, encoded_size: int = 256) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(encoded_size, 2), requires_grad=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        vp = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)


class LocationCapsule(nn.Module):
    """One scale of GeoCLIP: Fourier features at one sigma, three hidden layers of 1024, a 512-d head."""

    def __init__(self) -> None:
        super().__init__()
        self.capsule = nn.Sequential(FourierFeatures(), nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                                     nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(1024, GEOCLIP_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(x))


class GeoCLIPLocationEncoder(nn.Module):
    """GeoCLIP's location encoder (parameter names as in its weights file: ``LocEnc{i}.capsule.*``, ``.head.*``).

    ``forward`` takes (lat, lng) degrees [N, 2] and returns the raw 512-d features (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        for i in range(len(GEOCLIP_SIGMAS)):
            self.add_module(f"LocEnc{i}", LocationCapsule())

    def forward(self, latlng: torch.Tensor) -> torch.Tensor:
        x = equal_earth(latlng)
        out = self.LocEnc0(x)
        for i in range(1, len(GEOCLIP_SIGMAS)):
            out = out + self._modules[f"LocEnc{i}"](x)
        return out


class LocationEmbedder:
    """A loaded location encoder: ``embed(lat, lng)`` -> unit-length float32 [N, dim], in batches, no gradients.

    Build it with :func:`load_location_encoder`; ``provenance`` is what the feature set records."""

    def __init__(self, module: nn.Module, dim: int, provenance: dict, device: torch.device) -> None:
        self.module = module.to(device).eval()
        self.dim = dim
        self.provenance = provenance
        self.device = device

    def embed(self, lat, lng, batch_size: int = 8192) -> np.ndarray:
        """Unit-length embeddings of points (lat, lng) in WGS84 degrees, float32 [N, dim]."""
        lat = np.asarray(lat, dtype=np.float64).ravel()
        lng = np.asarray(lng, dtype=np.float64).ravel()
        if lat.shape != lng.shape:
            raise InvalidInputError(f"lat and lng differ in length ({lat.size} vs {lng.size})")
        bad = ~np.isfinite(lat) | ~np.isfinite(lng) | (np.abs(lat) > 90) | (np.abs(lng) > 180)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"{int(bad.sum())} points are not (lat, lng) in degrees (first: {lat[i]}, {lng[i]})")
        out = np.empty((lat.size, self.dim), dtype=np.float32)
        points = torch.from_numpy(np.stack([lat, lng], axis=1).astype(np.float32))
        with torch.inference_mode():
            for start in range(0, lat.size, int(batch_size)):
                y = self.module(points[start:start + int(batch_size)].to(self.device))
                y = torch.nn.functional.normalize(y, dim=1)
                out[start:start + len(y)] = y.float().cpu().numpy()
        return out


def load_location_encoder(model: str = "geoclip", device: str | torch.device = "cpu") -> LocationEmbedder:
    """The pretrained location encoder ``model`` (only ``geoclip`` so far) on ``device``; a one-line error when
    its extra is not installed. Reads nothing from the network."""
    from botaclip.model.device import resolve_device

    check_location_model(model)
    dev = resolve_device(device)
    weights = geoclip_weights()
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    module = GeoCLIPLocationEncoder()
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidInputError(f"{weights.path} is not GeoCLIP's location encoder: {first}") from None
    prov = {**weights.provenance(model), "dim": GEOCLIP_DIM,
            "input": "H3 cell centre (lat, lng), WGS84 degrees", "normalization": "unit L2",
            "reference": "Vivanco Cepeda et al., GeoCLIP, NeurIPS 2023"}
    return LocationEmbedder(module, GEOCLIP_DIM, prov, dev)
