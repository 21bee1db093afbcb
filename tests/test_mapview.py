"""`botaclip map` and botaclip.mapview: the self-contained HTML map page, read back from Python and drawn by a
real headless browser (Debian's chromium; CI installs it and sets BOTACLIP_REQUIRE_BROWSER=1)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import zlib

import h3.api.basic_int as h3i
import numpy as np
import pytest
from cli_checks import one_line_error

from botaclip.cli import cli
from botaclip.errors import InvalidInputError
from botaclip.mapview import build_map_page, pca_layer, store_layer, values_layer, write_map_page
from botaclip.mapview.layers import HIGH_PCT, LOW_PCT

TYPES = {"int32": np.int32, "int16": np.int16, "uint8": np.uint8, "float32": np.float32, "uint64": np.uint64}


def read_page(page: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(META, arrays) embedded in a map page, decoded as the page's JavaScript does."""
    meta = json.loads(re.search(r"const META = (\{.*?\});\n", page).group(1))
    blob = zlib.decompress(base64.b64decode(re.search(r'const BLOB = "([A-Za-z0-9+/=]*)";', page).group(1)))
    arrays = {k: np.frombuffer(blob, TYPES[dt], count=n, offset=off) for k, (off, dt, n) in meta["index"].items()}
    return meta, arrays


def test_page_embeds_every_cell_value_and_legend(two_sets, tmp_path):
    store, cells = two_sets
    cov = store_layer(store, "cov:a")
    emb = store_layer(store, "emb")
    r = write_map_page([cov, emb], tmp_path / "m.html", title="two <sets>")
    page = (tmp_path / "m.html").read_text()
    meta, a = read_page(page)
    assert r["cells"] == meta["n"] == len(cells) and r["bytes"] == (tmp_path / "m.html").stat().st_size
    np.testing.assert_array_equal(a["h3"], np.sort(cells))
    fm = store.features_numpy("cov")
    by_cell = dict(zip(fm.h3.tolist(), fm.X[:, 0].tolist()))
    np.testing.assert_allclose(a["v0_0"], [by_cell[c] for c in a["h3"].tolist()], rtol=1e-6)
    # Legend: a covariate spans its 2nd..98th percentiles; the embedding's three components as RGB.
    m0, m1 = meta["layers"]
    assert m0["legend"] == "ramp" and m0["name"] == "cov:a"
    np.testing.assert_allclose([m0["vmin"][0], m0["vmax"][0]], np.percentile(fm.X[:, 0], [LOW_PCT, HIGH_PCT]),
                               rtol=1e-5)
    assert m1["legend"] == "rgb" and m1["bands"] == 3 and "of the variance" in m1["note"]
    assert np.isfinite(a["v1_2"]).all() and len(m1["vmin"]) == 3
    # Hexagons: each cell's vertices are its H3 boundary projected to the page's CRS (metres).
    counts = a["counts"]
    starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]])
    assert set(counts.tolist()) == {6}
    from pyproj import Transformer

    fwd = Transformer.from_crs("EPSG:4326", meta["crs"], always_xy=True)
    for i in (0, 17, len(cells) - 1):
        xy = (a["centres"][2 * i: 2 * i + 2] + a["offsets"].reshape(-1, 2)[starts[i]: starts[i] + 6]) * meta["quantum"]
        ring = np.array(h3i.cell_to_boundary(int(a["h3"][i])))
        x, y = fwd.transform(ring[:, 1], ring[:, 0])
        # within one quantum (1/64 of an edge): rounding of the centre and of the offset
        np.testing.assert_allclose(xy + [meta["x0"], meta["y0"]], np.column_stack([x, y]), atol=meta["quantum"])
    # Self-contained: no script, style or image from anywhere; the title is escaped.
    assert not re.search(r"https?://|<script[^>]+src=|<link|@import|url\(", page)
    assert "<title>two &lt;sets&gt;</title>" in page


def test_layers_ranges_presence_and_merging(two_sets):
    _, cells = two_sets
    rng = np.random.default_rng(1)
    suit = values_layer("suitability", cells, rng.uniform(0.2, 0.7, len(cells)), "suitability")
    assert suit.vmin == [0.0] and suit.vmax == [1.0]
    pres = values_layer("presence", cells, (rng.random(len(cells)) > 0.5).astype(np.uint8), "presence")
    assert pres.legend == "presence"
    values = np.arange(len(cells), dtype=float)
    values[:5] = np.nan  # cells without a value are kept out of the means
    page, summary = build_map_page([values_layer("x", cells, values)], max_cells=50)
    meta, a = read_page(page)
    assert summary["merged_to"] is not None and meta["merged"] and meta["n"] <= 50
    parents = np.array([h3i.cell_to_parent(int(c), summary["merged_to"]) for c in cells], dtype=np.uint64)
    first = a["h3"][0]
    np.testing.assert_allclose(a["v0_0"][0], np.nanmean(values[parents == first]), rtol=1e-6)
    ramp = np.arange(len(cells), dtype=float) / 10
    scores = pca_layer("e", cells, np.column_stack([ramp, rng.normal(size=(len(cells), 3))]))
    assert "PC1 9" in scores.note  # the ramp dominates the variance


def test_bad_input_is_one_line(two_sets, tmp_path, cli_runner):
    store, _ = two_sets
    with store.writer("cov2", kind="covariates", columns=["a", "b"]) as w:
        w.write(np.array([], dtype=np.uint64), columns={"a": np.array([]), "b": np.array([])})
    s, out = str(store.path), str(tmp_path / "m.html")
    one_line_error(cli_runner, ["map", s, "--layer", "nope", "--out", out], "no feature set 'nope'")
    one_line_error(cli_runner, ["map", s, "--layer", "cov:zz", "--out", out], "has no column 'zz' (columns: a)")
    one_line_error(cli_runner, ["map", s, "--layer", "emb:e8", "--out", out], "has no column 'e8' (columns: e0 … e7)")
    one_line_error(cli_runner, ["map", s, "--layer", "cov2", "--out", out], "pick one as cov2:COLUMN")
    one_line_error(cli_runner, ["map", s, "--layer", "cov2:a", "--out", out], "feature set 'cov2' holds no cells")
    one_line_error(cli_runner, ["map", s, "--layer", "cov:", "--out", out], "give NAME or NAME:column")
    one_line_error(cli_runner, ["map", s, "--layer", "cov", "--out", str(tmp_path / "m.png")], "a map page is an .html file")
    one_line_error(cli_runner, ["map", s, "--layer", "cov", "--out", str(tmp_path / "no" / "m.html")], "does not exist")
    one_line_error(cli_runner, ["map", s, "--layer", "cov", "--layer", "cov:a", "--out", out], "names a layer twice")
    assert not (tmp_path / "m.html").exists()
    with pytest.raises(InvalidInputError, match="no cells to draw"):
        values_layer("x", np.array([], np.uint64), np.array([]))
    with pytest.raises(InvalidInputError, match="no finite value"):
        values_layer("x", np.array([h3i.latlng_to_cell(45, 6, 9)], np.uint64), np.array([np.nan]))


def test_map_cli_and_demo_page(two_sets, tmp_path, cli_runner):
    from botaclip.pipeline.demo_maps import interactive_map

    store, cells = two_sets
    r = cli_runner.invoke(cli, ["map", str(store.path), "--layer", "emb", "--layer", "cov", "--out",
                                str(tmp_path / "m.html")])
    assert r.exit_code == 0, r.output + r.stderr
    assert f"{len(cells)} cells" in r.output and "layers emb, cov:a" in r.output
    example = {"species": "Alpha prima", "h3": cells[:50], "truth": np.linspace(0, 1, 50),
               "pred": {"BotaCLIP": np.linspace(0.1, 0.9, 50)}, "rho": {"BotaCLIP": 0.9}}
    interactive_map(store, ["emb", "cov"], example, tmp_path / "demo.html")
    meta, _ = read_page((tmp_path / "demo.html").read_text())
    assert [m["name"] for m in meta["layers"]] == ["Alpha prima: true suitability",
                                                    "Alpha prima: predicted, BotaCLIP", "emb", "cov:a"]
    assert meta["layers"][0]["cells"] == 50 and meta["n"] == len(cells)


# ---- a real browser ---------------------------------------------------------------------------------------------

def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("BOTACLIP_REQUIRE_BROWSER") == "1":
            pytest.fail("BOTACLIP_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH: the map page is not drawn by a browser here (apt-get install chromium)")
    return exe


def _headless(exe: str, url: str, *args: str) -> subprocess.CompletedProcess:
    """Chromium with the network shut: every host name fails to resolve and the proxy is a closed port."""
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=10000",
           *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def gradient_page(tmp_path):
    """A page of 1,951 cells whose first layer runs from low (south) to high (north)."""
    from botaclip.sdm.cells import cells_to_latlng

    cells = np.array(sorted(h3i.grid_disk(h3i.latlng_to_cell(45.2, 6.1, 9), 25)), dtype=np.uint64)
    lat, _ = cells_to_latlng(cells)
    rng = np.random.default_rng(0)
    layers = [values_layer("north", cells, (lat - lat.min()) / np.ptp(lat), "suitability"),
              pca_layer("emb", cells, rng.normal(size=(len(cells), 5)))]
    write_map_page(layers, tmp_path / "m.html", "gradient")
    return tmp_path / "m.html", cells


def test_browser_draws_the_page_offline(gradient_page, tmp_path):
    from PIL import Image

    exe = _chromium()
    page, cells = gradient_page
    shot = tmp_path / "shot.png"
    r = _headless(exe, page.as_uri(), f"--screenshot={shot}", "--window-size=900,700")
    assert shot.exists(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # viridis ends: dark purple (0, south) and yellow (1, north); the canvas background is #f3f3ef.
    purple = (np.abs(img - [68, 1, 84]).sum(axis=2) < 40)
    yellow = (np.abs(img - [253, 231, 37]).sum(axis=2) < 40)
    assert purple.sum() > 2000 and yellow.sum() > 2000
    assert np.argwhere(yellow)[:, 0].mean() < np.argwhere(purple)[:, 0].mean()  # north is up
    background = (np.abs(img - [243, 243, 239]).sum(axis=2) < 6).mean()
    assert 0.2 < background < 0.8  # the hexagons cover a good part of the window, not all of it


def test_browser_hash_pins_a_cell_with_its_values(gradient_page):
    exe = _chromium()
    page, cells = gradient_page
    cell = format(int(cells[100]), "x")
    r = _headless(exe, page.as_uri() + f"#layer=emb&cell={cell}", "--dump-dom", "--window-size=900,700")
    dom = r.stdout
    assert 'data-ready="1"' in dom and f'data-drawn="{len(cells)}"' in dom, r.stderr[-2000:]
    tip = re.search(r'<div id="tip"[^>]*style="([^"]*)"[^>]*>(.*?)</div>', dom)
    assert tip and "display: block" in tip.group(1)
    assert f"<b>cell</b> {cell}" in tip.group(2) and "<b>emb</b>: PC1 " in tip.group(2)
    assert re.search(r"north: 0\.\d+", tip.group(2))
    assert '<option value="1" selected' in dom or 'id="layer"' in dom
