"""A sample region on disk: its file names, opening and validating it, and the per-user cache of built ones."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from botaclip.errors import BotaclipError, MissingFileError

# Bump when the generator changes what it writes: cached regions of another version are rebuilt.
SAMPLE_VERSION = 1
MANIFEST = "sample.json"

FILES = {
    "ortho": "ortho.tif",
    "dem": "dem.tif",
    "habitat": "habitat.tif",
    "habitat_table": "habitats.csv",
    "region_geojson": "region.geojson",
    "plots": "plots.csv",
    "releves": "releves.csv",
    "butterflies": "butterflies.csv",
    "soil": "soil.csv",
    "species": "species.csv",
    "truth": "truth.parquet",
    "cells": "cells.parquet",
    "readme": "README",
    "manifest": MANIFEST,
}


@dataclass(frozen=True)
class SampleRegion:
    """Paths of the files of a built sample region (see its README for what each holds)."""

    root: Path
    ortho: Path
    dem: Path
    habitat: Path
    habitat_table: Path
    region_geojson: Path
    plots: Path
    releves: Path
    butterflies: Path
    soil: Path
    species: Path
    truth: Path
    cells: Path
    readme: Path
    manifest: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "SampleRegion":
        """The paths a sample region at ``root`` has, whether or not the files exist."""
        root = Path(root)
        return cls(root=root, **{name: root / filename for name, filename in FILES.items()})

    @classmethod
    def open(cls, root: str | os.PathLike) -> "SampleRegion":
        """Open a built sample region, checking that every file is there."""
        region = cls.at(root)
        if not region.root.is_dir():
            raise MissingFileError(
                f"sample region {region.root} does not exist; build it with `botaclip sample make --out {region.root}`"
            )
        missing = [FILES[f.name] for f in fields(cls) if f.name != "root" and not getattr(region, f.name).is_file()]
        if missing:
            raise MissingFileError(
                f"{region.root} is not a complete botaclip sample region (missing {', '.join(missing)}); "
                f"rebuild it with `botaclip sample make --out DIR`"
            )
        return region

    def metadata(self) -> dict:
        """The manifest: generator version, seed, size, counts, CRS and bounds."""
        try:
            return json.loads(self.manifest.read_text())
        except (OSError, ValueError) as exc:
            raise BotaclipError(f"cannot read {self.manifest}: {exc}; rebuild the sample region") from exc


def default_sample_dir(seed: int = 0, size_km: float = 5.0, plots: int = 2000) -> Path:
    """Per-user cache directory of the sample region built with these parameters.

    ``$BOTACLIP_HOME`` if set, else ``$XDG_CACHE_HOME/botaclip``, else ``~/.cache/botaclip``; the directory name
    records the generator version and the parameters, e.g. ``sample-v1-0-5km-2000``.
    """
    home = os.environ.get("BOTACLIP_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        base = (Path(cache).expanduser() if cache else Path.home() / ".cache") / "botaclip"
    return base / f"sample-v{SAMPLE_VERSION}-{int(seed)}-{float(size_km):g}km-{int(plots)}"


def is_current(region_dir: Path, seed: int, size_km: float, plots: int) -> bool:
    """Whether ``region_dir`` holds a complete region built by this generator version with these parameters."""
    try:
        meta = SampleRegion.open(region_dir).metadata()
    except BotaclipError:
        return False
    return (
        meta.get("version") == SAMPLE_VERSION
        and meta.get("seed") == int(seed)
        and meta.get("size_km") == float(size_km)
        and meta.get("plots") == int(plots)
    )
