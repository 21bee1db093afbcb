"""What an indexed feature set records about how it was made, and when two runs may share one feature set.

Provenance (stored with the feature set in the catalog and in every Parquet footer): kind, model, weights sha256
(or ``random-init:seed=S``), adapter sha256, wavelengths, band preset, chip size in metres and pixels, resampling,
normalisation, H3 resolution, imagery files with their sizes and modification times, code version.

The *identity* is the part that changes the numbers: model, weights, adapter, wavelengths, chip size, size in
pixels, normalisation mode. Runs with the same identity append to one feature set (e.g. more imagery, another
region); a different identity is refused, so embeddings of different models are never mixed under one name.
"""

from __future__ import annotations

from pathlib import Path

from botaclip import __version__

IDENTITY_KEYS = ("model", "weights_sha256", "adapter_sha256", "wavelengths", "chip_m", "size_px", "normalization")
# The backbone set an adapted set can be derived from shares these (everything but the adapter).
BACKBONE_IDENTITY_KEYS = ("model", "weights_sha256", "wavelengths", "chip_m", "size_px", "normalization")


def code_version() -> str:
    """botaclip's version, plus the git commit when running from a checkout (read from .git, no subprocess)."""
    root = Path(__file__).resolve().parents[2]
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            ref_file = root / ".git" / ref[5:]
            commit = ref_file.read_text().strip() if ref_file.exists() else ""
        else:
            commit = ref
        return f"{__version__}+g{commit[:12]}" if commit else __version__
    except OSError:
        return __version__


def weights_identity(model) -> str:
    """The backbone weights' sha256, or ``random-init:seed=S`` for a randomly initialised model."""
    if getattr(model, "weights_sha256", None) and not getattr(model, "random_init", False):
        return str(model.weights_sha256)
    return f"random-init:seed={getattr(model, 'seed', 0)}"


def index_provenance(
    *,
    kind: str,
    model,
    chips: dict,
    model_name: str | None = None,
    resolution: int,
    adapter_sha256: str | None = None,
    adapter: dict | None = None,
) -> dict:
    """Provenance of a feature set written by the index job.

    Args:
        kind: "backbone" or "botaclip".
        model: the DOFA backbone (its ``provenance()`` is recorded whole under "backbone").
        model_name: the backbone's registry name (dofa-small, ...), default ``model.name``.
        chips: ``ChipReader.describe()`` (imagery files, bands, chip geometry, normalisation).
        resolution: the H3 resolution of the cells.
        adapter_sha256, adapter: the adapter checkpoint's sha256 and description, for kind "botaclip".
    """
    weights = weights_identity(model)
    prov = {
        "kind": kind,
        "model": model_name or model.name,
        "weights_sha256": weights,
        "weights": "random init" if weights.startswith("random-init") else weights,
        "adapter_sha256": adapter_sha256,
        "wavelengths": [float(w) for w in chips["wavelengths"]],
        "bands": chips["bands"],
        "chip_m": float(chips["chip_m"]),
        "size_px": int(chips["size_px"]),
        "resampling": chips["resampling"],
        "normalization": chips["normalization"],
        "normalization_stats": chips["normalization_stats"],
        "resolution": int(resolution),
        "imagery": chips["imagery"],
        "backbone": model.provenance(),
        "code_version": code_version(),
    }
    if adapter is not None:
        prov["adapter"] = adapter
    return prov


def identity(provenance: dict, keys: tuple[str, ...] = IDENTITY_KEYS) -> dict:
    """The part of a provenance record that must match for two runs to share a feature set."""
    out = {}
    for key in keys:
        value = provenance.get(key)
        if key == "wavelengths" and value is not None:
            value = [round(float(v), 6) for v in value]
        elif key == "chip_m" and value is not None:
            value = round(float(value), 6)
        out[key] = value
    return out


def identity_mismatch(old: dict, new: dict, keys: tuple[str, ...] = IDENTITY_KEYS) -> str | None:
    """A short description of the first identity field that differs, or None when they match."""
    a, b = identity(old, keys), identity(new, keys)
    for key in keys:
        if a[key] != b[key]:
            return f"{key} {a[key]!r} (stored) vs {b[key]!r} (this run)"
    return None


def merge_imagery(old: dict, new: dict) -> dict:
    """New provenance whose imagery list also keeps the files earlier runs read (by absolute path, latest wins)."""
    by_path = {item["path"]: item for item in old.get("imagery") or [] if isinstance(item, dict) and "path" in item}
    for item in new.get("imagery") or []:
        by_path[item["path"]] = item
    return {**new, "imagery": list(by_path.values())}
