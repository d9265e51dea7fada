"""The ``crossview serve`` web app on the standard library's HTTP server.

Routes (everything else is 404):

- ``GET /``, ``GET /static/<path>``: the page, its script and style sheet and the vendored Leaflet, read once from
  this package;
- ``GET /api/config``: the limits and choices the form offers, the map's summary and the queue's state;
- ``GET /api/tiles``: the index on the map: its tiles' bounds and thumbnail URLs, or its coverage;
- ``GET /tiles/<n>.jpg``: a thumbnail of indexed tile ``n`` (made once, cached in the data folder);
- ``POST /api/locate``: a ``multipart/form-data`` upload (``photo`` plus ``camera``, ``fov``, ``heading_prior``,
  ``near``, ``top_k``); answers the pipeline's JSON with its pictures as ``/results/<id>/<name>`` URLs and each
  candidate's tile footprint;
- ``GET /results/<id>/<name>``: a file the pipeline wrote for request ``<id>`` (32 hex digits, made here).

Holding up under load and abuse (:class:`Limits`): at most ``workers`` locates run at once and ``queue`` more wait;
beyond that a request is answered 503 with ``Retry-After`` at once. Uploads stream to disk in 64 kB chunks
(``crossview.serve.multipart``), capped in bytes (413), and must be JPEG, PNG or HEIC by their first bytes (415)
with at most ``max_pixels`` pixels by their header (413: decompression bombs), and decode completely (400:
truncated).
Sockets time out (``socket_timeout_s`` without data), uploads have a deadline (408), locates too (504); at most
``max_connections`` connections are served at once. Files are only read from or written to ``data_dir`` under names
made here; result folders are removed on a schedule (``crossview.serve.janitor``). Every request is logged as one
JSON line (``crossview.serve.logs``). Errors come back as ``{"error": message}`` and the page shows them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from crossview.errors import CrossviewError
from crossview.locate.options import CAMERAS, FINE_SEARCHES, LocateOptions, OptionError
from crossview.serve.janitor import RESULT_ID, Janitor, sweep
from crossview.serve.jobs import JobQueue
from crossview.serve.logs import event
from crossview.serve.maps import footprint, region_layer, thumbnail, tile_layer
from crossview.serve.multipart import CHUNK, RequestError, Upload, drain, read_multipart

if TYPE_CHECKING:
    from crossview.tiles import Tile

log = logging.getLogger("crossview.serve")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
FORM_OVERHEAD = 64 * 1024  # the form's other fields and the multipart framing
MAGIC = {b"\xff\xd8\xff": ("jpg", "image/jpeg"), b"\x89PNG\r\n\x1a\n": ("png", "image/png")}
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg",
                 ".svg": "image/svg+xml", ".json": "application/json"}
_RESULT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}\.(?:png|jpg|json)$")
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.(?:html|js|css|png|svg)$")
_TILE_PATH = re.compile(r"^/tiles/(\d{1,7})\.jpg$")
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")

# pipeline(photo_path, options, out_dir) -> result dict; pictures it mentions are file names inside out_dir.
Pipeline = Callable[[Path, dict[str, Any], Path], dict[str, Any]]

__all__ = ["CAMERAS", "CSP", "MAX_UPLOAD_BYTES", "App", "Limits", "Pipeline", "RequestError", "Server",
           "make_server", "parse_options", "sniff"]


@dataclass(frozen=True)
class Limits:
    """How much the server takes on. Sizes in bytes or pixels, times in seconds."""

    max_bytes: int = MAX_UPLOAD_BYTES  # largest photo file accepted
    max_pixels: int = 64_000_000  # largest photo by its header's width x height (decompression bombs)
    workers: int = 1  # locates run at once (each holds the models' working memory)
    queue: int = 4  # requests waiting for a worker (or still uploading) beyond those; more are answered 503
    max_connections: int = 64  # connections served at once; more are answered 503 without being read
    socket_timeout_s: float = 30.0  # a connection silent this long is dropped
    upload_timeout_s: float = 120.0  # an upload still incomplete after this long is answered 408
    locate_timeout_s: float = 300.0  # waiting plus locating longer than this is answered 504 (or 503 if still queued)
    keep_results: int = 200  # result folders kept at most
    keep_s: float = 3600.0  # result folders older than this are removed
    sweep_s: float = 60.0  # how often the clean-up runs


def sniff(data: bytes) -> tuple[str, str] | None:
    """(extension, MIME type) of a JPEG, PNG or HEIC / HEIF photo from its first bytes; None for anything else."""
    for magic, kind in MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:  # an ISO base-media file of an image brand
        return ("heic", "image/heic")
    return None


# the form's fields, as LocateOptions fields; the page sends no others
FORM_OPTIONS = ("camera", "fov_deg", "heading_prior", "near", "top_k", "fine_search")


def parse_options(fields: dict[str, str], max_top_k: int = 20) -> dict[str, Any]:
    """The form's text fields -> pipeline options (:data:`FORM_OPTIONS` of a checked :class:`LocateOptions`);
    raises RequestError 400 with the field named. A heading prior that does not parse is the locator's own user
    error (a ConfigError, answered 422)."""
    camera = (fields.get("camera") or "auto").strip()
    search = (fields.get("search") or "auto").strip()
    fov, top_k = (fields.get("fov") or "").strip(), (fields.get("top_k") or "").strip()
    try:
        fov_deg = float(fov) if fov else None
    except ValueError:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"field of view {fov!r} is not a number of degrees") from None
    if top_k and (not top_k.isdigit() or not 1 <= int(top_k) <= max_top_k):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"top-k must be a whole number from 1 to {max_top_k}")
    try:
        options = LocateOptions(camera=camera, fov_deg=fov_deg, heading_prior=fields.get("heading_prior"),
                                near=fields.get("near"), top_k=int(top_k) if top_k else 5, fine_search=search)
    except OptionError as e:
        if e.option == "camera":
            raise RequestError(HTTPStatus.BAD_REQUEST, f"camera must be one of {', '.join(CAMERAS)}, not "
                                                       f"{camera!r}") from None
        if e.option == "fine_search":
            raise RequestError(HTTPStatus.BAD_REQUEST, f"search must be one of {', '.join(FINE_SEARCHES)}, not "
                                                       f"{search!r}") from None
        if e.option == "near":
            raise RequestError(HTTPStatus.BAD_REQUEST, f"rough location: {e}".replace("--near ", "")) from None
        raise
    return {k: getattr(options, k) for k in FORM_OPTIONS}


def image_size(path: Path, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding it; 415 if unreadable, 413 if over
    ``max_pixels``."""
    from PIL import Image, UnidentifiedImageError

    from crossview.locate.photo import register_heif

    register_heif()
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        if isinstance(exc, Image.DecompressionBombError):
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the photo decodes to too many pixels ({exc}): "
                               f"at most {max_pixels / 1e6:g} megapixels are accepted; downscale it") from None
        raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "the photo starts like a JPEG, PNG or HEIC but its "
                                                              f"header is unreadable ({exc}); re-export it") from None
    if w * h > max_pixels:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"the photo is {w} x {h} = {w * h / 1e6:.0f} megapixels decoded: at most "
                           f"{max_pixels / 1e6:g} megapixels are accepted; downscale it")
    return w, h


def check_decodes(path: Path, size: tuple[int, int]) -> None:
    """Decode the photo once (a JPEG at 1/8 scale: every byte is still read) so a truncated or damaged file is
    refused with a 400 before the models see it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the photo is truncated or damaged ({exc}); re-export or "
                                                   "upload it again") from None


def _static_files() -> dict[str, bytes]:
    """Every servable file under ``static/`` by its path relative to it (``vendor/leaflet/leaflet.js``)."""
    root = resources.files("crossview.serve") / "static"
    out: dict[str, bytes] = {}

    def walk(node, prefix: str) -> None:
        for p in node.iterdir():
            if p.is_dir():
                walk(p, f"{prefix}{p.name}/")
            elif _STATIC_NAME.match(p.name):
                out[prefix + p.name] = p.read_bytes()

    walk(root, "")
    return out


class App:
    """State shared by the request handlers: the pipeline, the data folder, the limits, the queue, the tiles.

    ``tiles``: the index's tiles (a list, or index id -> Tile as ``Locator.tiles``; a region index's tiles, which
    are read when asked, give the map its cells' coverage instead) for the map and the candidates' footprints;
    ``info``: shown by ``/api/config`` (index and model names).
    """

    def __init__(self, pipeline: Pipeline, data_dir: str | Path, limits: Limits = Limits(),
                 info: dict[str, Any] | None = None, tiles: Mapping[str, Tile] | list[Tile] | None = None):
        self.pipeline, self.limits = pipeline, limits
        self.data_dir = Path(data_dir).resolve()
        self.uploads, self.results = self.data_dir / "uploads", self.data_dir / "results"
        self.thumbs = self.data_dir / "tile_thumbs"
        for d in (self.uploads, self.results, self.thumbs):
            d.mkdir(parents=True, exist_ok=True)
        self.static = _static_files()
        self.info = dict(info or {})
        if tiles is not None and not isinstance(tiles, Mapping | list):  # a region index's tiles, read when asked
            self.tiles_by_id, self.tile_list, self.layer = tiles, [], region_layer(tiles.index)
        else:
            by_id = dict(tiles) if isinstance(tiles, Mapping) else {t.id: t for t in tiles or []}
            self.tiles_by_id = by_id
            self.tile_list = list({id(t): t for t in by_id.values()}.values())
            self.layer = tile_layer(self.tile_list)
        self.jobs = JobQueue(limits.workers, limits.queue)
        self.active: set[str] = set()  # request ids in progress: the clean-up leaves them alone
        self._active_lock = threading.Lock()
        self.sweep_args = {"results": self.results, "uploads": self.uploads, "keep": limits.keep_results,
                           "keep_s": limits.keep_s, "busy": self.busy,
                           "stale_upload_s": 2 * (limits.upload_timeout_s + limits.locate_timeout_s)}
        self.janitor = Janitor(limits.sweep_s, **self.sweep_args)

    def busy(self) -> set[str]:
        with self._active_lock:
            return set(self.active)

    def config(self) -> dict[str, Any]:
        """What ``/api/config`` answers."""
        lim = self.limits
        return {"max_bytes": lim.max_bytes, "max_pixels": lim.max_pixels, "cameras": list(CAMERAS),
                "map": {k: self.layer.get(k) for k in ("mode", "count", "bounds")}, "queue": self.jobs.stats(),
                **self.info}

    # -- POST /api/locate --
    def locate_request(self, rfile, length: int, content_type: str, log_fields: dict[str, Any]) -> dict[str, Any]:
        """Admit, stream, check and locate one upload; the answer's JSON or a RequestError."""
        lim = self.limits
        deadline = time.monotonic() + lim.upload_timeout_s
        ticket = self.jobs.admit()
        if ticket is None:
            raise self._refuse_busy(rfile, length, deadline, log_fields)
        rid = uuid.uuid4().hex
        log_fields["rid"] = rid
        with self._active_lock:
            self.active.add(rid)
        part = self.uploads / f"{rid}.part"
        photo = out_dir = None
        submitted = False
        try:
            up, kind = self._receive(rfile, length, content_type, part, deadline)
            photo = part.rename(self.uploads / f"{rid}.{kind[0]}")
            size = image_size(photo, lim.max_pixels)
            log_fields.update(bytes=up.size, pixels=list(size))
            options = parse_options(up.fields)
            out_dir = self.results / rid
            out_dir.mkdir()
            work, abandoned, timing = self._job(photo, size, options, out_dir)
            future = self.jobs.submit(ticket, work)
            submitted = True
            result = self._wait(future, abandoned, photo)
            log_fields.update(timing)
            return self._publish(rid, out_dir, result, timing)
        except RequestError:
            self._discard(out_dir)
            raise
        except CrossviewError as exc:  # the user's photo or options do not fit the models: say why
            self._discard(out_dir)
            raise RequestError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from exc
        except Exception:
            self._discard(out_dir)
            log.exception("locate failed", extra={"fields": {"rid": rid}})
            raise RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error while locating the photo; see the "
                                                                 "server log") from None
        finally:
            if not submitted:
                ticket.release()
                for p in (part, photo):
                    if p is not None:
                        p.unlink(missing_ok=True)
            with self._active_lock:
                self.active.discard(rid)
            self._prune()

    def _refuse_busy(self, rfile, length: int, deadline: float, log_fields: dict[str, Any]) -> RequestError:
        """Read an upload the queue has no room for; the 503 (with ``Retry-After``) to answer it with."""
        drain(rfile, length, deadline)  # read it so the client sees the answer, not a reset
        retry = self.jobs.retry_after_s()
        log_fields["retry_after_s"] = retry
        return RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"the server is busy ({self.jobs.capacity} photos are "
                                                            f"being located or waiting); retry in {retry} s",
                            {"Retry-After": str(retry)})

    def _receive(self, rfile, length: int, content_type: str, part: Path,
                 deadline: float) -> tuple[Upload, tuple[str, str]]:
        """Stream the upload to ``part``; (the upload, its (suffix, media type) by content) when it is a JPEG, PNG or
        HEIC."""
        up = read_multipart(rfile, length, content_type, part, max_file_bytes=self.limits.max_bytes, deadline=deadline)
        if up.file is None or up.size == 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "choose a photo to upload (form field 'photo')")
        kind = sniff(up.head)
        if kind is None:
            raise RequestError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "only JPEG, PNG or HEIC photos are accepted: this "
                                                                  "file is none of them (checked by its content)")
        return up, kind

    def _job(self, photo: Path, size: tuple[int, int], options: dict[str, Any],
             out_dir: Path) -> tuple[Callable[[], dict[str, Any]], threading.Event, dict[str, float]]:
        """(the queued work: check, locate, remove the upload; its abandon flag; the timing it fills in)."""
        abandoned = threading.Event()
        queued_at = time.monotonic()
        timing: dict[str, float] = {}

        def work() -> dict[str, Any]:
            try:
                if abandoned.is_set():
                    raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, "abandoned")
                t0 = time.monotonic()
                timing["queued_s"] = round(t0 - queued_at, 3)
                check_decodes(photo, size)
                result = self.pipeline(photo, options, out_dir)
                timing["locate_s"] = round(time.monotonic() - t0, 3)
                return result
            finally:
                photo.unlink(missing_ok=True)
                if abandoned.is_set():
                    shutil.rmtree(out_dir, ignore_errors=True)

        return work, abandoned, timing

    def _wait(self, future: Future, abandoned: threading.Event, photo: Path) -> dict[str, Any]:
        """The job's result within ``locate_timeout_s``; else it is abandoned: 503 if it never started, else 504."""
        lim = self.limits
        try:
            return future.result(timeout=lim.locate_timeout_s)
        except FutureTimeout:
            abandoned.set()
            if future.cancel():  # still waiting: it never ran, so its upload is ours to remove
                photo.unlink(missing_ok=True)
                retry = self.jobs.retry_after_s()
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"the server is busy: your photo waited "
                                                                   f"{lim.locate_timeout_s:g} s for its turn; "
                                                                   f"retry in {retry} s",
                                   {"Retry-After": str(retry)}) from None
            raise RequestError(HTTPStatus.GATEWAY_TIMEOUT, f"locating the photo took longer than "
                                                           f"{lim.locate_timeout_s:g} s; try a smaller photo "
                                                           "or fewer tiles (top-k)") from None

    @staticmethod
    def _discard(out_dir: Path | None) -> None:
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)

    def _publish(self, rid: str, out_dir: Path, result: dict[str, Any], timing: dict[str, float]) -> dict[str, Any]:
        """Replace the pipeline's picture file names by URLs; drop local paths; add the candidates' footprints."""

        def url(name: Any) -> str | None:
            if not isinstance(name, str) or not name:
                return None
            name = Path(name).name
            return f"/results/{rid}/{name}" if _RESULT_NAME.match(name) and (out_dir / name).is_file() else None

        out = {k: v for k, v in result.items() if k not in ("picture", "photo", "out_dir", "json", "candidates")}
        out["id"] = rid
        out["picture_url"] = url(result.get("picture"))
        out["timing"] = timing
        cands = []
        for c in result.get("candidates", []):
            tile = self.tiles_by_id.get(str(c.get("tile")))
            cands.append({**{k: v for k, v in c.items() if k not in ("file", "thumbnail", "path")},
                          "thumbnail_url": url(c.get("thumbnail")),
                          "footprint": footprint(tile) if tile is not None else None})
        out["candidates"] = cands
        post = result.get("posterior")
        if isinstance(post, dict):  # the heat map as a URL for the page's image overlay
            out["posterior"] = {**{k: v for k, v in post.items() if k != "heat_map"},
                                "heat_map_url": url(post.get("heat_map"))}
        return out

    def _prune(self) -> None:
        """Keep at most ``keep_results`` result folders (the janitor also removes old ones on its schedule)."""
        sweep(**{**self.sweep_args, "keep_s": float("inf"), "stale_upload_s": float("inf")})

    # -- GET --
    def result_file(self, path: str) -> Path | None:
        """The file ``/results/<id>/<name>`` names, when it is one the pipeline wrote; else None."""
        parts = path.split("/")
        if len(parts) != 4 or parts[:2] != ["", "results"]:
            return None
        rid, name = parts[2], parts[3]
        if not RESULT_ID.match(rid) or not _RESULT_NAME.match(name):
            return None
        f = (self.results / rid / name).resolve()
        return f if f.is_file() and f.is_relative_to(self.results) else None

    def tile_thumbnail(self, path: str) -> Path | None:
        """The thumbnail ``/tiles/<n>.jpg`` names (made on first use); None when there is no tile ``n``."""
        m = _TILE_PATH.match(path)
        if not m or int(m.group(1)) >= len(self.tile_list) or self.layer.get("mode") != "images":
            return None
        n = int(m.group(1))
        try:
            return thumbnail(self.tile_list[n], self.thumbs, n)
        except OSError as exc:
            event("tile_thumbnail_failed", level=logging.WARNING, tile=self.tile_list[n].id, error=str(exc))
            return None


class Handler(BaseHTTPRequestHandler):
    """One connection: routes GET/HEAD/POST to the :class:`App`, logs one JSON line per request."""

    server_version = "crossview"
    app: App  # set on the subclass made by make_server
    timeout = Limits.socket_timeout_s  # idem: applied to the socket by StreamRequestHandler.setup

    def handle_one_request(self) -> None:
        self._t0, self._status, self._fields = time.monotonic(), None, {}
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError) as exc:
            self.close_connection = True
            self._fields["connection"] = type(exc).__name__
        finally:
            if self._status is not None:
                event("request", method=self.command, path=urlsplit(self.path or "").path, status=self._status,
                      ms=round(1000 * (time.monotonic() - self._t0), 1), client=self.client_address[0],
                      **self._fields)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self._status = int(code) if str(code).isdigit() else code

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        event("http_error", level=logging.WARNING, client=self.client_address[0], message=format % args)

    def _send(self, status: int, body: bytes, content_type: str, close: bool = False,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, close: bool = False, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", close, headers)

    def _error(self, status: int, message: str, close: bool = False, headers: dict[str, str] | None = None) -> None:
        self._fields.setdefault("error", message)
        self._json(status, {"error": message, **({"retry_after_s": int(headers["Retry-After"])}
                                                 if headers and "Retry-After" in headers else {})}, close, headers)

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
        elif path == "/api/tiles":
            return self._json(200, app.layer)
        elif path.startswith("/tiles/"):
            f = app.tile_thumbnail(path)
            if f is not None:
                return self._send(200, f.read_bytes(), CONTENT_TYPES[".jpg"])
        elif path.startswith("/results/"):
            f = app.result_file(path)
            if f is not None:
                return self._send(200, f.read_bytes(), CONTENT_TYPES[f.suffix])
        self._error(404, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/api/locate":
            return self._error(404, "not found", close=True)
        app = self.app
        if self.headers.get("Transfer-Encoding"):
            return self._error(411, "send the upload with a Content-Length (chunked uploads are not accepted)",
                               close=True)
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            return self._error(411, "the upload needs a Content-Length", close=True)
        length = int(length)
        if length > app.limits.max_bytes + FORM_OVERHEAD:
            self._drain(length)
            mb = app.limits.max_bytes / 2**20
            return self._error(413, f"the photo is too large: at most {mb:g} MB is accepted", close=True)
        try:
            result = app.locate_request(self.rfile, length, self.headers.get("Content-Type", ""), self._fields)
        except RequestError as exc:
            return self._error(exc.status, exc.message, close=True, headers=exc.headers)
        self._json(200, result)

    def _drain(self, length: int) -> None:
        """Read and drop an oversized body (up to a cap) so the browser sees the 413 answer, not a reset."""
        left = min(length, 16 * self.app.limits.max_bytes)
        deadline = time.monotonic() + self.app.limits.upload_timeout_s
        while left > 0 and time.monotonic() < deadline:
            try:
                chunk = self.rfile.read(min(left, CHUNK))
            except TimeoutError:
                break
            if not chunk:
                break
            left -= len(chunk)


_BUSY = json.dumps({"error": "the server has too many connections open; retry in 5 s", "retry_after_s": 5}).encode()
_BUSY_RESPONSE = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


class Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once (more get a 503 unread), with the clean-up
    running while it serves."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog (socketserver's 5 resets a burst of uploads before accept)
    app: App

    def __init__(self, address: tuple[str, int], handler: type[Handler], app: App):
        self.app = app
        self._conn_lock, self._open = threading.Lock(), 0
        super().__init__(address, handler)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        with self._conn_lock:
            full = self._open >= self.app.limits.max_connections
            if not full:
                self._open += 1
        if full:
            event("refused", level=logging.WARNING, client=client_address[0], reason="max_connections")
            try:
                request.settimeout(1.0)
                request.sendall(_BUSY_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            with self._conn_lock:
                self._open -= 1
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._open -= 1

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.app.janitor.start()
        super().serve_forever(poll_interval)

    def server_close(self) -> None:
        self.app.janitor.stop()
        self.app.jobs.shutdown()
        super().server_close()


def make_server(pipeline: Pipeline, data_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
                max_bytes: int | None = None, info: dict[str, Any] | None = None,
                tiles: Mapping[str, Tile] | list[Tile] | None = None, limits: Limits | None = None) -> Server:
    """An HTTP server (not yet serving: call ``serve_forever``) around ``pipeline``; ``port=0`` picks a free one.

    ``limits``: see :class:`Limits` (``max_bytes`` overrides its upload cap); ``tiles``: the index's tiles, for the
    map; ``info``: extra entries for ``/api/config``.
    """
    limits = limits or Limits()
    if max_bytes is not None:
        limits = replace(limits, max_bytes=int(max_bytes))
    app = App(pipeline, data_dir, limits=limits, info=info, tiles=tiles)
    handler = type("BoundHandler", (Handler,), {"app": app, "timeout": limits.socket_timeout_s})
    return Server((host, port), handler, app)
