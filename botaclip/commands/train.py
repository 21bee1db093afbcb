"""`botaclip train`: train the BotaCLIP adapter on relevés and imagery."""

from __future__ import annotations

import click


@click.command("train")
@click.option("--releves", required=True, type=click.Path(dir_okay=False),
              help="Relevé table (CSV/TSV, Parquet, GeoPackage): long (relevé id, species, cover %) or wide (one "
                   "column per species); Darwin Core names accepted.")
@click.option("--imagery", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Raster file(s) chips are cut from; repeat the option for a mosaic (earlier files win).")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (e.g. adapter.pt); the per-epoch log goes next to it as .jsonl.")
@click.option("--plots", default=None, type=click.Path(dir_okay=False),
              help="Plots table (relevé id + coordinates) when the relevé table has no coordinates.")
@click.option("--crs", default=None, help="CRS of plain x/y coordinate columns, e.g. EPSG:2154 (lat/lon columns "
                                         "and geometries need none).")
@click.option("--backbone", default="dofa-base", show_default=True,
              help="Frozen backbone: dofa-small, dofa-base, dofa-large (dofa-tiny for tests).")
@click.option("--weights", default=None, type=click.Path(dir_okay=False),
              help="Backbone checkpoint (see `botaclip weights download`); without it the backbone is random.")
@click.option("--objective", default="contrastive", show_default=True,
              type=click.Choice(["contrastive", "supervised"]),
              help="contrastive (BotaCLIP: SigLIP against a relevé encoder) or supervised (BotaSP: a linear "
                   "multi-label species head with binary cross-entropy); both with the same adapter and R.")
@click.option("--folds", default=0, show_default=True, type=int,
              help="Cross-fit: also train one adapter per fold of whole H3 blocks (--block-res) of relevés, each "
                   "never seeing its fold (K >= 2; 0: off). `botaclip index` then writes a companion set per fold.")
@click.option("--embed-dim", default=None, type=int,
              help="Dimension E of the shared space [default: the backbone's, so the adapter starts as identity].")
@click.option("--epochs", default=100, show_default=True, type=int, help="Maximum number of epochs.")
@click.option("--batch-size", default=512, show_default=True, type=int, help="Pairs per training batch.")
@click.option("--lr", default=1e-2, show_default=True, type=float,
              help="AdamW learning rate (docs/training.md: the ablation behind the default).")
@click.option("--weight-decay", default=1e-4, show_default=True, type=float, help="AdamW weight decay.")
@click.option("--lambda-reg", default=1.0, show_default=True, type=float,
              help="Weight of the geometry regulariser R (0 turns it off).")
@click.option("--k-neighbors", default=None, type=int,
              help="Restrict R to each sample's k nearest backbone neighbours in the batch [default: all pairs].")
@click.option("--init-temperature", default=10.0, show_default=True, type=float,
              help="SigLIP temperature t = exp(t') at the start (learned).")
@click.option("--init-bias", default=-10.0, show_default=True, type=float, help="SigLIP bias b at the start (learned).")
@click.option("--no-center", "no_center", is_flag=True,
              help="Do not centre the adapter's input (the first demo's setting; see docs/training.md).")
@click.option("--center-store", default=None, type=click.Path(file_okay=False),
              help="Centre the adapter's input by the mean vector of this store's backbone feature set made with "
                   "the same backbone and chips [default: the mean of the relevés' chips].")
@click.option("--center-set", default=None, help="The backbone feature set of --center-store to centre by.")
@click.option("--views", default=4, show_default=True, type=int,
              help="Augmented views cached per chip (1 = no augmentation).")
@click.option("--adapter", "adapter_kind", default="linear", show_default=True, type=click.Choice(["linear", "mlp"]),
              help="Image adapter: linear (identity-initialised) or mlp (residual, for ablations).")
@click.option("--cover", "cover_transform", default="log1p", show_default=True,
              type=click.Choice(["log1p", "presence"]), help="Relevé encoder input: log(1 + cover %) or presence.")
@click.option("--min-plots", default=5, show_default=True, type=int,
              help="Keep species seen in at least this many training plots.")
@click.option("--val-fraction", default=0.2, show_default=True, type=float,
              help="Share of relevés held out for validation (whole spatial blocks).")
@click.option("--block-res", default=8, show_default=True, type=int,
              help="H3 resolution of the validation (and --folds) blocks (8: about 0.7 km2; smaller = larger "
                   "blocks).")
@click.option("--patience", default=10, show_default=True, type=int,
              help="Stop after this many epochs without a better validation loss.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of initialisation, split, views, batches.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--chip-m", default=100.0, show_default=True, type=float, help="Chip side in metres.")
@click.option("--size-px", default=224, show_default=True, type=int, help="Chip side in pixels (multiple of 16).")
@click.option("--bands", default="rgbn", show_default=True, help="Band preset of the imagery (rgb, rgbn, ...).")
@click.option("--min-valid", default=0.8, show_default=True, type=float,
              help="Skip relevés whose chip has a smaller fraction of valid pixels.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Folder of the backbone-feature cache [default: next to --out].")
@click.option("--resume", default=None, type=click.Path(dir_okay=False),
              help="Continue training from this checkpoint (same data and backbone) up to --epochs.")
def train(releves, imagery, out, plots, crs, backbone, weights, objective, folds, embed_dim, epochs, batch_size, lr,
          weight_decay, lambda_reg, k_neighbors, init_temperature, init_bias, no_center, center_store, center_set,
          views, adapter_kind, cover_transform, min_plots, val_fraction, block_res, patience, seed, device, chip_m,
          size_px, bands, min_valid, cache_dir, resume) -> None:
    """Train the BotaCLIP adapter: caches frozen-backbone embeddings of each relevé's chip, then fits the adapter
    and relevé encoder (SigLIP + lambda * R) with a spatial-block validation split and early stopping.

    Reproduces the paper's variants with --lambda-reg 0, --views 1, --adapter mlp, and its supervised baseline
    BotaSP with --objective supervised. --folds K cross-fits K more adapters for leakage-free SDMs.
    """
    from botaclip.pipeline.train import TrainOptions, format_summary, train_botaclip

    options = TrainOptions(
        releves=releves, imagery=list(imagery), out=out, plots=plots, crs=crs, backbone=backbone, weights=weights,
        objective=objective, folds=folds, init_temperature=init_temperature, init_bias=init_bias,
        center=not no_center, center_store=center_store, center_set=center_set, embed_dim=embed_dim, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        lambda_reg=lambda_reg, k_neighbors=k_neighbors, views=views, adapter=adapter_kind,
        cover_transform=cover_transform, min_plots=min_plots, val_fraction=val_fraction, block_res=block_res,
        patience=patience, seed=seed, device=device, chip_m=chip_m, size_px=size_px, bands=bands,
        min_valid=min_valid, cache_dir=cache_dir, resume=resume,
    )
    report = train_botaclip(options, echo=lambda line: click.echo(line, err=True))
    click.echo(format_summary(report))
