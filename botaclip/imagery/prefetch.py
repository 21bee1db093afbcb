"""Reading chips ahead of the model in background threads.

:func:`prefetch_chips` turns a stream of ``(partition, cells)`` into batches of ready chips. A thread pool reads
chips (GDAL releases the GIL, and each thread keeps its own dataset handles) while the caller runs the model on the
previous batch; at most ``ahead`` chips are in flight or waiting, so memory stays bounded whatever the number of
cells. Batches never mix partitions and the last batch of each partition says so, so that a writer can close the
partition; order is preserved.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from botaclip.imagery.chips import Chip, ChipReader
from botaclip.imagery.regions import cell_centres

_LOCATE_CHUNK = 256


@dataclass
class ChipBatch:
    """Chips read for up to ``batch_size`` cells of one partition.

    Attributes:
        partition: the partition (parent cell) these cells belong to.
        h3: cells whose chip is valid enough, uint64 [M].
        chips: their normalised chips, float32 [M, C, size_px, size_px].
        valid_fraction: fraction of valid pixels of each chip, float32 [M].
        nodata: cells skipped because their chip's valid fraction is below ``min_valid``.
        outside: cells skipped because their chip lies outside every raster.
        partition_done: True on the last batch of the partition.
    """

    partition: int
    h3: np.ndarray
    chips: np.ndarray
    valid_fraction: np.ndarray
    nodata: np.ndarray
    outside: np.ndarray
    partition_done: bool


@dataclass
class PrefetchStats:
    """How long the consumer waited for chips (seconds): near zero means reading kept ahead of the model."""

    wait_s: float = 0.0
    chips_read: int = 0
    extra: dict = field(default_factory=dict)


class _Done:
    """A finished read standing in for a Future (outside chips, inline reads)."""

    def __init__(self, chip: Chip) -> None:
        self._chip = chip

    def result(self) -> Chip:
        return self._chip


def _located_cells(reader: ChipReader, partitions) -> Iterator[tuple[int, int | None, bool, list]]:
    """(partition, cell, last of its partition, candidate windows) of each cell; (partition, None, True, []) for
    an empty partition."""
    for parent, cells in partitions:
        cells = np.asarray(cells, dtype="uint64")
        if cells.size == 0:
            yield parent, None, True, []
            continue
        for start in range(0, cells.size, _LOCATE_CHUNK):
            chunk = cells[start : start + _LOCATE_CHUNK]
            lat, lng = cell_centres(chunk)
            located = reader.locate(lat, lng)
            last_index = cells.size - 1 - start
            for j, cell in enumerate(chunk.tolist()):
                yield parent, cell, j == last_index, located[j]


class _Batch:
    """The chips of the batch being assembled, and the cells skipped."""

    def __init__(self) -> None:
        self.cells: list[int] = []
        self.chips: list[np.ndarray] = []
        self.valid: list[float] = []
        self.nodata: list[int] = []
        self.outside: list[int] = []
        self.attempted = 0

    def add(self, cell: int, chip: Chip, min_valid: float, stats: PrefetchStats) -> None:
        self.attempted += 1
        if chip.outside:
            self.outside.append(cell)
        elif chip.valid_fraction < min_valid:
            self.nodata.append(cell)
            stats.chips_read += 1
        else:
            self.cells.append(cell)
            self.chips.append(chip.data)
            self.valid.append(chip.valid_fraction)
            stats.chips_read += 1

    def emit(self, parent: int, last: bool, reader: ChipReader) -> ChipBatch:
        return ChipBatch(
            partition=parent,
            h3=np.array(self.cells, dtype="uint64"),
            chips=(
                np.stack(self.chips)
                if self.chips
                else np.zeros((0, reader.channels, reader.size_px, reader.size_px), dtype="float32")
            ),
            valid_fraction=np.array(self.valid, dtype="float32"),
            nodata=np.array(self.nodata, dtype="uint64"),
            outside=np.array(self.outside, dtype="uint64"),
            partition_done=last,
        )


def prefetch_chips(
    reader: ChipReader,
    partitions: Iterable[tuple[int, np.ndarray]],
    batch_size: int = 64,
    workers: int = 4,
    min_valid: float = 0.9,
    ahead: int | None = None,
    stats: PrefetchStats | None = None,
) -> Iterator[ChipBatch]:
    """Read the chips of ``partitions`` (an iterable of ``(parent, cells uint64[N])``) in background threads.

    Args:
        reader: the chip reader.
        partitions: partitions in processing order; an empty cell array still yields one (empty) batch with
            ``partition_done`` set, so that every partition is acknowledged in order.
        batch_size: cells per batch (a batch holds fewer chips when some are skipped).
        workers: reading threads; 0 reads in the calling thread (no prefetching).
        min_valid: chips with a smaller valid fraction are skipped and reported in ``nodata``.
        ahead: the most chips read ahead of the consumer (default: twice the batch size, at least 4 per worker).
        stats: optional counters filled as batches are consumed.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    ahead = max(ahead or max(2 * batch_size, 4 * workers), 1)
    stats = stats if stats is not None else PrefetchStats()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chip-reader") if workers > 0 else None

    pending: deque[tuple[int, int | None, bool, Future | _Done]] = deque()
    source = _located_cells(reader, partitions)

    def submit_next() -> bool:
        task = next(source, None)
        if task is None:
            return False
        parent, cell, last, candidates = task
        if cell is None or not candidates:
            fut: Future | _Done = _Done(Chip(None, 0.0))
        elif pool is None:
            fut = _Done(reader.read_located(candidates))
        else:
            fut = pool.submit(reader.read_located, candidates)
        pending.append((parent, cell, last, fut))
        return True

    try:
        while len(pending) < ahead and submit_next():
            pass
        batch = _Batch()
        while pending:
            parent, cell, last, fut = pending.popleft()
            submit_next()
            t0 = time.perf_counter()
            chip = fut.result()
            stats.wait_s += time.perf_counter() - t0
            if cell is not None:
                batch.add(cell, chip, min_valid, stats)
            if last or batch.attempted >= batch_size:
                yield batch.emit(parent, last, reader)
                batch = _Batch()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
