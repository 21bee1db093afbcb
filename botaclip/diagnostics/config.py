"""The settings of the diagnostics job (`botaclip store diagnose`, :func:`botaclip.diagnostics.diagnose`) as a
frozen dataclass.

The feature sets (the first is the reference for "geometry kept") are named when calling; everything else is
here. Python callers may pass keyword options instead (``diagnose(store, ["dofa"], sample=500, seed=1)`` is
``diagnose(store, ["dofa"], DiagnoseConfig(sample=500, seed=1))``). A config is validated when built, with errors
that name the parameter (the CLI spells it as its option). Defaults live here only: the CLI reads them from this
class. See :mod:`botaclip.config`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botaclip.errors import InvalidInputError, param

N_PAIRS = 100_000


def _check(ok: bool, name: str, requirement: str, value) -> None:
    if not ok:
        raise InvalidInputError(f"{param(name)} {requirement}, got {value!r}")


def _whole(config, name: str, minimum: int) -> None:
    value = getattr(config, name)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum
    _check(ok, name, "must be 0 or more" if minimum == 0 else f"must be at least {minimum}", value)
    object.__setattr__(config, name, int(value))


@dataclass(frozen=True)
class DiagnoseConfig:
    """Which cells, labels and neighbours the diagnostics use, and what they write."""

    # A CSV/Parquet file (an h3 column, or latitude/longitude in degrees) or CellLabels; enables Davies-Bouldin,
    # silhouette (cosine) and kNN accuracy.
    labels: str | Path | Any | None = None
    label_col: str = "habitat"  # the labels file's class column
    sample: int = 20_000  # cells drawn (fixed seed) for all metrics; the spatial sample is about as large
    seed: int = 0  # seed of the cell and pair samples
    k: int = 10  # neighbours for kNN accuracy and neighbourhood overlap
    n_pairs: int = N_PAIRS  # random cell pairs for the distance correlation
    # Centred cosine: subtract each embedding set's mean vector (the store's, from the catalog; else the mean of
    # the sampled cells, noted) before unit-normalising.
    centered: bool = False
    umap: bool | None = None  # a UMAP figure; None: when umap-learn is installed
    out_dir: str | Path | None = None  # diagnostics.json, diagnostics.md and PNG figures are written here

    def __post_init__(self) -> None:
        _check(isinstance(self.label_col, str) and bool(self.label_col.strip()), "label_col", "must name a column",
               self.label_col)
        _whole(self, "seed", 0)
        _whole(self, "k", 1)
        _whole(self, "sample", 2)
        _whole(self, "n_pairs", 1)
        if self.sample < self.k + 1:
            raise InvalidInputError(f"{param('sample')} {self.sample} is too small; give at least {self.k + 1} "
                                    f"cells (one more than {param('k')})")
        _check(self.umap is None or isinstance(self.umap, bool), "umap", "must be True, False or None", self.umap)
        _check(isinstance(self.centered, bool), "centered", "must be True or False", self.centered)
