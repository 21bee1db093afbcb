"""Is a GeoTIFF cloud optimized? The essential checks of GDAL's ``validate_cloud_optimized_geotiff.py``, read
through rasterio (the GDAL Python bindings need not be installed).

A COG is a tiled GeoTIFF whose image file directories (IFDs) all come first, main image then overviews, followed
by the pixel data, smallest overview first and full resolution last: a reader fetching a window over HTTP gets
every directory with the first request and one range per tile after it.
"""

from __future__ import annotations

from pathlib import Path

MIN_SIZE_WITHOUT_OVERVIEWS = 512  # GDAL's validator: a larger image without overviews is not a COG


def cog_problems(path: str | Path) -> list[str]:
    """What keeps ``path`` from being a Cloud Optimized GeoTIFF; an empty list means it is one."""
    import rasterio

    problems: list[str] = []
    with rasterio.open(path) as ds:
        if ds.driver != "GTiff":
            return [f"{path} is a {ds.driver} file, not a GeoTIFF"]
        with open(path, "rb") as fh:
            head = fh.read(300)
        if b"LAYOUT=IFDS_BEFORE_DATA" not in head:
            problems.append("no GDAL ghost header 'LAYOUT=IFDS_BEFORE_DATA' at the start of the file")
        factors = ds.overviews(1)
        if not factors and max(ds.width, ds.height) > MIN_SIZE_WITHOUT_OVERVIEWS:
            problems.append(f"{ds.width} x {ds.height} pixels but no overviews")
        ifd = [int(ds.get_tag_item("IFD_OFFSET", "TIFF", bidx=1))]
        data = [int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) or 0)]
        for i in range(len(factors)):
            ifd.append(int(ds.get_tag_item("IFD_OFFSET", "TIFF", bidx=1, ovr=i)))
            data.append(int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=i) or 0))
        shapes = [ds.block_shapes[0]]
        size = [(ds.height, ds.width)]
    for i in range(len(factors)):
        with rasterio.open(path, overview_level=i) as ov:
            shapes.append(ov.block_shapes[0])
            size.append((ov.height, ov.width))
    for level, ((bh, bw), (h, w)) in enumerate(zip(shapes, size)):
        what = "the main image" if level == 0 else f"overview {level}"
        if bw == w and w > MIN_SIZE_WITHOUT_OVERVIEWS:  # strips span the width; tiles do not (GDAL's rule)
            problems.append(f"{what} is not tiled (blocks of {bh} x {bw} pixels in a {h} x {w} image)")
    if ifd != sorted(ifd):
        problems.append(f"IFDs are not in order main image, then overviews largest first (offsets {ifd})")
    if max(ifd) > min(data):
        problems.append("pixel data comes before the last IFD")
    if data[::-1] != sorted(data):
        problems.append(f"pixel data is not ordered smallest overview first, main image last (offsets {data})")
    return problems
