"""`botaclip store diagnose`: embedding-space diagnostics of feature sets in a store (parse, call, print).

Options map one to one onto the fields of :class:`botaclip.diagnostics.config.DiagnoseConfig` (``--labels`` is
``labels``, ``--out`` is ``out_dir``); their defaults are read from there.
"""

from __future__ import annotations

import click

from botaclip.config import default
from botaclip.diagnostics.config import DiagnoseConfig


def _default(name: str):
    """The default of DiagnoseConfig field ``name``: what the option shows with --help."""
    return default(DiagnoseConfig, name)



@click.command("diagnose")
@click.argument("store_path", metavar="STORE", type=click.Path(path_type=str))
@click.option(
    "--feature-sets", "-f", default=None, metavar="A,B,...",
    help="Comma-separated feature sets to compare on their common cells; the first is the reference for "
         "'geometry kept'. Default: every feature set but SDM predictions, backbones first.",
)
@click.option(
    "--labels", "labels", default=_default("labels"), type=click.Path(dir_okay=False, path_type=str),
    help="CSV or Parquet file of per-cell or per-point labels (an h3 column, uint64 or hex, or latitude/longitude "
         "columns in degrees), e.g. the sample region's cells.parquet. Enables Davies-Bouldin, silhouette and kNN.",
)
@click.option("--label-col", default=_default("label_col"), show_default=True, help="Column of the labels file holding the class.")
@click.option(
    "--sample", default=_default("sample"), show_default=True, type=click.IntRange(min=2),
    help="Cells drawn (fixed seed) for the diagnostics; bounds time and memory on large stores.",
)
@click.option("--seed", default=_default("seed"), show_default=True, type=int, help="Random seed of the cell and pair samples.")
@click.option("--k", "k", default=_default("k"), show_default=True, type=click.IntRange(min=1),
              help="Neighbours for kNN accuracy and neighbourhood overlap.")
@click.option("--centered", is_flag=True, default=_default("centered"),
              help="Centred cosine: subtract each set's mean vector (kept in the catalog) before comparing; raw "
                   "cosine over a nearly collinear set is about 1 everywhere.")
@click.option(
    "--out", "out_dir", default=_default("out_dir"), type=click.Path(file_okay=False, path_type=str),
    help="Directory for diagnostics.json, diagnostics.md and the PNG figures (created if missing).",
)
def diagnose(store_path, feature_sets, **options) -> None:
    """Embedding-space diagnostics: label separation, geometry kept, spatial smoothness, per feature set.

    Prints one table (feature set x diagnostic): Davies-Bouldin index, silhouette (cosine) and leave-one-out kNN
    accuracy when --labels is given; Spearman correlation of pairwise cosine distances and kNN-neighbourhood
    overlap against the first feature set; Moran's I of the first three principal components over H3 neighbours;
    effective dimensionality (participation ratio of the PCA spectrum) and the first component's share.
    """
    from botaclip.config import build
    from botaclip.diagnostics import diagnose as run_diagnostics
    from botaclip.progress import Echo
    from botaclip.store import Store

    config = build(DiagnoseConfig, **options)
    names = [n.strip() for n in feature_sets.split(",") if n.strip()] if feature_sets is not None else None
    store = Store.open(store_path, read_only=True)
    report = run_diagnostics(store, names, config, progress=Echo(tqdm=True))
    out_dir = config.out_dir
    for line in report.summary_lines():
        click.echo(line)
    click.echo("")
    click.echo(report.to_table())
    click.echo("")
    click.echo(report.key())
    if out_dir is not None:
        click.echo(f"\nwrote {out_dir}/diagnostics.json, diagnostics.md and {len(report.figures)} figures")
