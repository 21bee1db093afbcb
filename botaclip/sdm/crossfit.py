"""Cross-fitted feature sets: no relevé that trained an adapter scores an SDM built on it.

An adapter trained on relevés has seen those plots' species. If the same plots then test a plant SDM on the
adapted features, the test is contaminated. Cross-fitting (as the BotaCLIP paper does) trains K adapters on
spatial-block folds of the relevés; adapter k never saw the relevés of the blocks in fold k. The store then holds
one adapted feature set per fold (``fold_sets``) next to the full one.

When any of a species' presence or absence cells (background is not data) holds a training relevé, the SDM
takes its folds from the adapters' blocks (a block in adapter fold k is in SDM fold k; blocks no adapter saw are
dealt around them) and, for outer fold k, reads every cell's features from ``fold_sets[k]``: training and test
features both come from the adapter that never saw fold k. The final model and its predictions use the full
feature set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from botaclip.errors import InvalidInputError


@dataclass(frozen=True)
class CrossFit:
    """How a feature set was cross-fitted.

    ``fold_sets``: the feature set of each fold's adapter (fold k's never saw relevés in fold-k blocks);
    ``block_res``: H3 resolution of the blocks; ``blocks``/``folds``: each block holding training relevés (uint64
    cells at ``block_res``) and its fold; ``releve_cells``: the training relevés' cells at the store's resolution.
    """

    fold_sets: tuple[str, ...]
    block_res: int
    blocks: np.ndarray
    folds: np.ndarray
    releve_cells: np.ndarray

    @classmethod
    def from_dict(cls, doc: dict) -> "CrossFit":
        """From the record a store keeps (see ``Store.cross_fit``)."""
        fit = cls(tuple(doc["fold_sets"]), int(doc["block_res"]), np.asarray(doc["blocks"], dtype=np.uint64),
                  np.asarray(doc["folds"], dtype=np.int64), np.asarray(doc["releve_cells"], dtype=np.uint64))
        if fit.blocks.shape != fit.folds.shape:
            raise InvalidInputError("cross-fit record: blocks and folds differ in length")
        if len(fit.fold_sets) < 2:
            raise InvalidInputError("cross-fit record needs at least 2 fold feature sets")
        if fit.folds.size and not (fit.folds.min() >= 0 and fit.folds.max() < len(fit.fold_sets)):
            raise InvalidInputError(f"cross-fit record: folds must lie in 0..{len(fit.fold_sets) - 1}")
        return fit

    @property
    def n_folds(self) -> int:
        return len(self.fold_sets)

    @property
    def assignment(self) -> tuple[np.ndarray, np.ndarray]:
        """(blocks, folds) for :func:`botaclip.sdm.folds.spatial_folds`."""
        return self.blocks, self.folds

    def overlaps(self, cells: np.ndarray) -> int:
        """How many of ``cells`` (store resolution) hold a relevé that trained the adapters."""
        return int(np.isin(np.asarray(cells, dtype=np.uint64), self.releve_cells).sum())

    def same_split(self, other: "CrossFit") -> bool:
        """True when both were cross-fitted on the same blocks and folds (a paired comparison needs that)."""
        a = np.argsort(self.blocks)
        b = np.argsort(other.blocks)
        return (self.block_res == other.block_res and self.n_folds == other.n_folds
                and np.array_equal(self.blocks[a], other.blocks[b]) and np.array_equal(self.folds[a], other.folds[b]))
