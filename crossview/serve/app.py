"""The ``crossview serve`` web app on the standard library's HTTP server.

Routes (everything else is 404):

- ``GET /``, ``GET /static/<name>``: the page and its script and style sheet, read once from this package;
- ``GET /api/config``: the upload limit and the choices the form offers;
- ``POST /api/locate``: a ``multipart/form-data`` upload (``photo`` plus ``camera``, ``fov``, ``heading_prior``,
  ``near``, ``top_k``); answers the pipeline's JSON with its pictures as ``/results/<id>/<name>`` URLs;
- ``GET /results/<id>/<name>``: a file the pipeline wrote for request ``<id>`` (32 hex digits, made here).

Safety: uploads are capped (``max_bytes``) and must be JPEG or PNG by their first bytes (the client's file name and
type are ignored); files are only ever read from or written to ``data_dir`` under names made here; the pipeline
runs one request at a time. Errors come back as ``{"error": message}`` with a 4xx/5xx status and the page shows
them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from email import policy
from email.parser import BytesParser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from crossview.errors import CrossviewError

log = logging.getLogger("crossview.serve")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
CAMERAS = ("panorama", "pinhole", "drone")
MAGIC = {b"\xff\xd8\xff": ("jpg", "image/jpeg"), b"\x89PNG\r\n\x1a\n": ("png", "image/png")}
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg",
                 ".json": "application/json"}
_RESULT_ID = re.compile(r"^[0-9a-f]{32}$")
_RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.(?:png|jpg|json)$")
_STATIC_NAME = re.compile(r"^[a-z0-9_-]+\.(?:html|js|css)$")
CSP = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'"

# pipeline(photo_path, options, out_dir) -> result dict; pictures it mentions are file names inside out_dir.
Pipeline = Callable[[Path, dict[str, Any], Path], dict[str, Any]]


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def sniff(data: bytes) -> tuple[str, str] | None:
    """(extension, MIME type) of a JPEG or PNG from its first bytes; None for anything else."""
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    return None


def parse_options(fields: dict[str, str], max_top_k: int = 20) -> dict[str, Any]:
    """The form's text fields -> pipeline options, checked (raises RequestError 400 with the field named)."""
    camera = (fields.get("camera") or "panorama").strip()
    if camera not in CAMERAS:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"camera must be one of {', '.join(CAMERAS)}, not {camera!r}")
    options: dict[str, Any] = {"camera": camera, "fov_deg": None, "heading_prior": None, "near": None, "top_k": 5}
    fov = (fields.get("fov") or "").strip()
    if fov:
        try:
            options["fov_deg"] = float(fov)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"field of view {fov!r} is not a number of degrees") from None
    prior = (fields.get("heading_prior") or "").strip()
    options["heading_prior"] = prior or None
    near = (fields.get("near") or "").strip()
    options["near"] = None
    if near:
        from crossview.errors import ConfigError
        from crossview.locate import parse_near

        try:
            options["near"] = parse_near(near)
        except ConfigError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"rough location: {e}".replace("--near ", "")) from None
    top_k = (fields.get("top_k") or "").strip()
    if top_k:
        if not top_k.isdigit() or not 1 <= int(top_k) <= max_top_k:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"top-k must be a whole number from 1 to {max_top_k}")
        options["top_k"] = int(top_k)
    return options


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """(text fields, file fields) of a ``multipart/form-data`` body, via the standard library's MIME parser."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise RequestError(HTTPStatus.BAD_REQUEST, "send the photo as multipart/form-data (a form upload)")
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode()
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart():
        raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart upload")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = payload
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files


def _static_files() -> dict[str, bytes]:
    root = resources.files("crossview.serve") / "static"
    return {p.name: p.read_bytes() for p in root.iterdir() if _STATIC_NAME.match(p.name)}


class App:
    """State shared by the request handlers: the pipeline, the data folder, the limits."""

    def __init__(self, pipeline: Pipeline, data_dir: str | Path, max_bytes: int = MAX_UPLOAD_BYTES,
                 keep: int = 200, info: dict[str, Any] | None = None):
        self.pipeline, self.max_bytes, self.keep = pipeline, int(max_bytes), int(keep)
        self.data_dir = Path(data_dir).resolve()
        self.uploads, self.results = self.data_dir / "uploads", self.data_dir / "results"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self.static = _static_files()
        self.info = dict(info or {})
        self.lock = threading.Lock()  # one pipeline run at a time (model memory, thread safety)

    def config(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes, "cameras": list(CAMERAS), **self.info}

    def locate(self, content_type: str, body: bytes) -> dict[str, Any]:
        fields, files = parse_multipart(content_type, body)
        data = files.get("photo")
        if not data:
            raise RequestError(HTTPStatus.BAD_REQUEST, "choose a photo to upload (form field 'photo')")
        kind = sniff(data)
        if kind is None:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                               "only JPEG or PNG photos are accepted: this file is neither (checked by its content)")
        options = parse_options(fields)
        rid = uuid.uuid4().hex
        photo = self.uploads / f"{rid}.{kind[0]}"
        out_dir = self.results / rid
        out_dir.mkdir()
        photo.write_bytes(data)
        try:
            with self.lock:
                result = self.pipeline(photo, options, out_dir)
        except CrossviewError as exc:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from exc
        finally:
            photo.unlink(missing_ok=True)
        self._prune()
        return self._publish(rid, out_dir, result)

    def _publish(self, rid: str, out_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
        """Replace the pipeline's picture file names by URLs; drop local paths."""

        def url(name: Any) -> str | None:
            if not isinstance(name, str) or not name:
                return None
            name = Path(name).name
            return f"/results/{rid}/{name}" if _RESULT_NAME.match(name) and (out_dir / name).is_file() else None

        out = {k: v for k, v in result.items() if k not in ("picture", "photo", "out_dir", "json", "candidates")}
        out["id"] = rid
        out["picture_url"] = url(result.get("picture"))
        out["candidates"] = [{**{k: v for k, v in c.items() if k not in ("file", "thumbnail", "path")},
                              "thumbnail_url": url(c.get("thumbnail"))} for c in result.get("candidates", [])]
        return out

    def _prune(self) -> None:
        runs = sorted((p for p in self.results.iterdir() if p.is_dir() and _RESULT_ID.match(p.name)),
                      key=lambda p: p.stat().st_mtime)
        for old in runs[: max(0, len(runs) - self.keep)]:
            shutil.rmtree(old, ignore_errors=True)

    def result_file(self, path: str) -> Path | None:
        parts = path.split("/")
        if len(parts) != 4 or parts[:2] != ["", "results"]:
            return None
        rid, name = parts[2], parts[3]
        if not _RESULT_ID.match(rid) or not _RESULT_NAME.match(name):
            return None
        f = (self.results / rid / name).resolve()
        return f if f.is_file() and f.is_relative_to(self.results) else None


class Handler(BaseHTTPRequestHandler):
    server_version = "crossview"
    app: App  # set on the subclass made by make_server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, close: bool = False) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", close)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        self._json(status, {"error": message}, close)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = unquote(urlsplit(self.path).path)
        app = self.app
        if path in ("/", "/index.html"):
            return self._send(200, app.static["index.html"], CONTENT_TYPES[".html"])
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name in app.static:
                return self._send(200, app.static[name], CONTENT_TYPES[Path(name).suffix])
        elif path == "/api/config":
            return self._json(200, app.config())
        elif path.startswith("/results/"):
            f = app.result_file(path)
            if f is not None:
                return self._send(200, f.read_bytes(), CONTENT_TYPES[f.suffix])
        self._error(404, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/api/locate":
            return self._error(404, "not found")
        app = self.app
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._error(411, "the upload needs a Content-Length", close=True)
        length = int(length)
        limit = app.max_bytes + 64 * 1024  # room for the form's other fields and the multipart framing
        if length > limit:
            self._drain(length)
            mb = app.max_bytes / 2**20
            return self._error(413, f"the photo is too large: at most {mb:g} MB is accepted", close=True)
        body = self.rfile.read(length)
        try:
            result = app.locate(self.headers.get("Content-Type", ""), body)
        except RequestError as exc:
            return self._error(exc.status, exc.message)
        except Exception:  # a bug, not the user's fault: log it, answer briefly
            log.exception("locate failed")
            return self._error(500, "internal error while locating the photo; see the server log")
        self._json(200, result)

    def _drain(self, length: int) -> None:
        """Read and drop an oversized body (up to a cap) so the browser sees the 413 answer, not a reset."""
        left = min(length, 16 * self.app.max_bytes)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)


def make_server(pipeline: Pipeline, data_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                max_bytes: int = MAX_UPLOAD_BYTES, info: dict[str, Any] | None = None) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call ``serve_forever``) around ``pipeline``; ``port=0`` picks a free one."""
    app = App(pipeline, data_dir, max_bytes=max_bytes, info=info)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.app = app
    return server
