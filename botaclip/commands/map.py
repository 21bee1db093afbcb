"""`botaclip map`: an interactive, self-contained HTML map page of a store's layers."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("map")
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
@click.option("--layer", "layers", multiple=True, required=True, metavar="NAME[:COLUMN]",
              help="A feature set to draw, repeatable: NAME:COLUMN for one column of a covariate or prediction "
                   "set (NAME alone if it has one column); an embedding set NAME is drawn as its first three "
                   "principal components in red, green, blue (NAME:e5: one dimension).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The page to write (.html). It carries its data and JavaScript: opens offline, no basemap.")
@click.option("--title", default=None, help="Page title [default: the store's name].")
@click.option("--max-cells", type=click.IntRange(min=1), default=300_000, show_default=True,
              help="Above this many cells, merge cells into their parents (mean value) to keep the page light.")
def map_cmd(store: Path, layers: tuple[str, ...], out: Path, title: str | None, max_cells: int) -> None:
    """Write an HTML map of H3 cells coloured by predictions, covariates or embedding components: pan, zoom,
    hover a cell for its values; a legend per layer. Link to a cell with #layer=NAME&cell=H3HEX."""
    from botaclip.errors import InvalidInputError, param
    from botaclip.mapview import store_layer, write_map_page
    from botaclip.store import Store

    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"{param('out')} {out}: a map page is an .html file")
    st = Store.open(store, read_only=True)
    drawn = [store_layer(st, text) for text in layers]
    r = write_map_page(drawn, out, title or f"botaclip: {Path(store).name}", max_cells=max_cells)
    merged = f" (merged to resolution {r['merged_to']})" if r["merged_to"] is not None else ""
    click.echo(f"wrote {r['path']}: {r['cells']} cells{merged}, layers {', '.join(r['layers'])}, "
               f"{r['bytes'] / 1e6:.2f} MB")
