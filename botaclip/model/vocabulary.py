"""The fixed species vocabulary of a relevé encoder, and plot composition vectors on it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from botaclip.errors import InvalidInputError, param


def normalize_species_name(name: object) -> str:
    """Trims and collapses whitespace; names are otherwise kept as given (case included)."""
    return " ".join(str(name).split())


@dataclass
class SpeciesVocabulary:
    """An ordered list of species names; position = input column of the relevé encoder."""

    species: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.species = [normalize_species_name(s) for s in self.species]
        self.index = {s: i for i, s in enumerate(self.species)}
        if len(self.index) != len(self.species):
            raise ValueError("species vocabulary has duplicate names")

    def __len__(self) -> int:
        return len(self.species)

    @classmethod
    def build(cls, releve_ids: Sequence, species: Sequence, min_plots: int = 5) -> SpeciesVocabulary:
        """Keeps the species present in at least ``min_plots`` distinct relevés, most frequent first (ties by name).

        ``releve_ids`` and ``species`` are the parallel columns of a long table (one row per species and relevé).
        """
        counts: dict[str, set] = {}
        for rid, sp in zip(releve_ids, species, strict=True):
            counts.setdefault(normalize_species_name(sp), set()).add(rid)
        kept = [(len(plots), s) for s, plots in counts.items() if len(plots) >= min_plots and s]
        if not kept:
            most = max((len(p) for p in counts.values()), default=0)
            raise InvalidInputError(
                f"empty species vocabulary: no species occurs in at least {param('min_plots')} {min_plots} plots "
                f"(the most frequent occurs in {most}); lower {param('min_plots')} or add relevés"
            )
        kept.sort(key=lambda t: (-t[0], t[1]))
        return cls([s for _, s in kept])

    def encode(
        self, releve_ids: Sequence, species: Sequence, cover: Sequence[float], order: Sequence | None = None
    ) -> tuple[np.ndarray, list, int]:
        """Long table -> composition matrix [N, V] float32 of cover (percent; summed if a species repeats).

        Rows follow ``order`` when given (relevés absent from the table get a zero row), else first appearance.
        Species not in the vocabulary are ignored; returns (matrix, row relevé ids, number of ignored rows).
        """
        if order is None:
            order = list(dict.fromkeys(releve_ids))
        row = {rid: i for i, rid in enumerate(order)}
        matrix = np.zeros((len(order), len(self.species)), dtype=np.float32)
        unknown = 0
        for rid, sp, c in zip(releve_ids, species, cover, strict=True):
            i = row.get(rid)
            j = self.index.get(normalize_species_name(sp))
            if i is None:
                continue
            if j is None:
                unknown += 1
                continue
            matrix[i, j] += float(c)
        return matrix, list(order), unknown

    def to_list(self) -> list[str]:
        """Checkpoint form (a plain list of str, loadable with ``torch.load(weights_only=True)``)."""
        return list(self.species)

    @classmethod
    def from_list(cls, species: Iterable[str]) -> SpeciesVocabulary:
        return cls(list(species))
