"""The index job: region -> H3 cells -> chips -> DOFA (-> BotaCLIP adapter) -> feature store.

    from botaclip.pipeline import run_index
    summary = run_index("sample", ["sample/ortho.tif"], "store", backbone="dofa-small", bands="rgbn")
    print(summary.format())

How it runs:
- Cells are planned and processed one coarse partition (``store.partition_of``) at a time: memory is bounded by
  one partition's rows plus the chips read ahead, whatever the region's size.
- Chips are read in background threads (:func:`botaclip.imagery.prefetch_chips`) while the model embeds the
  previous batch; chips below ``min_valid`` and cells outside the imagery are skipped and counted.
- Resumable and idempotent: cells already in the feature set are skipped (unless ``overwrite``); each finished
  partition is written atomically, so a job killed at any moment and run again completes the rest with no
  duplicate and no missing cell.
- ``shard=(i, n)`` keeps the partitions whose hashed parent id falls in shard ``i`` of ``n``. The store allows one
  writer at a time, so sharded jobs hold its lock only to commit finished partitions (waiting while another
  shard commits) and compute in parallel.
- With an adapter, the adapted embedding is a function of the stored unit-normalised backbone embedding
  (:func:`adapt_embeddings`): cells already in a matching backbone feature set are derived from it without
  reading imagery or running the backbone; the others are embedded from the imagery.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from botaclip.atomic import sha256_file
from botaclip.errors import BotaclipError, Interrupted, is_interrupt
from botaclip.imagery import ChipReader, PrefetchStats, band_spec, parse_region, prefetch_chips, region_partitions
from botaclip.imagery.regions import Region, check_resolution
from botaclip.pipeline.provenance import (
    BACKBONE_IDENTITY_KEYS,
    identity_mismatch,
    index_provenance,
    merge_imagery,
)

DEFAULT_RESOLUTION = 10
LOCK_BUSY = "is being written by"  # the store's message when another process holds its writer lock


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


# -- options ----------------------------------------------------------------------------------------------------


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) -> (I, N)."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            i_text, n_text = shard.split("/")
            i, n = int(i_text), int(n_text)
        except ValueError:
            raise BotaclipError(f"--shard {shard!r} is not I/N (e.g. 0/4 for the first of four shards)") from None
    else:
        i, n = (int(v) for v in shard)
    if n < 1 or not 0 <= i < n:
        raise BotaclipError(f"--shard {i}/{n} is invalid: N must be >= 1 and 0 <= I < N")
    return i, n


def shard_of(parents: np.ndarray, n: int) -> np.ndarray:
    """Shard index of each partition parent: a 64-bit mix (splitmix64) of the cell id modulo ``n``, so that
    neighbouring parents spread evenly over shards, whatever the region."""
    x = np.asarray(parents, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n)).astype(np.int64)


def default_name(backbone: str, bands: str, adapted: bool) -> str:
    """``dofa_small_rgb`` for backbone embeddings, ``botaclip_dofa_small_rgb`` for adapted ones."""
    base = f"{backbone}_{bands}".lower().replace("-", "_")
    return f"botaclip_{base}" if adapted else base


def adapt_embeddings(adapter, backbone_embeddings: np.ndarray) -> np.ndarray:
    """The adapter hook: unit-normalised backbone embeddings [N, D] -> adapted embeddings [N, E] (float32).

    ``adapter`` is a :class:`botaclip.model.adapter.AdapterBundle` (anything with ``transform``). Because the
    input is exactly what the store keeps for a backbone feature set, stored and freshly computed backbone
    embeddings give the same adapted embeddings.
    """
    return np.asarray(adapter.transform(np.asarray(backbone_embeddings, dtype=np.float32)), dtype=np.float32)


def _resolve_region(region: str | Region, imagery: Sequence[str]) -> tuple[Region, list[str]]:
    if isinstance(region, Region):
        return region, list(imagery)
    if str(region).strip().lower() == "sample":
        from botaclip.sample import SampleRegion, ensure_sample

        # Imagery of a sample built with `botaclip sample make --out DIR`: that sample's own footprint.
        for path in imagery:
            built = SampleRegion.at(Path(path).resolve().parent)
            if built.manifest.is_file() and built.region_geojson.is_file():
                return _sample_region(built), list(imagery)
        sample = ensure_sample()  # the default sample, from the per-user cache (built once)
        return _sample_region(sample), list(imagery) or [str(sample.ortho)]
    return parse_region(str(region)), list(imagery)


def _sample_region(sample) -> Region:
    parsed = parse_region(str(sample.region_geojson))
    return Region(f"the sample region ({sample.root})", geometry=parsed.geometry)


def _guess_bands(path: str):
    """No --bands/--wavelengths: 3-band imagery is RGB, 4-band RGBN (the first raster decides)."""
    from botaclip.imagery.bands import preset_for_band_count

    return preset_for_band_count(_probe_band_count(path), path)


def _probe_band_count(path: str) -> int:
    import rasterio
    from rasterio.enums import ColorInterp

    from botaclip.imagery.bands import BandSpec
    from botaclip.imagery.sources import open_source

    try:
        with rasterio.open(path) as ds:
            # Alpha bands are masks, not data.
            count = sum(1 for ci in ds.colorinterp if ci != ColorInterp.alpha) or ds.count
    except (rasterio.errors.RasterioIOError, OSError):
        count = 3  # let open_source below report the real problem
    open_source(path, BandSpec("probe", tuple([0.5] * count)))
    return count


def _store_state(path: Path):
    """The existing store at ``path`` (opened), or None when it is to be created (missing or empty dir)."""
    from botaclip.store import Store

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        return Store.open(path)
    return None


# -- writing ----------------------------------------------------------------------------------------------------


class JobWriter:
    """One store writer held for the whole job (one run record)."""

    def __init__(self, store, name: str, kind: str, dim: int, provenance: dict, overwrite: bool) -> None:
        self._w = store.writer(name, kind=kind, dim=dim, provenance=provenance, overwrite=overwrite)
        # --overwrite recomputes every cell: its replacement is built aside, the old set stays until it is done.
        self.check_present = not overwrite
        self.replacing = self._w.replacing

    def write(self, parent: int, h3: np.ndarray, embedding: np.ndarray, valid_fraction: np.ndarray) -> None:
        self._w.write(h3=h3, embedding=embedding, valid_fraction=valid_fraction)

    def finish(self, parent: int) -> None:
        self._w.finish_partition(parent)

    def close(self, failed: bool) -> None:
        self._w.close(failed=failed)


class _SessionWriter:
    """Shard mode: rows of finished partitions are committed in short writer sessions, waiting for the store's
    lock while another shard commits; shards compute in parallel and only their commits are serialised."""

    def __init__(self, store, name: str, kind: str, dim: int, provenance: dict, overwrite: bool,
                 commit_every_s: float = 30.0, commit_rows: int = 20_000, echo: Callable[[str], None] | None = None):
        self.store, self.name, self.kind, self.dim, self.provenance = store, name, kind, dim, provenance
        self.commit_every_s, self.commit_rows = commit_every_s, commit_rows
        self.echo = echo
        # --overwrite in shard mode recomputes this shard's cells in place; dropping the whole set would delete
        # the other shards' work.
        self.check_present = not overwrite and name in store.feature_sets()
        self.replacing = False
        self._rows: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self._done: list[int] = []
        self._buffered = 0
        self._last_commit = time.monotonic()

    def write(self, parent: int, h3: np.ndarray, embedding: np.ndarray, valid_fraction: np.ndarray) -> None:
        self._rows.setdefault(parent, []).append((h3, embedding, valid_fraction))
        self._buffered += len(h3)

    def finish(self, parent: int) -> None:
        self._done.append(parent)
        if self._buffered >= self.commit_rows or time.monotonic() - self._last_commit >= self.commit_every_s:
            self.commit()

    def _open_writer(self, geometry: bool):
        delay, waited = 0.1, 0.0
        while True:
            try:
                return self.store.writer(self.name, kind=self.kind, dim=self.dim, provenance=dict(self.provenance),
                                         geometry=geometry)
            except BotaclipError as exc:
                if LOCK_BUSY not in str(exc):
                    raise
                if waited == 0.0 and self.echo:
                    self.echo("waiting for another writer of the store to commit ...")
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)

    def commit(self, final: bool = False) -> None:
        """Write the finished partitions; the geometry statistics (a pass over the whole set) only when final."""
        if not self._done and not final:
            return
        w = self._open_writer(geometry=final)
        failed = True
        try:
            for parent in self._done:
                for h3, emb, vf in self._rows.pop(parent, []):
                    w.write(h3=h3, embedding=emb, valid_fraction=vf)
                    self._buffered -= len(h3)
                w.finish_partition(parent)
            failed = False
        finally:
            w.close(failed=failed)
        self._done = []
        self._last_commit = time.monotonic()

    def close(self, failed: bool) -> None:
        # Unfinished partitions are dropped: the next run recomputes them (finished ones are committed).
        self.commit(final=not failed)


# -- the job ----------------------------------------------------------------------------------------------------


def _resumable_on_interrupt(job: Callable[..., IndexSummary]) -> Callable[..., IndexSummary]:
    """Ctrl-C (or DuckDB's "Query interrupted") ends the job as one line saying what was kept: finished
    partitions are committed (the writer closes as failed), so the same command resumes."""

    @functools.wraps(job)
    def run(*args, **kwargs) -> IndexSummary:
        try:
            return job(*args, **kwargs)
        except BaseException as exc:
            if not is_interrupt(exc):
                raise
            if kwargs.get("overwrite") and kwargs.get("shard") is None:
                raise Interrupted("interrupted; the feature set is unchanged (its replacement was discarded); "
                                  "run the same command to start it again") from None
            raise Interrupted("interrupted; the partitions finished so far are kept; run the same command to "
                              "resume") from None

    return run


@_resumable_on_interrupt
def run_index(
    region: str | Region,
    imagery: Sequence[str],
    store: str | Path,
    *,
    backbone: str = "dofa-small",
    weights: str | None = None,
    adapter: str | None = None,
    name: str | None = None,
    resolution: int | None = None,
    chip_m: float = 100.0,
    size_px: int = 224,
    bands: str | None = None,
    wavelengths: str | Sequence[float] | None = None,
    normalize: str = "auto",
    resampling: str = "auto",
    batch_size: int = 64,
    device: str = "auto",
    workers: int = 4,
    shard: str | tuple[int, int] | None = None,
    min_valid: float = 0.9,
    overwrite: bool = False,
    seed: int = 0,
    limit: int | None = None,
    partition_resolution: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
) -> IndexSummary:
    """Embed the H3 cells of ``region`` from ``imagery`` and write them to the feature store ``store``.

    Args:
        region: "sample", a bbox "west,south,east,north" (WGS84 degrees), a polygon file (GeoJSON,
            GeoPackage, GeoParquet; any CRS), a file of H3 cells (text or Parquet), or a :class:`Region`.
        imagery: raster files (anything GDAL reads, any CRS); earlier files win where they overlap. May be empty
            with region "sample" (the sample's orthophoto is used).
        store: the store directory; created (with ``resolution``) when it does not exist.
        backbone: dofa-small | dofa-base | dofa-large (dofa-tiny for tests); ``weights`` a checkpoint path, else
            random init from ``seed`` (recorded as such).
        adapter: a BotaCLIP adapter checkpoint: store adapted embeddings (kind "botaclip") instead of backbone ones.
            A cross-fitted checkpoint (``botaclip train --folds K``) also writes the K companion sets
            ``<name>_fold<k>``, all derived from the stored backbone set (indexed first when missing), and records
            the cross-fit (``Store.cross_fit(name)``); see :mod:`botaclip.pipeline.crossfit`.
        name: the feature set (default ``dofa_small_rgb``, ``botaclip_dofa_small_rgb`` with an adapter).
        resolution: H3 resolution 0-15 (default: the store's, or 10 for a new store).
        chip_m: chip side in metres; size_px: chip side in pixels (a multiple of 16).
        bands / wavelengths: a band preset or explicit wavelengths in µm (default rgb).
        normalize: auto | preset | stats; resampling: auto | average | bilinear.
        batch_size, device, workers: model batch size, auto|cpu|cuda, chip-reading threads.
        shard: "I/N": only partitions of shard I of N (0 <= I < N).
        min_valid: chips with a smaller fraction of valid pixels are skipped.
        overwrite: recompute cells already present (without shard: replace the whole feature set).
        limit: stop after this many cells to compute (for benchmarks and trials).
        partition_resolution: for a new store, the partition resolution (default resolution - 4).
        progress: show a tqdm progress bar on stderr; echo: where notes go (default: stderr).
        engine: "local" (this process) or "ray": partitions are embedded by Ray actors (one model each) and
            committed by this process; see :mod:`botaclip.pipeline.ray_engine` and docs/scale.md.
        ray_address: Ray cluster ("auto", "HOST:PORT"); None starts a local Ray instance (or uses the one this
            process already initialised). ray_workers: number of actors (default: one per GPU, or one per
            ``cpus_per_worker`` CPUs without GPUs). gpus_per_worker: GPUs per actor (default 1 when the cluster has
            GPUs, else 0); cpus_per_worker: CPUs per actor (also its torch threads when on CPU).

    Returns an :class:`IndexSummary`. Bad input raises :class:`BotaclipError` before the store is touched.
    """
    started = time.perf_counter()
    say = echo or (lambda msg: print(msg, file=sys.stderr))
    # --- validate everything before touching the store ---
    if resolution is not None:
        resolution = check_resolution(resolution)
    if int(batch_size) < 1:
        raise BotaclipError(f"--batch-size must be at least 1, got {batch_size}")
    if int(workers) < 0:
        raise BotaclipError(f"--workers must be 0 or more, got {workers}")
    if not 0.0 <= float(min_valid) <= 1.0:
        raise BotaclipError(f"--min-valid must be between 0 and 1, got {min_valid}")
    if limit is not None and int(limit) < 0:
        raise BotaclipError(f"limit must be >= 0, got {limit}")
    if int(seed) < 0:
        raise BotaclipError(f"--seed must be 0 or more, got {seed}")
    shard_ij = parse_shard(shard)
    if engine not in ("local", "ray"):
        raise BotaclipError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        from botaclip.pipeline.ray_engine import check_ray_options

        check_ray_options(shard_ij, ray_workers, gpus_per_worker, cpus_per_worker)
    store_path = Path(store)
    preloaded = None
    if adapter is not None:
        from botaclip.model.adapter import load_adapter

        preloaded = load_adapter(adapter)
        if preloaded.cross_fit is not None:
            if shard_ij is not None:
                raise BotaclipError("--shard with a cross-fitted adapter: index the backbone set with --shard "
                                    "first (no --adapter), then run this command once without --shard")
            from botaclip.pipeline.crossfit import index_cross_fitted

            return index_cross_fitted(
                preloaded, str(adapter), region, imagery, store_path, name=name, backbone=backbone, weights=weights,
                seed=seed, chip_m=chip_m, size_px=size_px, overwrite=overwrite, say=say, progress=progress,
                index_kwargs=dict(resolution=resolution, bands=bands, wavelengths=wavelengths, normalize=normalize,
                                  resampling=resampling, batch_size=batch_size, device=device, workers=workers,
                                  min_valid=min_valid, limit=limit, partition_resolution=partition_resolution,
                                  engine=engine, ray_address=ray_address, ray_workers=ray_workers,
                                  gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker),
            )
    existing_store = _store_state(store_path)
    if existing_store is not None:
        if resolution is not None and resolution != existing_store.resolution:
            raise BotaclipError(
                f"store {store_path} is at H3 resolution {existing_store.resolution}, not {resolution}; "
                "drop --resolution or use another store"
            )
        resolution = existing_store.resolution
        pres = existing_store.partition_resolution
    else:
        resolution = DEFAULT_RESOLUTION if resolution is None else resolution
        pres = max(0, resolution - 4) if partition_resolution is None else check_resolution(partition_resolution)
        pres = min(pres, resolution)

    region_obj, imagery = _resolve_region(region, imagery)
    for note in region_obj.notes:
        say(note)
    if not imagery:
        raise BotaclipError("no imagery given; pass one or more raster files with --imagery")
    spec = band_spec(bands, wavelengths) if (bands or wavelengths) else _guess_bands(imagery[0])

    from botaclip.model.embedder import Embedder
    from botaclip.pipeline.train import make_backbone

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = ChipReader(imagery, spec, chip_m=chip_m, size_px=size_px, resampling=resampling,
                            normalization=normalize)
        try:
            model = make_backbone(backbone, weights, seed, int(size_px))
            bundle = adapter_sha = None
            if adapter is not None:
                bundle = preloaded
                bundle.check_backbone(model.name, None if model.random_init else model.weights_sha256,
                                      model.embed_dim, seed)
                adapter_sha = sha256_file(adapter)
            # The Ray engine's workers hold the models; this process only needs the model's description.
            embedder = None if engine == "ray" else Embedder(model, list(reader.wavelengths), device=device,
                                                             batch_size=int(batch_size), normalize=True)
        except BaseException:
            reader.close()
            raise
    for w in caught:
        notes.append(f"note: {w.message}")
    for note in dict.fromkeys(notes):
        say(note)

    kind = "botaclip" if bundle is not None else "backbone"
    backbone_name = str(backbone).strip().lower()
    name = default_name(backbone_name, spec.name, bundle is not None) if name is None else name
    from botaclip.store.schema import check_identifier

    try:
        check_identifier(name)
        parents, cells_of = region_partitions(region_obj, reader.footprint, resolution, pres)
    except BaseException:
        reader.close()
        raise
    if shard_ij is not None:
        keep = shard_of(np.array(parents, dtype=np.uint64), shard_ij[1]) == shard_ij[0]
        parents = [p for p, k in zip(parents, keep) if k]

    chips_desc = reader.describe()
    provenance = index_provenance(
        kind=kind, model=model, model_name=backbone_name, chips=chips_desc, resolution=resolution,
        adapter_sha256=adapter_sha,
        adapter=bundle.provenance() if bundle is not None else None,
    )
    dim = bundle.embed_dim if bundle is not None else model.embed_dim

    # --- the store: create it now that the input is known to be good ---
    from botaclip.store import Store

    try:
        st = existing_store if existing_store is not None else Store.create(store_path, resolution, pres)
        if name in st.feature_sets():
            old = st.info(name)
            why = identity_mismatch(old["provenance"], provenance) or (
                f"dim {old.get('dim')} vs {dim}" if old.get("dim") != dim else None
            ) or (f"kind {old['kind']!r} vs {kind!r}" if old["kind"] != kind else None)
            if why and not (overwrite and shard_ij is None):
                raise BotaclipError(
                    f"feature set {name!r} in {store_path} was made differently: {why}; choose another --name"
                    + ("" if shard_ij else " or pass --overwrite to replace it")
                )
            if not overwrite:
                provenance = merge_imagery(old["provenance"], provenance)
        derive_from = _find_backbone_set(st, provenance) if bundle is not None else None
    except BaseException:
        reader.close()
        raise

    summary = IndexSummary(feature_set=name, kind=kind, store=str(store_path),
                           shard=f"{shard_ij[0]}/{shard_ij[1]}" if shard_ij else None, notes=notes)
    if derive_from:
        say(f"deriving from stored backbone feature set {derive_from!r} where it has the cells")

    if engine == "ray":
        from botaclip.pipeline.ray_engine import RayIndexJob, run_partitions_ray

        job = RayIndexJob(
            imagery=[str(Path(p).resolve()) for p in imagery], bands=spec, chip_m=chip_m, size_px=int(size_px),
            resampling=resampling, normalize=normalize, backbone=backbone, seed=seed,
            weights=str(Path(weights).resolve()) if weights is not None else None,
            adapter=str(Path(adapter).resolve()) if adapter is not None else None, device=device,
            batch_size=int(batch_size), read_threads=int(workers), min_valid=float(min_valid),
            name=name, kind=kind, dim=dim, provenance=provenance, resolution=resolution,
            partition_resolution=st.partition_resolution, merge_existing=not overwrite,
        )
        try:
            return run_partitions_ray(
                job, st, parents, cells_of, summary, started=started, overwrite=overwrite, limit=limit,
                address=ray_address, n_workers=ray_workers, gpus_per_worker=gpus_per_worker,
                cpus_per_worker=cpus_per_worker, progress=progress, say=say, derive_from=derive_from,
            )
        finally:
            reader.close()

    writer_cls = _SessionWriter if shard_ij is not None else JobWriter
    kwargs = {"echo": say} if shard_ij is not None else {}
    try:
        writer = writer_cls(st, name, kind, dim, provenance, overwrite, **kwargs)
    except BaseException:
        reader.close()
        raise

    # Planning pass: count the cells so that the progress bar has a total (cells are regenerated below).
    counts = {p: int(len(cells_of(p))) for p in parents}
    summary.planned = sum(counts.values())
    from tqdm import tqdm

    bar = tqdm(total=summary.planned, unit="cell", file=sys.stderr, disable=not progress, dynamic_ncols=True,
               smoothing=0.1)
    remaining = [None if limit is None else int(limit)]

    def todo_partitions() -> Iterator[tuple[int, np.ndarray]]:
        for parent in parents:
            if remaining[0] is not None and remaining[0] <= 0:
                return
            cells = cells_of(parent)
            if cells.size == 0:
                continue
            todo = cells_to_do(st, name, parent, cells, summary, bar, remaining, writer.check_present)
            if derive_from and todo.size:
                todo = derive_partition(st, derive_from, bundle, writer, parent, todo, summary, bar)
            summary.partitions += 1
            yield parent, todo

    summary.setup_seconds = time.perf_counter() - started
    stats = PrefetchStats()
    batches = prefetch_chips(reader, todo_partitions(), batch_size=int(batch_size), workers=int(workers),
                             min_valid=float(min_valid), stats=stats)
    meta: deque = deque()

    def chip_arrays() -> Iterator[np.ndarray]:
        for batch in batches:
            meta.append(batch)
            yield batch.chips

    failed = True
    try:
        stream = embedder.embed_stream(chip_arrays())
        while True:
            t0, wait0 = time.perf_counter(), stats.wait_s
            try:
                emb = next(stream)
            except StopIteration:
                break
            summary.embed_seconds += (time.perf_counter() - t0) - (stats.wait_s - wait0)
            batch = meta.popleft()
            summary.embedded += len(batch.h3)
            if len(batch.h3):
                if bundle is not None:
                    emb = adapt_embeddings(bundle, emb)
                writer.write(batch.partition, batch.h3, emb, batch.valid_fraction)
                summary.written += len(batch.h3)
            summary.skipped_nodata += len(batch.nodata)
            summary.skipped_outside += len(batch.outside)
            bar.update(len(batch.h3) + len(batch.nodata) + len(batch.outside))
            if batch.partition_done:
                writer.finish(batch.partition)
        check_replacement_written(writer.replacing, summary, name, min_valid)
        failed = False
    finally:
        batches.close()
        bar.close()
        try:
            writer.close(failed=failed)
        finally:
            reader.close()
    summary.read_wait_seconds = stats.wait_s
    summary.seconds = time.perf_counter() - started
    return summary


def check_replacement_written(replacing: bool, summary: IndexSummary, name: str, min_valid: float) -> None:
    """An --overwrite run that embedded nothing fails (and its writer keeps the old set), saying why."""
    if replacing and summary.written == 0:
        raise BotaclipError(
            f"feature set {name!r} was not replaced: no cell was embedded ({summary.skipped_nodata} chips below "
            f"--min-valid {min_valid}, {summary.skipped_outside} outside the imagery); the old set is kept")


def cells_to_do(store, name: str, parent: int, cells: np.ndarray, summary: IndexSummary, bar,
                remaining: list[int | None], check_present: bool = True) -> np.ndarray:
    """The cells of one partition still to embed: those not stored yet, cut to what is left of ``--limit``
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


def _present(store, name: str, parent: int, cells: np.ndarray) -> np.ndarray:
    """Which of ``cells`` (all in partition ``parent``) the feature set already holds.

    Reads only the ``h3`` column of that partition's Parquet file (the store's documented layout), without a
    catalog round trip: this runs once per partition and must stay cheap next to a GPU's throughput.
    """
    from botaclip.store.damage import read_partition_table
    from botaclip.store.layout import partition_path

    path = partition_path(store.path, name, parent)
    if not path.exists():
        return np.zeros(len(cells), dtype=bool)
    stored = read_partition_table(store.path, name, path, ["h3"]).column("h3").to_numpy().astype(np.uint64)
    return _isin_sorted(cells, np.sort(stored))


def _isin_sorted(cells: np.ndarray, sorted_existing: np.ndarray) -> np.ndarray:
    if sorted_existing.size == 0:
        return np.zeros(len(cells), dtype=bool)
    pos = np.clip(np.searchsorted(sorted_existing, cells), 0, sorted_existing.size - 1)
    return sorted_existing[pos] == cells


def _find_backbone_set(store, provenance: dict) -> str | None:
    """A backbone feature set of the store made with the same model, weights, bands and chip geometry."""
    for fs in store.feature_sets():
        info = store.info(fs)
        if info["kind"] != "backbone":
            continue
        if identity_mismatch(info["provenance"], provenance, BACKBONE_IDENTITY_KEYS) is None:
            return fs
    return None


def derive_partition(store, source: str, bundle, writer, parent: int, todo: np.ndarray, summary: IndexSummary, bar) -> np.ndarray:
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
