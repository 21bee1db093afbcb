"""The settings of the training job (`botaclip train`, :func:`botaclip.pipeline.train.train_botaclip`) as frozen
dataclasses.

:class:`TrainJobConfig` holds the inputs and output (``releves``, ``imagery``, ``out``, ``plots``, ``crs``,
``resume``) and nests four groups: ``features`` (the frozen backbone and the chips it embeds, cached),
``split`` (validation split, vocabulary, cross-fitting), ``centering`` (the adapter's input centring) and ``fit``:
the model's own :class:`~botaclip.model.train_config.TrainConfig` (objective, epochs, learning rate, seed, device,
...), nested as it is rather than re-declared. Every field name is unique across the groups, so keyword options
reach them by name::

    train_botaclip(TrainJobConfig("r.csv", ["o.tif"], "a.pt", fit=TrainConfig(epochs=3)))
    train_botaclip(releves="r.csv", imagery=["o.tif"], out="a.pt", epochs=3)            # the same call
    train_botaclip(TrainOptions(releves="r.csv", imagery=["o.tif"], out="a.pt", epochs=3))  # and again

Each group is validated when built, before anything is read, with errors that name the parameter (the CLI spells
it as its option). Defaults live here only: the CLI reads them from these classes. See :mod:`botaclip.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from botaclip.config import build, inline
from botaclip.errors import InvalidInputError, param
from botaclip.model.train_config import TrainConfig, check, check_int, is_int, is_number
from botaclip.pipeline.stac_source import StacSource

__all__ = ["CenteringConfig", "FeatureConfig", "SplitConfig", "TrainConfig", "TrainJobConfig", "TrainOptions"]


@dataclass(frozen=True)
class FeatureConfig:
    """The frozen backbone and the chips it embeds at each plot, K augmented views each, cached on disk.
    Lengths in metres, chip size in pixels."""

    backbone: str = "dofa-base"  # dofa-small | dofa-base | dofa-large (dofa-tiny for tests)
    weights: str | None = None  # backbone checkpoint; None: random init from backbone_seed
    backbone_seed: int = 0
    chip_m: float = 100.0
    size_px: int = 224
    bands: str = "rgbn"
    min_valid: float = 0.8  # relevés whose chip has a smaller fraction of valid pixels are skipped
    views: int = 4  # augmented views cached per chip (1: no augmentation)
    embed_batch_size: int = 64  # chips per backbone batch
    cache_dir: str | None = None  # folder of the feature cache; None: next to out
    # Imagery from STAC instead of raster files (options stac, assets, sort): the items' wavelengths replace
    # ``bands``; without stac the job's ``imagery``.
    stac_source: StacSource = inline(StacSource)

    def __post_init__(self) -> None:
        from botaclip.imagery.chips import MAX_SIZE_PX

        check(isinstance(self.stac_source, StacSource), "stac_source", "must be a StacSource", self.stac_source)
        check(isinstance(self.backbone, str) and bool(self.backbone.strip()), "backbone", "must name a backbone",
              self.backbone)
        check_int(self, "backbone_seed", 0)
        check(is_number(self.chip_m) and self.chip_m > 0, "chip_m", "must be a positive number of metres",
              self.chip_m)
        check(is_int(self.size_px) and 1 <= self.size_px <= MAX_SIZE_PX, "size_px",
              f"must be between 1 and {MAX_SIZE_PX}", self.size_px)
        check(is_number(self.min_valid) and 0 <= self.min_valid <= 1, "min_valid", "must be between 0 and 1",
              self.min_valid)
        check_int(self, "views", 1)
        check_int(self, "embed_batch_size", 1)


@dataclass(frozen=True)
class SplitConfig:
    """The spatial validation split (whole H3 blocks), the species vocabulary, and cross-fitting."""

    val_fraction: float = 0.2  # share of relevés held out for validation
    block_res: int = 8  # H3 resolution of the validation (and fold) blocks
    min_plots: int = 5  # the vocabulary: species in at least this many training plots
    folds: int = 0  # K >= 2: also train K fold adapters on whole H3 blocks (cross-fitting); 0: off

    def __post_init__(self) -> None:
        check(is_number(self.val_fraction) and 0 < self.val_fraction < 1, "val_fraction",
              "must be between 0 and 1 (exclusive)", self.val_fraction)
        check(is_int(self.block_res) and 0 <= self.block_res <= 15, "block_res", "must be an H3 resolution 0..15",
              self.block_res)
        check_int(self, "min_plots", 1)
        check(is_int(self.folds) and (self.folds == 0 or self.folds >= 2), "folds",
              "must be at least 2 to cross-fit (0 for no cross-fitting)", self.folds)


@dataclass(frozen=True)
class CenteringConfig:
    """The adapter's input centring: the mean of a store's backbone feature set (``center_store``, ``center_set``:
    default the set made with this backbone), else of the relevés' chips; ``center=False`` turns it off (the
    first demo's setting)."""

    center: bool = True
    center_store: str | None = None
    center_set: str | None = None

    def __post_init__(self) -> None:
        if not self.center and (self.center_store or self.center_set):
            raise InvalidInputError(f"centring turned off ({param('center')}) contradicts "
                                    f"{param('center_store')}/{param('center_set')}")
        if self.center_store is None and self.center_set is not None:
            raise InvalidInputError(f"{param('center_set')} needs {param('center_store')}")


@dataclass(frozen=True)
class TrainJobConfig:
    """The training job: relevés + imagery -> cached backbone features -> adapter checkpoint ``out``."""

    releves: str | Path  # relevé table (long or wide)
    imagery: tuple[str, ...] | list[str] | str  # raster file(s) or URLs chips are cut from; earlier files win
    out: str | Path  # checkpoint to write (e.g. adapter.pt); the per-epoch log goes next to it as .jsonl
    plots: str | None = None  # plots table, when the relevé table has no coordinates
    crs: str | None = None  # CRS of plain x/y coordinate columns
    resume: str | None = None  # continue this checkpoint (same data and backbone) up to epochs
    features: FeatureConfig = field(default_factory=FeatureConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    centering: CenteringConfig = field(default_factory=CenteringConfig)
    fit: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in (("features", FeatureConfig), ("split", SplitConfig), ("centering", CenteringConfig),
                          ("fit", TrainConfig)):
            check(isinstance(getattr(self, name), cls), name, f"must be a {cls.__name__}", getattr(self, name))
        imagery = (self.imagery,) if isinstance(self.imagery, (str, Path)) else tuple(self.imagery or ())
        object.__setattr__(self, "imagery", tuple(str(p) for p in imagery))
        self.features.stac_source.check_alone(self.imagery)
        if not self.features.stac_source.given:
            check(len(self.imagery) > 0, "imagery", "must name at least one raster file or URL (or give a STAC item)",
                  self.imagery)
        check(bool(str(self.releves).strip()), "releves", "must name a relevé table", self.releves)
        check(Path(self.out).suffix != "", "out", "needs a file name such as adapter.pt", str(self.out))
        if self.split.folds and self.resume:
            raise InvalidInputError(
                f"{param('resume')} continues one adapter; a cross-fitted run ({param('folds')}) is retrained "
                "from the start (training is cheap once the backbone features are cached)")


def TrainOptions(**options) -> TrainJobConfig:  # noqa: N802 - the flat form callers know, kept by name
    """A :class:`TrainJobConfig` from flat keyword options (``releves``, ``imagery``, ``out`` and any field of
    the nested groups, e.g. ``epochs``, ``views``, ``folds``, ``center_store``): ``build(TrainJobConfig, ...)``."""
    return build(TrainJobConfig, **options)
