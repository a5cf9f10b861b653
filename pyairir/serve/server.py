"""The web server of `pyairir serve`: the page, and a small JSON API over a RestorationService.

    GET  /                       the page (pyairir/serve/page.html)
    GET  /api/info               {"model", "max_pixels", "request_limit", "degradations", "iterations",
                                  "tile"}
    POST /api/jobs               {"image": base64, "clean": base64 | null, "degradation", "seed"}
                                 -> 202 {"id"}; a refused request -> 4xx {"error": message}
    GET  /api/jobs/ID            the job's state, progress, error or result
    GET  /api/jobs/ID/NAME.png   one of the job's images (input, restored, iterate-K)

Python's standard library serves it (http.server, one thread per connection: the page's polls are
answered while the single worker restores). Nothing the client sends is used as a path: job ids
and image names are looked up in the service's own tables.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files

from pyairir.serve.jobs import DEGRADATIONS, RestorationService

JOB_PATH = re.compile(r"^/api/jobs/([0-9a-f]{16})$")
DISCARD_AT_MOST = 2 ** 30  # a larger refused upload is cut off instead of read
IMAGE_PATH = re.compile(r"^/api/jobs/([0-9a-f]{16})/([a-z0-9-]{1,32})\.png$")


def request_limit(max_pixels: int) -> int:
    """The largest request body accepted: two images of max_pixels at 4 bytes a pixel (more than a
    PNG of photo content takes), base64-encoded, plus 1 MiB."""
    return int(2 * 4 * max_pixels * 4 / 3) + 2 ** 20


class Handler(BaseHTTPRequestHandler):
    service: RestorationService  # set on the subclass made by make_server
    server_version = "pyairir"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        """Quiet: a polled page would print a line every few hundred milliseconds."""

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, files("pyairir.serve").joinpath("page.html").read_bytes(),
                       "text/html; charset=utf-8")
        elif path == "/api/info":
            s = self.service
            self._json(HTTPStatus.OK, {"model": s.description, "max_pixels": s.max_pixels,
                                       "request_limit": request_limit(s.max_pixels),
                                       "degradations": list(DEGRADATIONS), "iterations": s.iterations,
                                       "tile": s.tile})
        elif match := JOB_PATH.match(path):
            try:
                self._json(HTTPStatus.OK, self.service.status(match[1]))
            except KeyError:
                self._error(HTTPStatus.NOT_FOUND, "no such job (finished jobs are kept for a while only)")
        elif match := IMAGE_PATH.match(path):
            try:
                body = self.service.file(match[1], match[2]).read_bytes()
            except (KeyError, FileNotFoundError):
                self._error(HTTPStatus.NOT_FOUND, "no such image")
                return
            self._send(HTTPStatus.OK, body, "image/png")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/api/jobs":
            self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
            return
        limit = request_limit(self.service.max_pixels)
        if length > limit:
            self._discard(length)  # read, so that the client, still sending, gets the answer
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the upload is {length / 2 ** 20:.1f} MiB, more than this server takes "
                        f"({limit / 2 ** 20:.1f} MiB for images up to {self.service.max_pixels:,} pixels)")
            return
        try:
            request = json.loads(self.rfile.read(length))
            if not isinstance(request, dict):
                raise ValueError("the request must be a JSON object")
            image = _decode(request.get("image"), "image")
            clean = _decode(request["clean"], "clean") if request.get("clean") else None
            seed = request.get("seed", 0)
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
                raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
            job = self.service.submit(image, clean, str(request.get("degradation", "none")), seed)
        except ValueError as error:  # json.JSONDecodeError is one
            self._error(HTTPStatus.BAD_REQUEST, str(error))
            return
        self._json(HTTPStatus.ACCEPTED, {"id": job.id})


    def _discard(self, length: int) -> None:
        if length > DISCARD_AT_MOST:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 2 ** 20))
            if not chunk:  # the client stopped sending
                break
            length -= len(chunk)


def _decode(value: object, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: expected the file's bytes in base64, got {type(value).__name__}")
    try:
        return base64.b64decode(value.split(",", 1)[-1], validate=True)  # a data: URL's prefix is skipped
    except binascii.Error as error:
        raise ValueError(f"{name}: not valid base64 ({error})") from None


def make_server(service: RestorationService, host: str = "127.0.0.1", port: int = 7860) -> ThreadingHTTPServer:
    """An HTTP server for `service` on host:port (port 0: any free port; see server.server_port)."""
    handler = type("ServiceHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
