"""A threaded local HTTP file server with Range support and scripted faults.

Usage in a test::

    with FileServer() as srv:
        srv.files["/a.zip"] = data
        srv.script("/a.zip", "drop", "ok")      # first request: cut mid-file
        url = srv.url("/a.zip")

Faults are consumed one per request, in order, per path; once a path's script is empty
it is served normally. Available faults:

* ``"ok"``: serve normally;
* ``"drop"``: send the headers and half of the requested bytes, then close the socket;
* ``"ignore_range"``: answer ``200`` with the whole file even when a Range was asked;
* ``"wrong"``: serve the right number of bytes with different content;
* an ``int`` (``503``, ``404``, ...): answer with that status and no body;
* a ``(status, {header: value})`` tuple: the same with headers (e.g. ``Retry-After``).

``srv.headers[path]`` adds headers to every normal answer of ``path`` (e.g. Hugging Face's
``X-Linked-Etag`` / ``X-Repo-Commit``). Every request is recorded in ``srv.requests`` as
``(path, Range header or None)`` and its headers in ``srv.request_headers`` as ``(path, dict)``.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server.owner
        path = self.path.split("?", 1)[0]
        range_header = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((path, range_header))
            srv.request_headers.append((path, dict(self.headers.items())))
            queue = srv.faults.get(path)
            fault = queue.popleft() if queue else "ok"
        if isinstance(fault, int | tuple):
            status, extra = (fault, {}) if isinstance(fault, int) else fault
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = srv.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "wrong":
            data = bytes(b ^ 0xFF for b in data)
        start, status = 0, 200
        match = _RANGE.match(range_header or "")
        if match and fault != "ignore_range":
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in srv.headers.get(path, {}).items():
            self.send_header(name, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if fault == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FileServer


class FileServer:
    """Serve ``files`` (URL path -> bytes) on ``127.0.0.1:<free port>`` in a thread."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, deque[str | int | tuple[int, dict[str, str]]]] = defaultdict(deque)
        self.headers: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.request_headers: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def script(self, path: str, *faults: str | int | tuple[int, dict[str, str]]) -> None:
        """Queue faults for the next requests of ``path``."""
        self.faults[path].extend(faults)

    def requests_for(self, path: str) -> list[str | None]:
        """Range headers of the requests seen for ``path`` (None = no Range)."""
        return [r for p, r in self.requests if p == path]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
