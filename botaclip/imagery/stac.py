"""STAC items as imagery: ``--stac ITEM.json|URL --assets red,green,blue,nir``.

A STAC item lists its files as assets, typically one single-band COG per band. :func:`stac_imagery` reads one
item, an ItemCollection or a saved search result (a local JSON file or a URL the user gave; nothing else is
fetched), picks the asked assets of every item and stacks them, in the order asked, into one GDAL VRT per item
(a small local file; the pixels stay where they are published and are read with range requests). The VRTs are
ordinary rasters for :class:`~botaclip.imagery.ChipReader`: several items form a mosaic, most recent first (by
``datetime``) or least cloudy first (``sort="cloud"``, by ``eo:cloud_cover``).

From the item's metadata:

- wavelengths: each band's centre wavelength in µm, from ``eo:bands[].center_wavelength`` (STAC 1.0 eo
  extension) or ``bands[].eo:center_wavelength`` / the asset's ``eo:center_wavelength`` (STAC 1.1);
- nodata and scale/offset: ``raster:bands[].nodata|scale|offset`` (STAC 1.0 raster extension) or
  ``bands[].nodata|raster:scale|raster:offset`` / the asset's own (STAC 1.1). The VRT applies them: its bands are
  float32 ``value * scale + offset`` with nodata as NaN.

Relative asset hrefs resolve against the item's ``self`` link, else against the JSON's own location. Assets of
one item with different pixel sizes (Sentinel-2's 10 m and 20 m bands) are put on the finest grid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from botaclip.errors import BotaclipError, InvalidInputError, MissingDependencyError, MissingFileError, param
from botaclip.imagery.remote import (
    TIMEOUT_S,
    check_cloud_optimised,
    gdal_env,
    gdal_path,
    probe,
    remote_url,
    warn_not_cog,
)

SORTS = ("datetime", "cloud")


@dataclass(frozen=True)
class BandInfo:
    """One band of an asset: its centre wavelength (µm, None when the item does not say), nodata, scale, offset."""

    asset: str
    index: int  # 1-based band of the asset's file
    wavelength: float | None
    nodata: float | None
    scale: float
    offset: float


@dataclass(frozen=True)
class StacImagery:
    """The rasters of a STAC input: one VRT per item (mosaic order), the centre wavelength of each band (µm), and
    the items' ids in the same order."""

    paths: tuple[str, ...]
    wavelengths: tuple[float, ...]
    items: tuple[str, ...]
    source: str
    eight_bit: bool = False  # every band is 8-bit and unscaled (0-255, like an orthophoto)

    def band_spec(self, preset: str | None = None):
        """The bands (:class:`~botaclip.imagery.bands.BandSpec`): the items' wavelengths, or ``preset``. A preset's
        fixed statistics (ImageNet on 0-255) only serve 8-bit unscaled imagery; scaled reflectances and 16-bit
        numbers are normalised with per-raster statistics instead."""
        from botaclip.imagery.bands import BandSpec, band_spec

        spec = band_spec(preset) if preset else band_spec(None, list(self.wavelengths))
        if spec.has_fixed_stats and not self.eight_bit:
            return BandSpec(spec.name, spec.wavelengths)
        return spec

    def describe(self) -> str:
        return f"{len(self.items)} STAC item(s) from {self.source} ({', '.join(self.items[:3])}" + \
            (", ..." if len(self.items) > 3 else "") + ")"


def stac_imagery(stac: str, assets: str | list[str] | tuple[str, ...], sort: str = "datetime",
                 wavelengths: tuple[float, ...] | None = None, cache: str | os.PathLike | None = None) -> StacImagery:
    """Resolve ``stac`` (a STAC item, ItemCollection or saved search result: a JSON file or an http(s) URL) and the
    asset keys ``assets`` (comma-separated or a list, in band order) into rasters the chip reader opens.

    ``wavelengths`` (µm, one per band) replaces the item's when given (items without ``eo`` metadata need it).
    ``cache``: where the VRTs are written (default: ``<botaclip cache>/stac``). Raises one-line
    :class:`~botaclip.errors.BotaclipError` s for bad input.
    """
    keys = _asset_keys(assets)
    if sort not in SORTS:
        raise InvalidInputError(f"unknown {param('sort')} {sort!r}; choose one of {', '.join(SORTS)}")
    items = _load_items(str(stac))
    items = _sorted(items, sort)
    bands = [_bands_of(item, keys) for item in items]
    found = _wavelengths(items, bands, stac, wavelengths)
    root = Path(cache) if cache is not None else _default_cache()
    written = [_write_vrt(item, keys, b, root) for item, b in zip(items, bands)]
    return StacImagery(tuple(p for p, _ in written), found, tuple(item.id for item in items), str(stac),
                       eight_bit=all(e for _, e in written))


def _asset_keys(assets) -> list[str]:
    if assets is None:
        raise InvalidInputError(f"{param('stac')} needs {param('assets')}: the asset keys to read, in band order, "
                                "e.g. red,green,blue,nir")
    keys = [k.strip() for k in assets.split(",")] if isinstance(assets, str) else [str(k).strip() for k in assets]
    keys = [k for k in keys if k]
    if not keys:
        raise InvalidInputError(f"{param('assets')} is empty; give asset keys in band order, e.g. red,green,blue,nir")
    if len(set(keys)) != len(keys):
        raise InvalidInputError(f"{param('assets')} names an asset twice ({','.join(keys)})")
    return keys


def _default_cache() -> Path:
    from botaclip.imagery.stats import cache_dir

    return cache_dir().parent / "stac"


# -- reading the JSON ------------------------------------------------------------------------------------------


def _read_json(location: str) -> dict:
    url = remote_url(location)
    if url is not None:
        req = urllib.request.Request(url, headers={"User-Agent": "botaclip", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - the user's own URL
                text = resp.read().decode("utf-8")
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise MissingFileError(f"STAC {url} was not found on the server (HTTP {exc.code}); check the URL") \
                    from None
            raise BotaclipError(f"STAC {url}: the server failed (HTTP {exc.code} {exc.reason})") from None
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            raise BotaclipError(f"cannot read STAC {url}: {getattr(exc, 'reason', exc)}") from None
    else:
        if not os.path.isfile(location):
            raise MissingFileError(f"STAC file not found: {location}")
        try:
            text = Path(location).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BotaclipError(f"cannot read STAC file {location}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{location} is not JSON ({exc}); give a STAC item or ItemCollection") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{location} is not a STAC item or ItemCollection (a JSON object)")
    return data


def _load_items(location: str) -> list:
    """The items of ``location`` (pystac Items, parsed from JSON read here: pystac never fetches)."""
    try:
        import pystac
    except ImportError:
        raise MissingDependencyError("reading STAC needs pystac: pip install 'botaclip[stac]'") from None
    data = _read_json(location)
    base = location if remote_url(location) else os.path.abspath(location)
    kind = data.get("type")
    if kind == "Feature":
        raw = [data]
    elif kind == "FeatureCollection" and isinstance(data.get("features"), list):
        raw = data["features"]
    else:
        raise InvalidInputError(f"{location} is not a STAC item (type Feature) or ItemCollection / search result "
                                f"(type FeatureCollection); its type is {kind!r}")
    if not raw:
        raise InvalidInputError(f"{location} holds no STAC items (an empty search result?)")
    items = []
    for d in raw:
        try:
            item = pystac.Item.from_dict(d, migrate=False, preserve_dict=True)
        except Exception as exc:  # noqa: BLE001 - pystac raises KeyError/ValueError/STACError on malformed items
            raise InvalidInputError(f"{location}: not a valid STAC item ({type(exc).__name__}: {exc})") from None
        self_href = item.get_self_href()
        _absolute_hrefs(item, self_href or base)
        items.append(item)
    return items


def _absolute_hrefs(item, base: str) -> None:
    """Resolve relative asset hrefs against ``base`` (the item's self link or the JSON's location)."""
    from pystac.utils import make_absolute_href

    for asset in item.assets.values():
        href = asset.href
        if remote_url(href) or href.startswith("/vsi") or os.path.isabs(href):
            continue
        asset.href = make_absolute_href(href, base)


def _when(item) -> float:
    dt = item.datetime or item.common_metadata.end_datetime or item.common_metadata.start_datetime
    return dt.timestamp() if dt is not None else -math.inf


def _sorted(items: list, sort: str) -> list:
    if sort == "cloud":
        def cloud(item) -> float:
            value = item.properties.get("eo:cloud_cover")
            return float(value) if isinstance(value, (int, float)) else math.inf

        return sorted(items, key=lambda it: (cloud(it), -_when(it)))
    return sorted(items, key=lambda it: -_when(it))


# -- band metadata ---------------------------------------------------------------------------------------------


def _number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf"):
        return float(value)
    return None


def _bands_of(item, keys: list[str]) -> list[BandInfo]:
    """The bands of the asked assets of ``item``, in order."""
    missing = [k for k in keys if k not in item.assets]
    if missing:
        have = ", ".join(sorted(item.assets)) or "none"
        raise InvalidInputError(f"STAC item {item.id} has no asset {', '.join(map(repr, missing))} (its assets: "
                                f"{have}); choose {param('assets')} among them")
    out = []
    for key in keys:
        fields = item.assets[key].extra_fields
        eo = fields.get("eo:bands") if isinstance(fields.get("eo:bands"), list) else None
        common = fields.get("bands") if isinstance(fields.get("bands"), list) else None  # STAC 1.1
        raster = fields.get("raster:bands") if isinstance(fields.get("raster:bands"), list) else None
        count = max(len(eo or []), len(common or []), len(raster or []), 1)
        for i in range(count):
            b_eo = _at(eo, i)
            b_common = _at(common, i)
            b_raster = _at(raster, i)
            wavelength = _first(_number(b_eo.get("center_wavelength")), _number(b_common.get("eo:center_wavelength")),
                                _number(fields.get("eo:center_wavelength")) if count == 1 else None)
            nodata = _first(_number(b_raster.get("nodata")), _number(b_common.get("nodata")),
                            _number(fields.get("nodata")) if count == 1 else None)
            scale = _first(_number(b_raster.get("scale")), _number(b_common.get("raster:scale")),
                           _number(fields.get("raster:scale")) if count == 1 else None)
            offset = _first(_number(b_raster.get("offset")), _number(b_common.get("raster:offset")),
                            _number(fields.get("raster:offset")) if count == 1 else None)
            out.append(BandInfo(key, i + 1, wavelength, nodata, 1.0 if scale is None else scale,
                                0.0 if offset is None else offset))
    return out


def _at(values: list | None, i: int) -> dict:
    value = values[i] if values is not None and i < len(values) else None
    return value if isinstance(value, dict) else {}


def _first(*values):
    return next((v for v in values if v is not None), None)


def _wavelengths(items: list, bands: list[list[BandInfo]], stac: str, given) -> tuple[float, ...]:
    """The centre wavelength of each band (µm): ``given``, else the items' (which must agree)."""
    count = len(bands[0])
    if given is not None:
        given = tuple(float(w) for w in given)
        if len(given) != count:
            raise InvalidInputError(f"{param('wavelengths')} has {len(given)} value(s) but the asked assets of "
                                    f"{stac} hold {count} band(s); give one wavelength in µm per band")
        return given
    first = bands[0]
    lacking = sorted({b.asset for b in first if b.wavelength is None})
    if lacking:
        raise InvalidInputError(
            f"STAC item {items[0].id} gives no centre wavelength for asset(s) {', '.join(lacking)} (no eo:bands "
            f"center_wavelength, no bands eo:center_wavelength); pass {param('wavelengths')} with one value in µm "
            f"per band in {param('assets')} order, e.g. {param('wavelengths')} "
            f"{','.join(['0.665', '0.56', '0.49', '0.842', '1.61', '2.19'][:count] + ['...'] * max(0, count - 6))}"
        )
    found = tuple(b.wavelength for b in first)
    if any(w > 100 for w in found):  # some catalogues give nanometres
        raise InvalidInputError(f"STAC item {items[0].id} gives wavelengths {found}, not in µm; pass "
                                f"{param('wavelengths')} in µm")
    for item, b in zip(items[1:], bands[1:]):
        other = tuple(x.wavelength for x in b)
        if any(w is not None and abs(w - v) > 1e-6 for w, v in zip(other, found)) or len(other) != len(found):
            raise InvalidInputError(f"STAC items {items[0].id} and {item.id} disagree on the wavelengths of "
                                    f"{param('assets')}; search one collection, or pass {param('wavelengths')}")
    return found


# -- the VRT ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AssetGrid:
    path: str  # what GDAL opens
    crs_wkt: str
    transform: tuple[float, ...]  # a, b, c, d, e, f (rasterio Affine order)
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    identity: str  # for the VRT's name: the file's version (ETag, Last-Modified, size) or path


def _asset_grid(href: str, item_id: str, key: str) -> _AssetGrid:
    import rasterio

    path = gdal_path(href)
    url = remote_url(path)
    if url is not None:
        info = probe(url)
        ident = f"{url}|{info.etag}|{info.last_modified}|{info.size_bytes}"
    elif not path.startswith("/vsi") and not os.path.isfile(path):
        raise MissingFileError(f"STAC item {item_id}: asset {key!r} file not found: {href}")
    else:
        ident = path if path.startswith("/vsi") else f"{path}|{os.stat(path).st_size}|{os.stat(path).st_mtime_ns}"
    try:
        with gdal_env([path]), rasterio.open(path) as ds:
            why = check_cloud_optimised(ds, path) if url is not None else None
            if ds.crs is None:
                raise InvalidInputError(f"STAC item {item_id}: asset {key!r} ({href}) has no CRS")
            grid = _AssetGrid(path, ds.crs.to_wkt(), tuple(ds.transform)[:6], ds.width, ds.height, ds.count,
                              tuple(ds.dtypes), ident)
    except rasterio.errors.RasterioIOError as exc:
        raise BotaclipError(f"STAC item {item_id}: cannot open asset {key!r} ({href}): "
                            f"{' '.join(str(exc).split())}") from None
    if why:
        warn_not_cog(url, why)
    t = grid.transform
    if t[1] != 0 or t[3] != 0 or t[0] <= 0 or t[4] >= 0:
        raise InvalidInputError(f"STAC item {item_id}: asset {key!r} ({href}) is not a north-up raster")
    return grid


def _write_vrt(item, keys: list[str], bands: list[BandInfo], root: Path) -> tuple[str, bool]:
    """Write the VRT that stacks ``bands`` of ``item`` (named by a hash of its content); its path, and whether its
    bands are 8-bit and unscaled."""
    from pyproj import CRS

    from botaclip.atomic import write_text

    grids = {k: _asset_grid(item.assets[k].href, item.id, k) for k in keys}
    first = next(iter(grids.values()))
    for key, g in grids.items():
        if g.crs_wkt != first.crs_wkt and not CRS.from_wkt(g.crs_wkt).equals(CRS.from_wkt(first.crs_wkt)):
            raise InvalidInputError(f"STAC item {item.id}: assets {keys[0]!r} and {key!r} are in different CRSs; "
                                    "choose assets of one grid")
    for b in bands:
        if b.index > grids[b.asset].count:
            raise InvalidInputError(f"STAC item {item.id}: asset {b.asset!r} lists {b.index} band(s) in its metadata "
                                    f"but its file has {grids[b.asset].count}")
    xml = _vrt_xml(item.id, grids, bands)
    name = hashlib.sha256(xml.encode()).hexdigest()[:24]
    path = root / f"{_safe(item.id)}-{name}.vrt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, xml)
    eight_bit = all(grids[b.asset].dtypes[b.index - 1] == "uint8" and b.scale == 1.0 and b.offset == 0.0
                    for b in bands)
    return str(path), eight_bit


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:60] or "item"


def _vrt_xml(item_id: str, grids: dict[str, _AssetGrid], bands: list[BandInfo]) -> str:
    # The finest pixel of the assets, over the union of their extents.
    res_x = min(g.transform[0] for g in grids.values())
    res_y = min(-g.transform[4] for g in grids.values())
    west = min(g.transform[2] for g in grids.values())
    north = max(g.transform[5] for g in grids.values())
    east = max(g.transform[2] + g.width * g.transform[0] for g in grids.values())
    south = min(g.transform[5] + g.height * g.transform[4] for g in grids.values())
    width, height = max(1, round((east - west) / res_x)), max(1, round((north - south) / res_y))
    first = next(iter(grids.values()))
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS>{escape(first.crs_wkt)}</SRS>",
             f"  <GeoTransform>{west!r}, {res_x!r}, 0, {north!r}, 0, {-res_y!r}</GeoTransform>",
             "  <Metadata>", f'    <MDI key="stac_item">{escape(item_id)}</MDI>']
    lines += [f'    <MDI key="source_{k}">{escape(g.identity)}</MDI>' for k, g in grids.items()]
    lines.append("  </Metadata>")
    for n, b in enumerate(bands, start=1):
        g = grids[b.asset]
        x_off = (g.transform[2] - west) / res_x
        y_off = (north - g.transform[5]) / res_y
        x_size, y_size = g.width * g.transform[0] / res_x, g.height * -g.transform[4] / res_y
        lines += [f'  <VRTRasterBand dataType="Float32" band="{n}">', "    <NoDataValue>nan</NoDataValue>",
                  f"    <Description>{escape(b.asset)}</Description>",
                  '    <ComplexSource resampling="bilinear">',
                  f'      <SourceFilename relativeToVRT="0">{escape(g.path)}</SourceFilename>',
                  f"      <SourceBand>{b.index}</SourceBand>",
                  f'      <SrcRect xOff="0" yOff="0" xSize="{g.width}" ySize="{g.height}"/>',
                  f'      <DstRect xOff="{x_off!r}" yOff="{y_off!r}" xSize="{x_size!r}" ySize="{y_size!r}"/>']
        if b.nodata is not None:
            lines.append(f"      <NODATA>{b.nodata!r}</NODATA>")
        if b.scale != 1.0 or b.offset != 0.0:
            lines += [f"      <ScaleOffset>{b.offset!r}</ScaleOffset>", f"      <ScaleRatio>{b.scale!r}</ScaleRatio>"]
        lines += ["    </ComplexSource>", "  </VRTRasterBand>"]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


__all__ = ["SORTS", "BandInfo", "StacImagery", "stac_imagery"]
