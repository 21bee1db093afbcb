"""The engine-neutral steps of the index job, shared by the local engine (:mod:`botaclip.pipeline.index`) and the
Ray engine (:mod:`botaclip.pipeline.ray_engine`):

- :class:`IndexSummary`, what a run did, which both engines fill;
- :class:`PartitionPlan` and :func:`partitions_to_do`: the partitions of a job and the cells of each still to do
  (cells already stored are skipped, ``limit`` is applied, adapted sets derive what they can);
- :func:`embed_partitions`: "embed these cells": chips read ahead in background threads, the model, the adapter;
- :func:`derive_partition`: adapted embeddings derived from a stored backbone set, without imagery.

Neither engine module imports the other's internals; both import this one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from botaclip.errors import BotaclipError, param


@dataclass
class IndexSummary:
    """What an index run did. ``written`` counts rows written by this run (``derived`` of them came from a stored
    backbone feature set); the skipped counts are cells not written and why."""

    feature_set: str
    kind: str
    store: str
    planned: int = 0
    written: int = 0
    derived: int = 0
    embedded: int = 0
    skipped_nodata: int = 0
    skipped_outside: int = 0
    skipped_present: int = 0
    partitions: int = 0
    seconds: float = 0.0
    setup_seconds: float = 0.0
    embed_seconds: float = 0.0
    read_wait_seconds: float = 0.0
    shard: str | None = None
    notes: list[str] = field(default_factory=list)
    engine: str = "local"
    # Ray engine: one dict per worker (node, partitions, cells, cells_per_s, ...).
    worker_stats: list[dict] = field(default_factory=list)

    @property
    def cells_per_s(self) -> float:
        """Rows written per second of processing (after setup: imports, model creation, planning)."""
        busy = self.seconds - self.setup_seconds
        return self.written / busy if busy > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "cells_per_s": self.cells_per_s}

    def format(self) -> str:
        """A few human-readable lines."""
        shard = f" (shard {self.shard})" if self.shard else ""
        derived = f" ({self.derived} derived from stored backbone embeddings)" if self.derived else ""
        return "\n".join(
            [
                f"indexed {self.feature_set!r} ({self.kind}) in {self.store}{shard}",
                f"  written:  {self.written} cells{derived}",
                f"  skipped:  {self.skipped_nodata} nodata (< min valid), {self.skipped_outside} outside imagery, "
                f"{self.skipped_present} already present",
                f"  time:     {self.seconds:.1f} s (setup {self.setup_seconds:.1f} s), {self.cells_per_s:.2f} cells/s "
                f"(model {self.embed_seconds:.1f} s, waiting for chips {self.read_wait_seconds:.1f} s)",
            ]
            + [f"  {line}" for line in format_worker_stats(self.worker_stats)]
        )


def format_worker_stats(stats: Sequence[dict]) -> list[str]:
    """One line per Ray worker: where it runs, partitions and cells done, cells per second while busy."""
    return [
        f"worker {w['worker']} ({w['node']}{', GPU ' + ','.join(map(str, w['gpus'])) if w.get('gpus') else ''}): "
        f"{w['partitions']} partitions, {w['cells']} cells, {w['cells_per_s']:.2f} cells/s"
        + (" (died)" if w.get("died") else "")
        for w in stats
    ]


@dataclass
class IndexTarget:
    """The feature set a job writes, as its writers (the job's, a Ray worker's scratch one) need it."""

    name: str
    kind: str  # "backbone" or "botaclip"
    dim: int
    provenance: dict
    resolution: int  # the store's H3 resolution
    partition_resolution: int  # the store's partition resolution
    dtype: str = "float32"  # on-disk precision: float32, float16 or int8 (+ a per-row scale)


@dataclass
class PartitionPlan:
    """The partitions of a job in processing order, and their cells (regenerated on demand, so that memory stays
    bounded by one partition whatever the region's size)."""

    parents: list[int]
    cells_of: Callable[[int], np.ndarray]

    def count(self) -> int:
        """The cells planned (a pass over every partition; the progress bar's total)."""
        return sum(int(len(self.cells_of(p))) for p in self.parents)


def adapt_embeddings(adapter, backbone_embeddings: np.ndarray) -> np.ndarray:
    """The adapter hook: unit-normalised backbone embeddings [N, D] -> adapted embeddings [N, E] (float32).

    ``adapter`` is a :class:`botaclip.model.adapter.AdapterBundle` (anything with ``transform``). Because the
    input is exactly what the store keeps for a backbone feature set, stored and freshly computed backbone
    embeddings give the same adapted embeddings.
    """
    return np.asarray(adapter.transform(np.asarray(backbone_embeddings, dtype=np.float32)), dtype=np.float32)


def check_replacement_written(replacing: bool, summary: IndexSummary, name: str, min_valid: float) -> None:
    """An overwrite run that embedded nothing fails (and its writer keeps the old set), saying why."""
    if replacing and summary.written == 0:
        raise BotaclipError(
            f"feature set {name!r} was not replaced: no cell was embedded ({summary.skipped_nodata} chips below "
            f"{param('min_valid')} {min_valid}, {summary.skipped_outside} outside the imagery); the old set is kept")


# -- which cells are still to do ----------------------------------------------------------------------------------


def cells_to_do(store, name: str, parent: int, cells: np.ndarray, summary: IndexSummary, bar,
                remaining: list[int | None], check_present: bool = True) -> np.ndarray:
    """The cells of one partition still to embed: those not stored yet, cut to what is left of ``limit``
    (``remaining``, a one-item list both engines share). Counts and shows the cells already present."""
    present = _present(store, name, parent, cells) if check_present else np.zeros(len(cells), dtype=bool)
    n_present = int(present.sum())
    summary.skipped_present += n_present
    bar.update(n_present)
    todo = cells[~present]
    if remaining[0] is not None:
        todo = todo[: remaining[0]]
        remaining[0] -= len(todo)
    return todo


def partitions_to_do(store, plan: PartitionPlan, summary: IndexSummary, bar, *, name: str, limit: int | None,
                     check_present: bool, derive: Callable[[int, np.ndarray], np.ndarray] | None = None,
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """``(parent, cells still to embed)`` for each non-empty partition of ``plan``, until ``limit`` cells are
    planned; ``derive(parent, todo)`` writes what it can without imagery and returns the rest."""
    remaining: list[int | None] = [None if limit is None else int(limit)]
    for parent in plan.parents:
        if remaining[0] is not None and remaining[0] <= 0:
            return
        cells = plan.cells_of(parent)
        if cells.size == 0:
            continue
        todo = cells_to_do(store, name, parent, cells, summary, bar, remaining, check_present)
        if derive is not None and todo.size:
            todo = derive(parent, todo)
        summary.partitions += 1
        yield parent, todo


def _present(store, name: str, parent: int, cells: np.ndarray) -> np.ndarray:
    """Which of ``cells`` (all in partition ``parent``) the feature set already holds: one small read of that
    partition's cells, without a catalog round trip (this runs once per partition, next to a GPU's throughput)."""
    return _isin_sorted(cells, store.partition_cells(name, parent))


def _isin_sorted(cells: np.ndarray, sorted_existing: np.ndarray) -> np.ndarray:
    if sorted_existing.size == 0:
        return np.zeros(len(cells), dtype=bool)
    pos = np.clip(np.searchsorted(sorted_existing, cells), 0, sorted_existing.size - 1)
    return sorted_existing[pos] == cells


def derive_partition(store, source: str, bundle, writer, parent: int, todo: np.ndarray, summary: IndexSummary,
                     bar) -> np.ndarray:
    """Write adapted embeddings for the cells of ``todo`` that the backbone set ``source`` holds; return the rest."""
    table = store.features(source, cells=todo)
    if table.num_rows == 0:
        return todo
    h3 = table.column("h3").to_numpy().astype(np.uint64)
    emb = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    emb = emb.reshape(len(h3), -1).astype(np.float32)
    vf = table.column("valid_fraction").to_numpy(zero_copy_only=False).astype(np.float32)
    writer.write(parent, h3, adapt_embeddings(bundle, emb), vf)
    summary.written += len(h3)
    summary.derived += len(h3)
    bar.update(len(h3))
    return todo[~_isin_sorted(todo, np.sort(h3))]


# -- embedding cells from imagery ---------------------------------------------------------------------------------


@dataclass
class EmbedTally:
    """Counts of :func:`embed_partitions`: cells embedded, skipped (nodata, outside), seconds in the model (not
    waiting for chips) and seconds waiting for chips."""

    embedded: int = 0
    nodata: int = 0
    outside: int = 0
    embed_s: float = 0.0
    reading: object = None  # botaclip.imagery.PrefetchStats (wait_s), created by embed_partitions

    @property
    def wait_s(self) -> float:
        return self.reading.wait_s if self.reading is not None else 0.0

    def add_to(self, summary: IndexSummary) -> None:
        summary.embedded += self.embedded
        summary.skipped_nodata += self.nodata
        summary.skipped_outside += self.outside
        summary.embed_seconds += self.embed_s
        summary.read_wait_seconds += self.wait_s


def embed_partitions(reader, embedder, partitions: Iterable[tuple[int, np.ndarray]], config, bundle=None,
                     tally: EmbedTally | None = None) -> Iterator[tuple[object, np.ndarray]]:
    """Embed the cells of ``partitions`` (``(parent, cells uint64[N])``, in order): yield ``(batch, embeddings)``
    per :class:`~botaclip.imagery.ChipBatch`, the embeddings adapted by ``bundle`` when given.

    Chips are read ahead in ``config.runtime.workers`` threads (:func:`botaclip.imagery.prefetch_chips`) while the
    model embeds the previous batch; chips below ``config.chips.min_valid`` and cells outside the imagery are
    skipped and counted in ``tally``. Close the generator (``contextlib.closing``) to stop the reading threads.
    """
    from botaclip.imagery import PrefetchStats, prefetch_chips

    tally = tally if tally is not None else EmbedTally()
    tally.reading = stats = PrefetchStats()
    batches = prefetch_chips(reader, partitions, batch_size=config.runtime.batch_size,
                             workers=config.runtime.workers, min_valid=config.chips.min_valid, stats=stats)
    meta: deque = deque()

    def chip_arrays() -> Iterator[np.ndarray]:
        for batch in batches:
            meta.append(batch)
            yield batch.chips

    try:
        stream = embedder.embed_stream(chip_arrays())
        while True:
            t0, wait0 = time.perf_counter(), stats.wait_s
            try:
                emb = next(stream)
            except StopIteration:
                return
            tally.embed_s += (time.perf_counter() - t0) - (stats.wait_s - wait0)
            batch = meta.popleft()
            tally.embedded += len(batch.h3)
            tally.nodata += len(batch.nodata)
            tally.outside += len(batch.outside)
            if len(batch.h3) and bundle is not None:
                emb = adapt_embeddings(bundle, emb)
            yield batch, emb
    finally:
        batches.close()
