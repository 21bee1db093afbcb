"""The settings of the index job (`botaclip index`, :func:`botaclip.pipeline.run_index`) as frozen dataclasses.

:class:`IndexConfig` nests five groups: ``model`` (backbone, weights, adapter, seed), ``chips`` (chip geometry,
bands, normalisation, resampling, min_valid, and STAC imagery: an inline
:class:`~botaclip.pipeline.stac_source.StacSource`, options ``stac``, ``assets``, ``sort``), ``runtime`` (batch
size, device, reading threads, limit, progress), ``scale`` (engine, shard, Ray settings) and ``output``
(feature-set name, H3 resolutions, overwrite). Every field name is unique across the groups, so keyword options
reach them by name::

    run_index("sample", [], "store", IndexConfig(runtime=RuntimeConfig(batch_size=8)))
    run_index("sample", [], "store", batch_size=8)                  # the same call

Each group is validated when built, before anything is read or written, with errors that name the parameter
(the CLI spells it as its option). Defaults live here only: the CLI reads them from these classes. See
:mod:`botaclip.config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from botaclip.config import inline
from botaclip.errors import BotaclipError, InvalidInputError, param
from botaclip.pipeline.stac_source import StacSource

DEFAULT_RESOLUTION = 10  # H3 resolution of a new store when none is given
NORMALIZATIONS = ("auto", "preset", "stats")  # as botaclip.imagery.bands (not imported: it pulls in rasterio)
RESAMPLINGS = ("auto", "average", "bilinear")  # as botaclip.imagery.chips
ENGINES = ("local", "ray")


def _check(ok: bool, name: str, requirement: str, value) -> None:
    if not ok:
        raise InvalidInputError(f"{param(name)} {requirement}, got {value!r}")


def _whole(config, name: str, minimum: int, requirement: str, optional: bool = False) -> None:
    """Check that field ``name`` is a whole number >= ``minimum`` (None allowed when ``optional``); store it as int."""
    value = getattr(config, name)
    if value is None and optional:
        return
    try:
        number = int(value)
        ok = number == value and number >= minimum and not isinstance(value, bool)
    except (TypeError, ValueError, OverflowError):
        number, ok = None, False
    _check(ok, name, requirement, value)
    object.__setattr__(config, name, number)


def _real(config, name: str, accept, requirement: str, optional: bool = False) -> None:
    """Check that field ``name`` is a finite number that ``accept`` accepts (None allowed when ``optional``)."""
    value = getattr(config, name)
    if value is None and optional:
        return
    try:
        number = float(value)
        ok = math.isfinite(number) and accept(number) and not isinstance(value, (bool, str))
    except (TypeError, ValueError):
        number, ok = None, False
    _check(ok, name, requirement, value)
    object.__setattr__(config, name, number)


def _resolution(config, name: str) -> None:
    _whole(config, name, 0, "must be an H3 resolution from 0 to 15", optional=True)
    value = getattr(config, name)
    _check(value is None or value <= 15, name, "must be an H3 resolution from 0 to 15", value)


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"I/N"`` or ``(I, N)`` (0 <= I < N) -> (I, N)."""
    if shard is None:
        return None
    if isinstance(shard, str):
        try:
            i_text, n_text = shard.split("/")
            i, n = int(i_text), int(n_text)
        except ValueError:
            raise InvalidInputError(f"{param('shard')} {shard!r} is not I/N (e.g. 0/4 for the first of four "
                                    "shards)") from None
    else:
        try:
            i, n = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{param('shard')} {shard!r} is not I/N or a pair (I, N)") from None
    if n < 1 or not 0 <= i < n:
        raise InvalidInputError(f"{param('shard')} {i}/{n} is invalid: N must be >= 1 and 0 <= I < N")
    return i, n


@dataclass(frozen=True)
class ModelConfig:
    """The model that embeds the chips: a DOFA backbone and optionally a BotaCLIP adapter on top."""

    backbone: str = "dofa-small"  # dofa-small | dofa-base | dofa-large (dofa-tiny for tests)
    weights: str | Path | None = None  # backbone checkpoint; None: random init from seed (recorded as such)
    # BotaCLIP adapter checkpoint: store adapted embeddings (kind "botaclip"). A cross-fitted one (`botaclip train
    # --folds K`) also writes the K companion sets <name>_fold<k>; see botaclip.pipeline.crossfit.
    adapter: str | Path | None = None
    seed: int = 0  # seed of a randomly initialised backbone

    def __post_init__(self) -> None:
        _check(isinstance(self.backbone, str) and bool(self.backbone.strip()), "backbone", "must name a backbone",
               self.backbone)
        _whole(self, "seed", 0, "must be 0 or more")


@dataclass(frozen=True)
class ChipConfig:
    """How a cell becomes a chip: its size on the ground and in pixels, the bands, normalisation, resampling, and
    the smallest fraction of valid pixels a chip needs to be embedded."""

    chip_m: float = 100.0  # chip side in metres
    size_px: int = 224  # chip side in pixels after resampling (a multiple of 16)
    bands: str | None = None  # band preset (rgb, rgbn, ...); None with no wavelengths: guessed from the band count
    wavelengths: str | tuple[float, ...] | None = None  # explicit centre wavelengths in µm, instead of bands
    normalize: str = "auto"  # auto | preset | stats
    resampling: str = "auto"  # auto | average | bilinear
    min_valid: float = 0.9  # chips with a smaller fraction of valid pixels are skipped
    # Imagery from STAC instead of raster files (options stac, assets, sort); without stac the job's raster files.
    stac_source: StacSource = inline(StacSource)

    def __post_init__(self) -> None:
        _real(self, "chip_m", lambda v: v > 0, "must be a positive number of metres")
        _check(isinstance(self.stac_source, StacSource), "stac_source", "must be a StacSource", self.stac_source)
        _whole(self, "size_px", 1, "must be a positive whole number of pixels")
        if self.bands is not None and self.wavelengths is not None:
            raise InvalidInputError(f"give either {param('bands')} or {param('wavelengths')}, not both")
        if self.wavelengths is not None and not isinstance(self.wavelengths, str):
            object.__setattr__(self, "wavelengths", tuple(self.wavelengths))
        _check(str(self.normalize).strip().lower() in NORMALIZATIONS, "normalize",
               f"must be one of {', '.join(NORMALIZATIONS)}", self.normalize)
        _check(self.resampling in RESAMPLINGS, "resampling", f"must be one of {', '.join(RESAMPLINGS)}",
               self.resampling)
        _real(self, "min_valid", lambda v: 0.0 <= v <= 1.0, "must be between 0 and 1")


@dataclass(frozen=True)
class RuntimeConfig:
    """How this process runs the model: batch size, device, chip-reading threads, a cap on cells, progress."""

    batch_size: int = 64  # chips per model batch
    device: str = "auto"  # auto, cpu or cuda[:N]
    workers: int = 4  # threads reading chips ahead of the model (0: read in the calling thread)
    limit: int | None = None  # stop after this many cells to compute (benchmarks and trials)
    progress: bool = True  # a tqdm progress bar on stderr

    def __post_init__(self) -> None:
        _whole(self, "batch_size", 1, "must be at least 1")
        _whole(self, "workers", 0, "must be 0 or more")
        _whole(self, "limit", 0, "must be >= 0", optional=True)


@dataclass(frozen=True)
class ScaleConfig:
    """How the work is spread: shards of one job run as separate processes, or the Ray engine (docs/scale.md)."""

    engine: str = "local"  # local (this process) or ray (Ray actors, one model each; the driver commits)
    shard: str | tuple[int, int] | None = None  # "I/N": only the partitions of shard I of N; kept as (I, N)
    ray_address: str | None = None  # Ray cluster: "auto", "HOST:PORT"; None starts a local Ray instance
    ray_workers: int | None = None  # actors; None: one per GPU, or one per cpus_per_worker CPUs without GPUs
    gpus_per_worker: float | None = None  # GPUs per actor; None: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float = 1.0  # CPUs per actor (also its torch threads when on CPU)

    def __post_init__(self) -> None:
        _check(self.engine in ENGINES, "engine", f"must be one of {', '.join(ENGINES)}", self.engine)
        object.__setattr__(self, "shard", parse_shard(self.shard))
        if self.engine != "ray":
            return
        if self.shard is not None:
            raise InvalidInputError(f"{param('shard')} and {param('engine')} ray do not combine: the Ray engine "
                                    f"already spreads the partitions over its workers; drop {param('shard')}")
        _whole(self, "ray_workers", 1, "must be at least 1", optional=True)
        _real(self, "gpus_per_worker", lambda v: v >= 0, "must be 0 or more", optional=True)
        _real(self, "cpus_per_worker", lambda v: v > 0, "must be more than 0")


@dataclass(frozen=True)
class OutputConfig:
    """What is written: the feature set's name, the store's H3 resolutions (for a new store), overwrite, and the
    on-disk precision of the embeddings (dtype)."""

    name: str | None = None  # feature set; None: dofa_small_rgb (botaclip_dofa_small_rgb with an adapter)
    resolution: int | None = None  # H3 resolution 0-15; None: the store's, or DEFAULT_RESOLUTION for a new store
    partition_resolution: int | None = None  # for a new store; None: resolution - 4
    overwrite: bool = False  # recompute cells already present (without shard: replace the whole feature set)
    dtype: str = "float32"  # on-disk precision: float32, float16 (half the bytes) or int8 (a quarter, + a scale)

    def __post_init__(self) -> None:
        from botaclip.store.schema import DTYPES

        if self.dtype not in DTYPES:
            raise InvalidInputError(f"{param('dtype')} must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.name is not None:
            from botaclip.store.schema import check_identifier

            try:
                check_identifier(self.name)
            except BotaclipError as exc:
                raise InvalidInputError(f"{exc} ({param('name')})") from None
        _resolution(self, "resolution")
        _resolution(self, "partition_resolution")


@dataclass(frozen=True)
class IndexConfig:
    """The index job: region -> H3 cells -> chips -> DOFA (-> BotaCLIP adapter) -> feature store."""

    model: ModelConfig = field(default_factory=ModelConfig)
    chips: ChipConfig = field(default_factory=ChipConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self) -> None:
        for name, cls in (("model", ModelConfig), ("chips", ChipConfig), ("runtime", RuntimeConfig),
                          ("scale", ScaleConfig), ("output", OutputConfig)):
            _check(isinstance(getattr(self, name), cls), name, f"must be a {cls.__name__}", getattr(self, name))
