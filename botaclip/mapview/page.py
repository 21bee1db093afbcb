"""A self-contained HTML page of map layers: hexagons projected in Python (local UTM, metres), packed as compact
binary (int32 centres, int16 vertex offsets, float32 values), deflated and base64-encoded into the page; a small
canvas renderer (``template.html``, package data) draws them with pan, zoom, hover values and a legend.

Nothing is loaded from the network: no basemap, no CDN; the page works offline from a file:// URL. It needs a
browser with ``DecompressionStream`` (Chrome/Edge 80+, Firefox 113+, Safari 16.4+).
"""

from __future__ import annotations

import base64
import html
import json
import time
import zlib
from importlib import resources
from pathlib import Path

import numpy as np

from botaclip.atomic import atomic_write
from botaclip.errors import InvalidInputError, MissingFileError, param
from botaclip.mapview.layers import MapLayer
from botaclip.store.outputs import check_output_path

MAX_CELLS = 300_000  # above, cells are merged into parents: about 10 MB of page and a second to draw
QUANTA_PER_EDGE = 64  # coordinate quantum: 1/64 of an H3 edge (about 0.15 m at resolution 12)
RAMP_STEPS = 256


def _ramp() -> str:
    """viridis in RAMP_STEPS colours, as one hex string (6 characters a colour)."""
    from matplotlib import colormaps

    rgb = (colormaps["viridis"](np.linspace(0, 1, RAMP_STEPS))[:, :3] * 255).round().astype(np.uint8)
    return rgb.tobytes().hex()


def _geometry(cells: np.ndarray) -> tuple[dict, dict[str, np.ndarray]]:
    """Meta (crs, origin, quantum) and arrays (centres int32[n, 2], vertex counts uint8[n], vertex offsets
    int16[m, 2]) of the hexagons of ``cells`` in the local UTM zone, in quanta from the origin."""
    import h3 as h3lib
    from pyproj import Transformer

    from botaclip.sdm.cells import cell_boundaries, cells_to_latlng, resolution_of
    from botaclip.sdm.maps import utm_crs

    lat, lng = cells_to_latlng(cells)
    crs = utm_crs(float(np.median(lat)), float(np.median(lng)))
    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    res = int(resolution_of(cells[:1])[0])
    quantum = h3lib.average_hexagon_edge_length(int(resolution_of(cells).max()), unit="m") / QUANTA_PER_EDGE
    cx, cy = fwd.transform(lng, lat)
    x0, y0 = float(np.min(cx)), float(np.min(cy))
    centres = np.column_stack([np.round((cx - x0) / quantum), np.round((cy - y0) / quantum)]).astype(np.int32)
    rings = cell_boundaries(cells)
    counts = np.array([len(r) for r in rings], dtype=np.uint8)
    flat = np.concatenate(rings)
    vx, vy = fwd.transform(flat[:, 1], flat[:, 0])
    base = np.repeat(centres, counts, axis=0)
    offsets = np.column_stack([np.round((vx - x0) / quantum), np.round((vy - y0) / quantum)]) - base
    if np.abs(offsets).max() > 32000:
        raise InvalidInputError("cells of very different resolutions cannot share one map page")
    meta = {"crs": crs, "x0": x0, "y0": y0, "quantum": quantum, "resolution": res,
            "edge_m": quantum * QUANTA_PER_EDGE}
    return meta, {"centres": centres, "counts": counts, "offsets": offsets.astype(np.int16)}


def _pack(arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
    """Concatenate arrays (each 8-byte aligned, little endian), deflate, base64: (text, {name: [offset, dtype,
    length]})."""
    index, parts, pos = {}, [], 0
    for name, arr in arrays.items():
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        index[name] = [pos, arr.dtype.name, int(arr.size)]
        pad = (-len(raw)) % 8
        parts.append(raw + b"\0" * pad)
        pos += len(raw) + pad
    return base64.b64encode(zlib.compress(b"".join(parts), 6)).decode("ascii"), index


def _fit_cells(layers: list[MapLayer], max_cells: int) -> tuple[list[MapLayer], np.ndarray, int | None]:
    """(layers, their cells' union, the resolution merged to or None): cells merged into parents (mean values)
    until at most ``max_cells`` remain."""
    from botaclip.mapview.layers import coarsen_layer
    from botaclip.sdm.cells import resolution_of

    cells = np.unique(np.concatenate([layer.h3 for layer in layers]))
    res = int(resolution_of(cells).max())
    merged = None
    while cells.size > max_cells and res > 0:
        res -= 1
        layers = [coarsen_layer(layer, res) for layer in layers]
        cells = np.unique(np.concatenate([layer.h3 for layer in layers]))
        merged = res
    return layers, cells, merged


def build_map_page(layers: list[MapLayer], title: str = "botaclip map",
                   max_cells: int = MAX_CELLS) -> tuple[str, dict]:
    """The HTML text of a page showing ``layers`` (the first shown first) and a summary (cells, layers,
    merged_to: the resolution cells were merged to when there were more than ``max_cells``, else None)."""
    if not layers:
        raise InvalidInputError(f"nothing to draw: give at least one {param('layer')}")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{param('layer')} names a layer twice: {', '.join(names)}")
    layers, cells, merged = _fit_cells(layers, max_cells)
    meta, arrays = _geometry(cells)
    meta["merged"] = merged is not None
    arrays["h3"] = cells
    layer_meta = []
    for i, layer in enumerate(layers):
        values = layer.values.reshape(len(layer.h3), -1)
        full = np.full((cells.size, values.shape[1]), np.nan, np.float32)
        full[np.searchsorted(cells, layer.h3)] = values
        for j in range(values.shape[1]):
            arrays[f"v{i}_{j}"] = full[:, j].copy()
        layer_meta.append({"name": layer.name, "label": layer.label or layer.name, "legend": layer.legend,
                           "vmin": layer.vmin, "vmax": layer.vmax, "note": layer.note, "bands": values.shape[1],
                           "cells": int(np.isfinite(values[:, 0]).sum())})
    blob, index = _pack(arrays)
    meta |= {"n": int(cells.size), "layers": layer_meta, "index": index, "ramp": _ramp(), "title": title}
    template = resources.files("botaclip.mapview").joinpath("template.html").read_text(encoding="utf-8")
    page = (template.replace("__TITLE__", html.escape(title))
            .replace("/*__META__*/null", json.dumps(meta, separators=(",", ":")).replace("</", "<\\/"))
            .replace("__BLOB__", blob))
    return page, {"cells": int(cells.size), "layers": names, "crs": meta["crs"], "merged_to": merged}


def write_map_page(layers: list[MapLayer], out: str | Path, title: str = "botaclip map",
                   max_cells: int = MAX_CELLS) -> dict:
    """Write the page of ``layers`` to ``out`` (.html, atomically); returns cells, layers, bytes, seconds."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InvalidInputError(f"{param('out')} {out}: a map page is an .html file")
    if not out.parent.exists():
        raise MissingFileError(f"{param('out')} {out}: folder {out.parent} does not exist")
    check_output_path(out, what=param("out"))
    started = time.perf_counter()
    page, summary = build_map_page(layers, title, max_cells)
    atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"), suffix=".html")
    return summary | {"path": str(out), "bytes": out.stat().st_size,
                      "seconds": round(time.perf_counter() - started, 2)}
