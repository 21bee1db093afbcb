"""The index job: region -> H3 cells -> chips -> DOFA (-> BotaCLIP adapter) -> feature store.

    from botaclip.pipeline import IndexConfig, run_index
    summary = run_index("sample", ["sample/ortho.tif"], "store", backbone="dofa-small", bands="rgbn")
    summary = run_index("sample", ["sample/ortho.tif"], "store", IndexConfig(), batch_size=16)   # config + options
    print(summary.format())

How it runs:
- Cells are planned and processed one coarse partition (``store.partition_of``) at a time: memory is bounded by
  one partition's rows plus the chips read ahead, whatever the region's size.
- Chips are read in background threads (:func:`botaclip.imagery.prefetch_chips`) while the model embeds the
  previous batch; chips below ``min_valid`` and cells outside the imagery are skipped and counted. This step and
  the others both engines share live in :mod:`botaclip.pipeline.index_steps`; the settings in
  :mod:`botaclip.pipeline.index_config`.
- Resumable and idempotent: cells already in the feature set are skipped (unless ``overwrite``); each finished
  partition is written atomically, so a job killed at any moment and run again completes the rest with no
  duplicate and no missing cell.
- ``shard=(i, n)`` keeps the partitions whose hashed parent id falls in shard ``i`` of ``n``. The store allows one
  writer at a time, so sharded jobs hold its lock only to commit finished partitions (waiting while another
  shard commits) and compute in parallel.
- With an adapter, the adapted embedding is a function of the stored unit-normalised backbone embedding
  (:func:`adapt_embeddings`): cells already in a matching backbone feature set are derived from it without
  reading imagery or running the backbone; the others are embedded from the imagery.
- ``engine="ray"`` hands the partitions to Ray actors (:mod:`botaclip.pipeline.ray_engine`); this module imports
  that one, never the other way round.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from botaclip.atomic import sha256_file
from botaclip.config import build, with_options
from botaclip.errors import Interrupted, InvalidInputError, StoreBusyError, is_interrupt, param
from botaclip.imagery import ChipReader, band_spec, parse_region, region_partitions
from botaclip.imagery.regions import Region
from botaclip.pipeline.index_config import DEFAULT_RESOLUTION, IndexConfig, OutputConfig, parse_shard
from botaclip.pipeline.index_steps import (
    EmbedTally,
    IndexSummary,
    IndexTarget,
    PartitionPlan,
    check_replacement_written,
    derive_partition,
    embed_partitions,
    partitions_to_do,
)
from botaclip.pipeline.provenance import (
    BACKBONE_IDENTITY_KEYS,
    identity_mismatch,
    index_provenance,
    merge_imagery,
)
from botaclip.pipeline.stac_source import stac_inputs
from botaclip.progress import as_progress

__all__ = ["DEFAULT_RESOLUTION", "IndexConfig", "IndexSummary", "JobWriter", "default_name", "parse_shard",
           "run_index", "shard_of"]


# -- options ----------------------------------------------------------------------------------------------------


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
    from botaclip.imagery.remote import gdal_env, gdal_path
    from botaclip.imagery.sources import open_source

    try:
        with gdal_env([path]), rasterio.open(gdal_path(path)) as ds:
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

    def __init__(self, store, target, overwrite: bool) -> None:
        self._w = store.writer(target.name, kind=target.kind, dim=target.dim, dtype=target.dtype,
                               provenance=target.provenance, overwrite=overwrite)
        # --overwrite recomputes every cell: its replacement is built aside, the old set stays until it is done.
        self.check_present = not overwrite
        self.replacing = self._w.replacing

    def write(self, parent: int, h3: np.ndarray, embedding: np.ndarray, valid_fraction: np.ndarray) -> None:
        self._w.write(h3=h3, embedding=embedding, valid_fraction=valid_fraction)

    def finish(self, parent: int) -> None:
        self._w.finish_partition(parent, wait=False)  # its fsync overlaps the next partition; resume redoes it

    def close(self, failed: bool) -> None:
        self._w.close(failed=failed)


class _SessionWriter:
    """Shard mode: rows of finished partitions are committed in short writer sessions, waiting for the store's
    lock while another shard commits; shards compute in parallel and only their commits are serialised."""

    def __init__(self, store, target, overwrite: bool, commit_every_s: float = 30.0, commit_rows: int = 20_000,
                 echo: Callable[[str], None] | None = None):
        name = target.name
        self.store, self.name, self.kind, self.dim, self.provenance = store, name, target.kind, target.dim, \
            target.provenance
        self.dtype = target.dtype
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
                return self.store.writer(self.name, kind=self.kind, dim=self.dim, dtype=self.dtype,
                                         provenance=dict(self.provenance), geometry=geometry)
            except StoreBusyError:
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
                w.finish_partition(parent, wait=False)  # moved in by close
            failed = False
        finally:
            w.close(failed=failed)
        self._done = []
        self._last_commit = time.monotonic()

    def close(self, failed: bool) -> None:
        # Unfinished partitions are dropped: the next run recomputes them (finished ones are committed).
        self.commit(final=not failed)



# -- the job ----------------------------------------------------------------------------------------------------


@contextmanager
def _interrupt_keeps_finished(config: IndexConfig) -> Iterator[None]:
    """Ctrl-C (or DuckDB's "Query interrupted") ends the job as one line saying what was kept: finished
    partitions are committed (the writer closes as failed), so the same command resumes."""
    try:
        yield
    except BaseException as exc:
        if not is_interrupt(exc):
            raise
        if config.output.overwrite and config.scale.shard is None:
            raise Interrupted("interrupted; the feature set is unchanged (its replacement was discarded); "
                              "run the same command to start it again") from None
        raise Interrupted("interrupted; the partitions finished so far are kept; run the same command to "
                          "resume") from None


def run_index(region: str | Region, imagery: Sequence[str], store: str | Path, config: IndexConfig | None = None,
              *, echo: Callable[[str], None] | None = None, **options) -> IndexSummary:
    """Embed the H3 cells of ``region`` from ``imagery`` and write them to the feature store ``store``.

    Args:
        region: "sample", a bbox "west,south,east,north" (WGS84 degrees), a polygon file (GeoJSON,
            GeoPackage, GeoParquet; any CRS), a file of H3 cells (text or Parquet), or a :class:`Region`.
        imagery: raster files (anything GDAL reads, any CRS); earlier files win where they overlap. May be empty
            with region "sample" (the sample's orthophoto is used).
        store: the store directory; created (with ``resolution``) when it does not exist.
        config: an :class:`~botaclip.pipeline.index_config.IndexConfig` (default: its defaults); keyword
            ``options`` override its fields by name: ``backbone``, ``weights``, ``adapter``, ``seed``;
            ``chip_m``, ``size_px``, ``bands``, ``wavelengths``, ``normalize``, ``resampling``, ``min_valid``;
            ``batch_size``, ``device``, ``workers``, ``limit``, ``progress``; ``engine``, ``shard``,
            ``ray_address``, ``ray_workers``, ``gpus_per_worker``, ``cpus_per_worker``; ``name``, ``resolution``,
            ``partition_resolution``, ``overwrite``. The config classes say what each does and its default.
        echo: where notes go (default: stderr).

    Returns an :class:`IndexSummary`. Bad input raises :class:`BotaclipError` before the store is touched (an
    :class:`~botaclip.errors.InvalidInputError` naming the option in ``.params`` for a bad option); an unknown
    option raises TypeError.
    """
    started = time.perf_counter()
    cfg = build(IndexConfig, config, **options)
    with _interrupt_keeps_finished(cfg):
        return _index(region, imagery, Path(store), cfg, echo or _to_stderr, started)


def _to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _index(region, imagery: Sequence[str], store_path: Path, cfg: IndexConfig, say, started: float) -> IndexSummary:
    """run_index once the options are valid: check the rest of the input, open the store, run an engine."""
    if cfg.scale.engine == "ray":
        from botaclip.ray_cluster import import_ray

        import_ray()  # a missing botaclip[ray] is refused before anything is read or written
    bundle = _load_adapter(cfg)
    if bundle is not None and bundle.cross_fit is not None:
        from botaclip.pipeline.crossfit import index_cross_fitted

        return index_cross_fitted(bundle, region, imagery, store_path, cfg, say)
    existing, resolution, pres = _grid(store_path, cfg.output)
    chips = cfg.chips
    wavelengths = None if chips.wavelengths is None else band_spec(None, chips.wavelengths).wavelengths
    imagery, stac_spec = stac_inputs(chips.stac_source, imagery, say, bands=chips.bands, wavelengths=wavelengths)
    region_obj, imagery = _resolve_region(region, imagery)
    for note in region_obj.notes:
        say(note)
    if not imagery:
        raise InvalidInputError(f"no imagery given; pass one or more raster files with {param('imagery')}")
    with ExitStack() as stack:
        inputs = _open_inputs(cfg, imagery, bundle, stack, stac_spec)
        for note in dict.fromkeys(inputs.notes):
            say(note)
        name = _feature_set_name(cfg, inputs)
        plan = _plan(region_obj, inputs.reader, resolution, pres, cfg.scale.shard)
        target = _target(cfg, inputs, name, resolution, pres)
        st, target, derive_from = _open_store(store_path, existing, cfg, target)
        shard = cfg.scale.shard
        summary = IndexSummary(feature_set=name, kind=target.kind, store=str(store_path),
                               shard=f"{shard[0]}/{shard[1]}" if shard else None, notes=inputs.notes)
        if derive_from:
            say(f"deriving from stored backbone feature set {derive_from!r} where it has the cells")
        run = _Run(cfg, st, inputs, target, plan, summary, derive_from, say, started)
        return _run_ray(run) if cfg.scale.engine == "ray" else _run_local(run)


def _load_adapter(cfg: IndexConfig):
    """The adapter bundle (None without one); a cross-fitted adapter does not shard."""
    if cfg.model.adapter is None:
        return None
    from botaclip.model.adapter import load_adapter

    bundle = load_adapter(cfg.model.adapter)
    if bundle.cross_fit is not None and cfg.scale.shard is not None:
        raise InvalidInputError(f"{param('shard')} with a cross-fitted adapter: index the backbone set with "
                                f"{param('shard')} first (no {param('adapter')}), then run this command once "
                                f"without {param('shard')}")
    return bundle


def _grid(store_path: Path, output: OutputConfig) -> tuple[object | None, int, int]:
    """The existing store at ``store_path`` (None when it is to be created), the H3 resolution and the partition
    resolution: the existing store's, else those asked for (or the defaults)."""
    existing = _store_state(store_path)
    resolution = output.resolution
    if existing is not None:
        if resolution is not None and resolution != existing.resolution:
            raise InvalidInputError(f"store {store_path} is at H3 resolution {existing.resolution}, not "
                                    f"{resolution}; drop {param('resolution')} or use another store")
        return existing, existing.resolution, existing.partition_resolution
    resolution = DEFAULT_RESOLUTION if resolution is None else resolution
    pres = max(0, resolution - 4) if output.partition_resolution is None else output.partition_resolution
    return None, resolution, min(pres, resolution)


@dataclass
class _Inputs:
    """The imagery and the models of a job, open (the reader is closed with the job)."""

    imagery: list[str]
    spec: object  # botaclip.imagery.bands.BandSpec
    reader: ChipReader
    model: object  # the backbone (botaclip.pipeline.train.make_backbone)
    embedder: object | None  # None with the Ray engine: its workers hold the models
    bundle: object | None  # the adapter (botaclip.model.adapter.AdapterBundle)
    adapter_sha: str | None
    notes: list[str]  # the warnings raised while opening them, as "note: ..." lines


def _open_inputs(cfg: IndexConfig, imagery: list[str], bundle, stack: ExitStack, spec=None) -> _Inputs:
    """Open the chip reader (closed by ``stack``), create the backbone, check the adapter against it and create
    the embedder; the warnings they raise become notes. ``spec``: the bands (default: from the options, else
    guessed from the first raster)."""
    from botaclip.model.embedder import Embedder
    from botaclip.pipeline.train import make_backbone

    chips, m, runtime = cfg.chips, cfg.model, cfg.runtime
    if spec is None:
        spec = band_spec(chips.bands, chips.wavelengths) if (chips.bands or chips.wavelengths) else \
            _guess_bands(imagery[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = ChipReader(imagery, spec, chip_m=chips.chip_m, size_px=chips.size_px,
                            resampling=chips.resampling, normalization=chips.normalize)
        stack.callback(reader.close)
        model = make_backbone(m.backbone, m.weights, m.seed, chips.size_px)
        adapter_sha = None
        if bundle is not None:
            bundle.check_backbone(model.name, None if model.random_init else model.weights_sha256,
                                  model.embed_dim, m.seed)
            adapter_sha = sha256_file(m.adapter)
        # The Ray engine's workers hold the models; this process only needs the model's description.
        embedder = None if cfg.scale.engine == "ray" else Embedder(
            model, list(reader.wavelengths), device=runtime.device, batch_size=runtime.batch_size, normalize=True)
    notes = [f"note: {w.message}" for w in caught]
    return _Inputs(list(imagery), spec, reader, model, embedder, bundle, adapter_sha, notes)


def _feature_set_name(cfg: IndexConfig, inputs: _Inputs) -> str:
    from botaclip.store.schema import check_identifier

    if cfg.output.name is not None:
        return cfg.output.name  # checked by OutputConfig
    name = default_name(cfg.model.backbone.strip().lower(), inputs.spec.name, inputs.bundle is not None)
    return check_identifier(name)


def _plan(region: Region, reader: ChipReader, resolution: int, pres: int, shard) -> PartitionPlan:
    """The partitions of ``region`` within the imagery (those of shard ``(i, n)`` only, when given)."""
    parents, cells_of = region_partitions(region, reader.footprint, resolution, pres)
    if shard is not None:
        keep = shard_of(np.array(parents, dtype=np.uint64), shard[1]) == shard[0]
        parents = [p for p, k in zip(parents, keep) if k]
    return PartitionPlan(list(parents), cells_of)


def _target(cfg: IndexConfig, inputs: _Inputs, name: str, resolution: int, pres: int) -> IndexTarget:
    """The feature set to write: kind, dimension and provenance (model, chips, adapter)."""
    bundle, model = inputs.bundle, inputs.model
    kind = "botaclip" if bundle is not None else "backbone"
    provenance = index_provenance(
        kind=kind, model=model, model_name=cfg.model.backbone.strip().lower(), chips=inputs.reader.describe(),
        resolution=resolution, adapter_sha256=inputs.adapter_sha,
        adapter=bundle.provenance() if bundle is not None else None,
    )
    dim = bundle.embed_dim if bundle is not None else model.embed_dim
    return IndexTarget(name, kind, dim, provenance, resolution, pres, cfg.output.dtype)


def _open_store(store_path: Path, existing, cfg: IndexConfig, target: IndexTarget):
    """The store (created now that the input is known to be good), the target with the imagery of earlier runs
    in its provenance, and the backbone set an adapted set derives from (or None)."""
    from botaclip.store import Store

    overwrite, shard = cfg.output.overwrite, cfg.scale.shard
    st = existing if existing is not None else Store.create(store_path, target.resolution,
                                                            target.partition_resolution)
    provenance = target.provenance
    if target.name in st.feature_sets():
        old = st.info(target.name)
        why = identity_mismatch(old["provenance"], provenance) or (
            f"dim {old.get('dim')} vs {target.dim}" if old.get("dim") != target.dim else None
        ) or (f"kind {old['kind']!r} vs {target.kind!r}" if old["kind"] != target.kind else None) or (
            f"dtype {old['dtype']} vs {target.dtype}" if old["dtype"] != target.dtype else None)
        if why and not (overwrite and shard is None):
            raise InvalidInputError(
                f"feature set {target.name!r} in {store_path} was made differently: {why}; choose another "
                f"{param('name')}" + ("" if shard else f" or pass {param('overwrite')} to replace it"))
        if not overwrite:
            provenance = merge_imagery(old["provenance"], provenance)
    target = replace(target, provenance=provenance, partition_resolution=st.partition_resolution)
    derive_from = _find_backbone_set(st, provenance) if target.kind == "botaclip" else None
    return st, target, derive_from


@dataclass
class _Run:
    """A job ready to run: input checked, store open, partitions planned."""

    cfg: IndexConfig
    store: object  # botaclip.store.Store
    inputs: _Inputs
    target: IndexTarget
    plan: PartitionPlan
    summary: IndexSummary
    derive_from: str | None
    say: Callable[[str], None]
    started: float


def _run_local(run: _Run) -> IndexSummary:
    """The local engine: this process embeds the partitions and writes them."""
    cfg, summary, inputs, name = run.cfg, run.summary, run.inputs, run.target.name
    writer = _job_writer(run)
    # Planning pass: count the cells so that the progress bar has a total (cells are regenerated below).
    summary.planned = run.plan.count()
    # runtime.progress: a tqdm bar on stderr (botaclip.progress.Echo), or none.
    bar = as_progress(cfg.runtime.progress).bar(summary.planned, "cell")

    def derive(parent: int, todo: np.ndarray) -> np.ndarray:
        return derive_partition(run.store, run.derive_from, inputs.bundle, writer, parent, todo, summary, bar)

    todo = partitions_to_do(run.store, run.plan, summary, bar, name=name, limit=cfg.runtime.limit,
                            check_present=writer.check_present, derive=derive if run.derive_from else None)
    summary.setup_seconds = time.perf_counter() - run.started
    tally = EmbedTally()
    failed = True
    try:
        with closing(embed_partitions(inputs.reader, inputs.embedder, todo, cfg, inputs.bundle, tally)) as batches:
            for batch, emb in batches:
                if len(batch.h3):
                    writer.write(batch.partition, batch.h3, emb, batch.valid_fraction)
                    summary.written += len(batch.h3)
                bar.update(len(batch.h3) + len(batch.nodata) + len(batch.outside))
                if batch.partition_done:
                    writer.finish(batch.partition)
        tally.add_to(summary)
        check_replacement_written(writer.replacing, summary, name, cfg.chips.min_valid)
        failed = False
    finally:
        bar.close()
        writer.close(failed=failed)
    summary.seconds = time.perf_counter() - run.started
    return summary


def _job_writer(run: _Run):
    """The job's writer: one store writer for the whole job, or short commit sessions per shard."""
    t, overwrite = run.target, run.cfg.output.overwrite
    if run.cfg.scale.shard is not None:
        return _SessionWriter(run.store, t, overwrite, echo=run.say)
    return JobWriter(run.store, t, overwrite)


def _run_ray(run: _Run) -> IndexSummary:
    """The Ray engine: actors embed the partitions, this process commits them (paths made absolute for them)."""
    from botaclip.pipeline.ray_engine import RayIndexJob, run_partitions_ray

    m = run.cfg.model
    config = with_options(run.cfg, weights=_absolute(m.weights), adapter=_absolute(m.adapter))
    job = RayIndexJob(config=config, imagery=[_absolute(p) for p in run.inputs.imagery],
                      bands=run.inputs.spec, target=run.target)
    return run_partitions_ray(job, run.store, run.plan, run.summary, started=run.started, say=run.say,
                              derive_from=run.derive_from)


def _absolute(path: str | Path | None) -> str | None:
    from botaclip.imagery.remote import is_virtual

    if path is None or is_virtual(str(path)):
        return None if path is None else str(path)  # URLs and /vsi paths mean the same on every node
    return str(Path(path).resolve())


def _find_backbone_set(store, provenance: dict) -> str | None:
    """A backbone feature set of the store made with the same model, weights, bands and chip geometry."""
    for fs in store.feature_sets():
        info = store.info(fs)
        if info["kind"] != "backbone":
            continue
        if identity_mismatch(info["provenance"], provenance, BACKBONE_IDENTITY_KEYS) is None:
            return fs
    return None

