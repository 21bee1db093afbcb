"""A static HTTP server that honours Range requests, for trying remote rasters locally (and for the tests).

Python's own ``python -m http.server`` ignores ``Range`` (it always sends the whole file), which botaclip refuses
for rasters: every window would download the whole file. This one answers ``Range: bytes=a-b`` with 206 like any
web server or object store, and sends ETag and Last-Modified::

    python tools/range_server.py DIR --port 8000      # then: botaclip index --imagery http://127.0.0.1:8000/a.tif

It listens on 127.0.0.1 only. The tests and bench/remote.py use :class:`RangeServer` in-process: it counts the bytes
it serves and can be told to ignore Range, answer 404 or fail with 500.
"""

from __future__ import annotations

import argparse
import email.utils
import http.server
import re
import threading
import urllib.parse
from pathlib import Path


class RangeServer:
    """A threaded HTTP server on 127.0.0.1 serving the files under ``root``, like a static web server or an object
    store: HEAD and GET, ``Range: bytes=a-b`` answered with 206 (unless ``honour_range`` is False), ETag and
    Last-Modified on every answer, 404 for a missing file or one in ``missing``, 500 for one in ``failing``.
    ``bytes_served`` counts the body bytes sent, ``requests`` every (method, path, Range header)."""

    def __init__(self, root, port: int = 0) -> None:
        self.root = Path(root)
        self.honour_range = True
        self.missing: set[str] = set()
        self.failing: set[str] = set()
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as GDAL expects from real servers

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                owner._answer(self, body=False)

            def do_GET(self) -> None:
                owner._answer(self, body=True)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        """The URL of file ``name`` under ``root``."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def reset(self) -> None:
        with self._lock:
            self.bytes_served = 0
            self.requests.clear()

    def wait(self) -> None:
        """Block until the server stops."""
        self._thread.join()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, handler, body: bool) -> None:
        name = urllib.parse.unquote(urllib.parse.urlsplit(handler.path).path).lstrip("/")
        rng = handler.headers.get("Range")
        with self._lock:
            self.requests.append((handler.command, name, rng))
        file = (self.root / name).resolve()
        if name in self.failing:
            return self._error(handler, 500, "Internal Server Error")
        if name in self.missing or not file.is_file() or self.root.resolve() not in file.parents:
            return self._error(handler, 404, "Not Found")
        st = file.stat()
        size = st.st_size
        start, end, status = 0, size - 1, 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng and self.honour_range else None
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                return self._error(handler, 416, "Range Not Satisfiable")
            status = 206
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json" if name.endswith(".json") else "image/tiff")
        handler.send_header("Content-Length", str(end - start + 1))
        handler.send_header("ETag", f'"{size:x}-{st.st_mtime_ns:x}"')
        handler.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if self.honour_range:
            handler.send_header("Accept-Ranges", "bytes")
        if status == 206:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        handler.end_headers()
        if not body:
            return
        with open(file, "rb") as fh:
            fh.seek(start)
            left = end - start + 1
            try:
                while left > 0:
                    chunk = fh.read(min(left, 1 << 16))
                    handler.wfile.write(chunk)
                    left -= len(chunk)
                    with self._lock:
                        self.bytes_served += len(chunk)
            except (BrokenPipeError, ConnectionResetError):  # the client had enough (a probe of a whole file)
                handler.close_connection = True

    def _error(self, handler, code: int, reason: str) -> None:
        payload = reason.encode()
        handler.send_response(code, reason)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".", help="folder to serve [default: .]")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = RangeServer(args.root, port=args.port)
    print(f"serving {Path(args.root).resolve()} at http://127.0.0.1:{server.port}/ (Ctrl-C stops)", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.close()


if __name__ == "__main__":
    main()
