"""`botaclip sample`: build the built-in synthetic sample region."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.group()
def sample() -> None:
    """Build the built-in synthetic sample region (an alpine valley with known species)."""


@sample.command("make")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory to create (must not exist, or be empty).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed; same seed, same files.")
@click.option("--size-km", default=5.0, show_default=True, type=float,
              help="Side of the square region in km (0.5 to 20; 1 m pixels).")
@click.option("--plots", default=2000, show_default=True, type=int, help="Number of vegetation plots (relevés).")
@click.option("--overwrite", is_flag=True, help="Replace an existing sample region at --out.")
def make(out_dir: Path, seed: int, size_km: float, plots: int, overwrite: bool) -> None:
    """Write the sample region: orthophoto, DEM, habitats, relevés, butterflies, soil fauna and the truth.

    Deterministic: the same --seed, --size-km and --plots give identical tables and pixels. The README in the
    output directory describes every file.
    """
    from botaclip.sample import make_sample

    start = time.perf_counter()
    region = make_sample(out_dir, seed=seed, size_km=size_km, plots=plots, overwrite=overwrite)
    counts = region.metadata()["counts"]
    click.echo(
        f"sample region written to {region.root} in {time.perf_counter() - start:.1f} s: "
        f"{size_km:g} km x {size_km:g} km at 1 m, {counts['plots']} plots, {counts['plants']} plant species, "
        f"{counts['butterfly_records']} butterfly records, {counts['soil_sites']} soil sites, "
        f"{counts['cells']} H3 cells (see {region.readme})"
    )
