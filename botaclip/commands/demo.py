"""`botaclip demo`: the paper's comparison end to end on the built-in sample region."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True,
              help="Folder for the sample region, the store, the adapter, the reports and the maps.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="DOFA checkpoint for --backbone (see `botaclip weights download`); default: random init.")
@click.option("--backbone", default="dofa-small", show_default=True,
              type=click.Choice(["dofa-tiny", "dofa-small", "dofa-base", "dofa-large"]), help="Backbone size.")
@click.option("--size-km", type=float, default=5.0, show_default=True, help="Side of the sample region (km).")
@click.option("--plots", type=int, default=2000, show_default=True, help="Relevés in the sample region.")
@click.option("--size-px", type=int, default=112, show_default=True,
              help="Chip side in pixels (100 m chips); 224 as in the paper is about 4x slower on a CPU.")
@click.option("--views", type=int, default=1, show_default=True, help="Augmented views per relevé for training.")
@click.option("--epochs", type=int, default=100, show_default=True, help="Maximum training epochs.")
@click.option("--batch-size", type=int, default=512, show_default=True, help="Training batch size (relevés).")
@click.option("--plant-species", type=int, default=15, show_default=True,
              help="Plant species compared (those of intermediate prevalence).")
@click.option("--model", type=click.Choice(["lightgbm", "rf", "logistic"]), default="logistic", show_default=True,
              help="SDM algorithm; the tree models are several times slower on a CPU.")
@click.option("--folds", type=int, default=5, show_default=True,
              help="Spatial-block folds of the SDMs, and cross-fitting folds of the adapters.")
@click.option("--seeds", type=int, default=3, show_default=True,
              help="Training seeds: each trains both adapters (and their fold adapters) and draws the SDM folds "
                   "again; the report gives mean +- sd over seeds.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the region and the backbone, and the first training seed.")
def demo(out: Path, weights: str | None, backbone: str, size_km: float, plots: int, size_px: int, views: int,
         epochs: int, batch_size: int, plant_species: int, model: str, folds: int, seeds: int, device: str,
         seed: int) -> None:
    """Run the whole pipeline on the sample region and compare raw DOFA, BotaSP and BotaCLIP features (the paper's
    Table 1).

    Makes the sample region, indexes it with the backbone, trains BotaSP and BotaCLIP on the relevés (cross-fitted
    on spatial blocks, for --seeds seeds), derives the adapted feature sets, then compares the three on plants
    (presence-absence, TSS), butterflies (presence-only, Boyce index) and soil groups (abundance, Spearman rho) on
    identical spatial folds, with no relevé scoring a model built on an adapter that saw it. Writes OUT/report.md,
    OUT/report.json and maps in OUT/maps.
    """
    from botaclip.pipeline.demo import DemoOptions, run_demo

    options = DemoOptions(out=out, weights=weights, backbone=backbone, seed=seed, size_km=size_km, plots=plots,
                          size_px=size_px, views=views, epochs=epochs, batch_size=batch_size,
                          plant_species=plant_species, model=model, folds=folds, seeds=seeds, device=device)
    run_demo(options, echo=lambda line: click.echo(line, err=True))
