"""Rasters behind HTTP: URLs, GDAL's ``/vsicurl/`` paths, and the GDAL settings that read them well.

A Cloud-Optimised GeoTIFF is read where it is published: GDAL fetches the header, then only the tiles (or the
overview tiles) a window needs, with HTTP range requests. This module

- recognises remote paths (``https://...``, ``http://...``, ``/vsicurl/https://...``) and turns URLs into the
  ``/vsicurl/`` paths GDAL opens (:func:`gdal_path`);
- checks a URL once per process before any work with a HEAD request and a one-byte range request
  (:func:`probe`): a missing file, a failing server or a server that ignores ``Range`` is one clear error;
- gives the identity that caches key on (:func:`identity`): the URL with the server's ETag / Last-Modified /
  length, or, for a local file, its absolute path, size and modification time;
- scopes GDAL's options for remote reads to the code that reads (:func:`gdal_env`, a ``rasterio.Env``; GDAL keeps
  them per thread), so nothing is set in ``os.environ``. A variable the user set in the environment wins.

Proxies: GDAL (libcurl) and :mod:`urllib` both honour ``http_proxy`` / ``https_proxy`` / ``no_proxy``.
"""

from __future__ import annotations

import email.utils
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass

from botaclip.errors import BotaclipError, InvalidInputError, MissingFileError

VSICURL = "/vsicurl/"
TIMEOUT_S = 30.0  # one HEAD / range probe; GDAL has its own (GDAL_HTTP_TIMEOUT below)
RASTER_EXTENSIONS = (".tif", ".tiff", ".gtiff", ".vrt", ".jp2", ".img", ".nc", ".png", ".jpg", ".jpeg", ".webp")

# GDAL options for reading COGs over HTTP (https://gdal.org/user/configoptions.html, /vsicurl/ section).
REMOTE_OPTIONS = {
    # A COG has no sidecar files: do not list the "directory" or probe for .aux.xml/.ovr/.msk on open.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    # Adjacent tiles come in one request, HTTP/2 streams share one connection.
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    # Transient server errors (429, 5xx) are retried with a growing delay before a read fails.
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
    "GDAL_HTTP_TIMEOUT": "60",
    # Per open file, a read-ahead cache of the bytes fetched (headers, tiles that neighbouring chips share).
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(16 * 2**20),
}


class RemoteReadWarning(UserWarning):
    """A remote raster that works but is read inefficiently (not a COG: much more of it is downloaded)."""


def remote_url(path: str) -> str | None:
    """The http(s) URL behind ``path`` (a URL, ``/vsicurl/URL`` or ``/vsicurl?url=URL&...``), else None."""
    path = str(path)
    if path.startswith(VSICURL):
        path = path[len(VSICURL):]
    elif path.startswith("/vsicurl?"):
        query = urllib.parse.parse_qs(path[len("/vsicurl?"):])
        path = (query.get("url") or [""])[0]
    if path.lower().startswith(("http://", "https://")):
        return path
    return None


def is_remote(path: str) -> bool:
    """True for an http(s) URL or a ``/vsicurl/`` path."""
    return remote_url(path) is not None


def is_virtual(path: str) -> bool:
    """True for any path GDAL resolves itself (URLs and ``/vsi...`` paths): no local file to check."""
    return is_remote(path) or str(path).startswith("/vsi")


def gdal_path(path: str) -> str:
    """The path to give GDAL: an http(s) URL becomes ``/vsicurl/URL`` (range requests, no full download)."""
    path = str(path)
    return VSICURL + path if path.lower().startswith(("http://", "https://")) else path


def _allowed_extensions(paths) -> str | None:
    """Extensions GDAL may request for ``paths`` (so that it never asks the server for sidecars), or None when
    a URL has no raster extension (a signed URL, an API endpoint): limiting them would then refuse the file."""
    found = set()
    for p in paths:
        url = remote_url(p)
        if url is None:
            continue
        ext = os.path.splitext(urllib.parse.urlsplit(url).path)[1].lower()
        if ext not in RASTER_EXTENSIONS:
            return None
        found.add(ext)
    return ",".join(sorted(found | {e.upper() for e in found})) if found else None


def gdal_env(paths=()):
    """A ``rasterio.Env`` with the options for reading remote rasters (see ``REMOTE_OPTIONS``), for the code
    that opens and reads ``paths`` (GDAL applies them per thread; options the user set as environment
    variables are left alone)."""
    import rasterio

    options = {k: v for k, v in REMOTE_OPTIONS.items() if k not in os.environ}
    allowed = _allowed_extensions(paths)
    if allowed and "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in os.environ:
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = allowed
    return rasterio.Env(**options)


@dataclass(frozen=True)
class RemoteInfo:
    """What the server says about a URL: its size in bytes (0 when unknown), ETag and Last-Modified (None when
    not sent), and the modification time in ns since the epoch (0 when unknown)."""

    url: str
    size_bytes: int
    etag: str | None
    last_modified: str | None

    @property
    def mtime_ns(self) -> int:
        if not self.last_modified:
            return 0
        try:
            return int(email.utils.parsedate_to_datetime(self.last_modified).timestamp() * 1e9)
        except (TypeError, ValueError):
            return 0


_probed: dict[str, RemoteInfo] = {}
_probed_lock = threading.Lock()


def probe(url: str, refresh: bool = False) -> RemoteInfo:
    """Check ``url`` once per process (HEAD, then a one-byte range request) and return what the server says.

    Raises :class:`MissingFileError` for a 404/410, :class:`InvalidInputError` when the server ignores range
    requests (GDAL would download the whole file for every window), :class:`BotaclipError` when the server fails
    or cannot be reached.
    """
    with _probed_lock:
        if not refresh and url in _probed:
            return _probed[url]
    headers = _request(url, "HEAD")
    status, ranged = _request_range(url)
    if status != 206:
        raise InvalidInputError(
            f"{url}: the server does not support HTTP range requests (it answered {status} to a Range request), so "
            "every window would download the whole file; serve it from a server that honours Range (nginx, "
            "Apache, caddy, object stores; not Python's http.server) or download it and pass the local path"
        )
    size = _total_size(ranged.get("Content-Range")) or int(headers.get("Content-Length") or 0)
    info = RemoteInfo(url, size, headers.get("ETag") or ranged.get("ETag"),
                      headers.get("Last-Modified") or ranged.get("Last-Modified"))
    with _probed_lock:
        _probed[url] = info
    return info


def _total_size(content_range: str | None) -> int:
    # "bytes 0-0/12345" -> 12345
    if not content_range or "/" not in content_range:
        return 0
    total = content_range.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else 0


def _request(url: str, method: str, extra: dict | None = None):
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "botaclip", **(extra or {})})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - the user's own URL
            return dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        if method == "HEAD" and exc.code in (403, 405, 501):
            return {}  # some servers (signed object-store URLs) refuse HEAD but serve GET: the range probe decides
        raise _http_error(url, exc.code, exc.reason) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BotaclipError(f"cannot reach {url}: {reason}; check the URL and the network (proxy settings: "
                            "https_proxy / no_proxy)") from None


def _request_range(url: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"User-Agent": "botaclip", "Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - the user's own URL
            # A server that ignores Range sends the whole file: close the connection without reading it.
            return resp.status, dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        raise _http_error(url, exc.code, exc.reason) from None
    except (urllib.error.URLError, OSError) as exc:
        raise BotaclipError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def _http_error(url: str, code: int, reason) -> BotaclipError:
    if code in (404, 410):
        return MissingFileError(f"{url} was not found on the server (HTTP {code}); check the URL")
    if code in (401, 403):
        return BotaclipError(f"{url}: access denied (HTTP {code} {reason}); the URL needs credentials or a signed "
                             "link")
    return BotaclipError(f"{url}: the server failed (HTTP {code} {reason}); try again later or use another copy")


def identity(path: str) -> str:
    """What caches key on: ``URL|etag|last-modified|size`` for a remote raster (from :func:`probe`), the absolute
    path, size and modification time of a local file, the path itself for other GDAL virtual paths."""
    url = remote_url(path)
    if url is not None:
        info = probe(url)
        return f"{url}|{info.etag}|{info.last_modified}|{info.size_bytes}"
    if str(path).startswith("/vsi"):
        return str(path)
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"


def check_cloud_optimised(ds, path: str) -> str | None:
    """Why the open remote dataset ``ds`` is read inefficiently (not tiled, no overviews, not a GeoTIFF), or None
    for a COG-like file."""
    if ds.driver not in ("GTiff", "COG", "VRT"):
        return f"a {ds.driver} file, which GDAL reads whole"
    if ds.driver == "VRT":
        return None  # its sources are checked on their own
    block_h, block_w = ds.block_shapes[0]
    if block_w >= ds.width and ds.width > 512:
        return "not tiled: whole rows are read for every window"
    return None


def lacks_overviews(ds) -> bool:
    """True for a large raster without overviews: a decimated read (statistics) then reads every pixel."""
    return max(ds.width, ds.height) > 2048 and not ds.overviews(1)


def warn_not_cog(path: str, why: str, what: str = "far more of it is downloaded than the windows need, up to "
                 "the whole file") -> None:
    """One warning that ``path`` works but is read inefficiently."""
    warnings.warn(RemoteReadWarning(
        f"{path} is not a cloud-optimised GeoTIFF ({why}): it works, but {what}; convert it once with "
        "`gdal_translate -of COG in.tif out.tif`"
    ), stacklevel=3)


def open_raster(path: str):
    """``rasterio.open`` for a raster given by the user (file, URL, ``/vsicurl/`` or other GDAL path), with one-line
    errors: a missing file or URL, a failing server, no Range support, not a raster. Warns when a remote raster
    is not cloud-optimised. Open and read it inside :func:`gdal_env`."""
    import rasterio

    from botaclip.errors import root_cause

    gpath = gdal_path(str(path))
    url = remote_url(gpath)
    if url is not None:
        probe(url)
    elif not is_virtual(gpath) and not os.path.exists(gpath):
        raise MissingFileError(f"no such raster: {path}")
    try:
        ds = rasterio.open(gpath)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise BotaclipError(f"cannot open raster {url or path}: {root_cause(exc)}") from None
    why = check_cloud_optimised(ds, gpath) if url is not None else None
    if why:
        warn_not_cog(url, why)
    return ds


def display_stem(path: str) -> str:
    """The file name without extension, for a URL too (its query string dropped)."""
    url = remote_url(path)
    name = urllib.parse.urlsplit(url).path if url else str(path)
    return os.path.splitext(os.path.basename(name.rstrip("/")))[0]


def describe_error(path: str, exc: Exception) -> str:
    """GDAL's reason for failing to open or read a remote ``path``, one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"reading {remote_url(path) or path} failed: {text}"


def read_failure(path: str, reason: str) -> BotaclipError | None:
    """Why reading the remote raster ``path`` failed once GDAL gave up (after its retries), asking the server again:
    its HTTP error (a 5xx, a 404 now), or that the file changed under the job. None for a local path."""
    url = remote_url(path)
    if url is None:
        return None
    try:
        info = probe(url, refresh=True)
    except BotaclipError as exc:
        return type(exc)(f"reading stopped: {exc}")
    return BotaclipError(f"reading {url} failed ({reason}) although the server answers (ETag {info.etag}); the "
                         "connection dropped or the file changed during the job: run the command again")


__all__ = [
    "RemoteInfo",
    "RemoteReadWarning",
    "check_cloud_optimised",
    "describe_error",
    "display_stem",
    "gdal_env",
    "gdal_path",
    "identity",
    "is_remote",
    "is_virtual",
    "lacks_overviews",
    "open_raster",
    "probe",
    "read_failure",
    "remote_url",
    "warn_not_cog",
]
