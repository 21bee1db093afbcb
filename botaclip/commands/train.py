"""`botaclip train`: train the BotaCLIP adapter on relevés and imagery.

Options map one to one onto the fields of :class:`botaclip.pipeline.train_config.TrainJobConfig` and its groups
(``--adapter`` is ``adapter``, ``--cover`` is ``cover_transform``, ``--no-center`` is ``center=False``); their
defaults are read from there.
"""

from __future__ import annotations

import click

from botaclip.config import default
from botaclip.model.train_config import ADAPTER_KINDS, COVER_TRANSFORMS, OBJECTIVES
from botaclip.pipeline.stac_source import SORTS
from botaclip.pipeline.train_config import TrainJobConfig


def _default(name: str):
    """The default of TrainJobConfig field ``name`` (at any depth): what the option shows with --help."""
    return default(TrainJobConfig, name)



@click.command("train")
@click.option("--releves", required=True, type=click.Path(dir_okay=False),
              help="Relevé table (CSV/TSV, Parquet, GeoPackage): long (relevé id, species, cover %) or wide (one "
                   "column per species); Darwin Core names accepted.")
@click.option("--imagery", multiple=True, type=click.Path(dir_okay=False),
              help="Raster file(s) chips are cut from, or http(s) URLs / /vsicurl/ paths of COGs (read with range "
                   "requests); repeat the option for a mosaic (earlier files win).")
@click.option("--stac", default=_default("stac"),
              help="Imagery from STAC instead of --imagery: an item, ItemCollection or saved search (JSON file or "
                   "URL); its wavelengths replace --bands. Needs botaclip[stac].")
@click.option("--assets", default=_default("assets"), help="With --stac: the asset keys to read, in band order.")
@click.option("--sort", default=_default("sort"), show_default=True, type=click.Choice(SORTS),
              help="With --stac: mosaic order, most recent or least cloudy item first.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (e.g. adapter.pt); the per-epoch log goes next to it as .jsonl.")
@click.option("--plots", default=_default("plots"), type=click.Path(dir_okay=False),
              help="Plots table (relevé id + coordinates) when the relevé table has no coordinates.")
@click.option("--crs", default=_default("crs"), help="CRS of plain x/y coordinate columns, e.g. EPSG:2154 (lat/lon columns "
                                         "and geometries need none).")
@click.option("--backbone", default=_default("backbone"), show_default=True,
              help="Frozen backbone: dofa-small, dofa-base, dofa-large (dofa-tiny for tests).")
@click.option("--weights", default=_default("weights"), type=click.Path(dir_okay=False),
              help="Backbone checkpoint (see `botaclip weights download`); without it the backbone is random.")
@click.option("--objective", default=_default("objective"), show_default=True,
              type=click.Choice(OBJECTIVES),
              help="contrastive (BotaCLIP: SigLIP against a relevé encoder) or supervised (BotaSP: a linear "
                   "multi-label species head with binary cross-entropy); both with the same adapter and R.")
@click.option("--folds", default=_default("folds"), show_default=True, type=int,
              help="Cross-fit: also train one adapter per fold of whole H3 blocks (--block-res) of relevés, each "
                   "never seeing its fold (K >= 2; 0: off). `botaclip index` then writes a companion set per fold.")
@click.option("--embed-dim", default=_default("embed_dim"), type=int,
              help="Dimension E of the shared space [default: the backbone's, so the adapter starts as identity].")
@click.option("--epochs", default=_default("epochs"), show_default=True, type=int, help="Maximum number of epochs.")
@click.option("--batch-size", default=_default("batch_size"), show_default=True, type=int, help="Pairs per training batch.")
@click.option("--lr", default=_default("lr"), show_default=True, type=float,
              help="AdamW learning rate (docs/training.md: the ablation behind the default).")
@click.option("--weight-decay", default=_default("weight_decay"), show_default=True, type=float, help="AdamW weight decay.")
@click.option("--lambda-reg", default=_default("lambda_reg"), show_default=True, type=float,
              help="Weight of the geometry regulariser R (0 turns it off).")
@click.option("--k-neighbors", default=_default("k_neighbors"), type=int,
              help="Restrict R to each sample's k nearest backbone neighbours in the batch [default: all pairs].")
@click.option("--init-temperature", default=_default("init_temperature"), show_default=True, type=float,
              help="SigLIP temperature t = exp(t') at the start (learned).")
@click.option("--init-bias", default=_default("init_bias"), show_default=True, type=float, help="SigLIP bias b at the start (learned).")
@click.option("--no-center", "center", flag_value=False, default=_default("center"),
              help="Do not centre the adapter's input (the first demo's setting; see docs/training.md).")
@click.option("--center-store", default=_default("center_store"), type=click.Path(file_okay=False),
              help="Centre the adapter's input by the mean vector of this store's backbone feature set made with "
                   "the same backbone and chips [default: the mean of the relevés' chips].")
@click.option("--center-set", default=_default("center_set"), help="The backbone feature set of --center-store to centre by.")
@click.option("--views", default=_default("views"), show_default=True, type=int,
              help="Augmented views cached per chip (1 = no augmentation).")
@click.option("--adapter", "adapter", default=_default("adapter"), show_default=True, type=click.Choice(ADAPTER_KINDS),
              help="Image adapter: linear (identity-initialised) or mlp (residual, for ablations).")
@click.option("--cover", "cover_transform", default=_default("cover_transform"), show_default=True,
              type=click.Choice(COVER_TRANSFORMS), help="Relevé encoder input: log(1 + cover %) or presence.")
@click.option("--min-plots", default=_default("min_plots"), show_default=True, type=int,
              help="Keep species seen in at least this many training plots.")
@click.option("--val-fraction", default=_default("val_fraction"), show_default=True, type=float,
              help="Share of relevés held out for validation (whole spatial blocks).")
@click.option("--block-res", default=_default("block_res"), show_default=True, type=int,
              help="H3 resolution of the validation (and --folds) blocks (8: about 0.7 km2; smaller = larger "
                   "blocks).")
@click.option("--patience", default=_default("patience"), show_default=True, type=int,
              help="Stop after this many epochs without a better validation loss.")
@click.option("--seed", default=_default("seed"), show_default=True, type=int, help="Seed of initialisation, split, views, batches.")
@click.option("--device", default=_default("device"), show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--chip-m", default=_default("chip_m"), show_default=True, type=float, help="Chip side in metres.")
@click.option("--size-px", default=_default("size_px"), show_default=True, type=int, help="Chip side in pixels (multiple of 16).")
@click.option("--bands", default=_default("bands"), show_default=True, help="Band preset of the imagery (rgb, rgbn, ...).")
@click.option("--min-valid", default=_default("min_valid"), show_default=True, type=float,
              help="Skip relevés whose chip has a smaller fraction of valid pixels.")
@click.option("--cache-dir", default=_default("cache_dir"), type=click.Path(file_okay=False),
              help="Folder of the backbone-feature cache [default: next to --out].")
@click.option("--resume", default=_default("resume"), type=click.Path(dir_okay=False),
              help="Continue training from this checkpoint (same data and backbone) up to --epochs.")
def train(**options) -> None:
    """Train the BotaCLIP adapter: caches frozen-backbone embeddings of each relevé's chip, then fits the adapter
    and relevé encoder (SigLIP + lambda * R) with a spatial-block validation split and early stopping.

    Reproduces the paper's variants with --lambda-reg 0, --views 1, --adapter mlp, and its supervised baseline
    BotaSP with --objective supervised. --folds K cross-fits K more adapters for leakage-free SDMs.
    """
    from botaclip.config import build
    from botaclip.pipeline.train import format_summary, train_botaclip
    from botaclip.progress import Echo

    config = build(TrainJobConfig, **options)
    report = train_botaclip(config, progress=Echo(lambda line: click.echo(line, err=True)))
    click.echo(format_summary(report))
