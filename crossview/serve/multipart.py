"""A streaming ``multipart/form-data`` reader: the file part goes to disk in 64 kB chunks, never whole into memory.

The body is read from the socket up to its ``Content-Length``, under an overall deadline; the one file field
(``photo``) is written to a path chosen by the caller (the client's file name is ignored), text fields are kept
(each at most ``max_field_bytes``), anything else is read and dropped. Every problem raises :class:`RequestError`
with the HTTP status and a message that says what to change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.message import Message
from email.parser import HeaderParser
from email.policy import HTTP
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 32


class RequestError(Exception):
    """A request the server refuses: the HTTP ``status`` and a ``message`` for the person who sent it."""

    def __init__(self, status: HTTPStatus | int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = int(status), message, dict(headers or {})


@dataclass
class Upload:
    """What a form upload held: its text ``fields``, and the file written to ``file`` (``size`` bytes, ``head`` its
    first bytes) when the form had one."""

    fields: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    size: int = 0
    head: bytes = b""


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, checked (RFC 2046: 1-70 characters)."""
    msg = Message()
    msg["content-type"] = content_type or ""
    boundary = msg.get_param("boundary")
    if msg.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        raise RequestError(HTTPStatus.BAD_REQUEST, "send the photo as multipart/form-data (a form upload)")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart upload: its boundary is not 1-70 ASCII "
                                                   "characters")
    return boundary.encode("ascii")


class _Body:
    """The request body: at most ``length`` bytes from ``rfile``, before ``deadline`` (time.monotonic)."""

    def __init__(self, rfile: BinaryIO, length: int, deadline: float):
        self.rfile, self.left, self.length, self.deadline = rfile, length, length, deadline
        # read1: whatever has arrived (one socket read), so the deadline is checked however slowly data trickles
        self._read = getattr(rfile, "read1", rfile.read)

    def read(self, n: int = CHUNK) -> bytes:
        if self.left <= 0:
            return b""
        if time.monotonic() > self.deadline:
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "the upload took too long; try again on a faster "
                                                           "connection or with a smaller photo")
        try:
            data = self._read(min(n, self.left))
        except TimeoutError:
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "the upload stalled (no data for a while); try "
                                                           "again") from None
        if not data:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"the upload ended after {self.length - self.left} of its "
                                                       f"{self.length} bytes; send it again")
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left > 0:
            self.read()


def drain(rfile: BinaryIO, length: int, deadline: float) -> None:
    """Read and drop a body of ``length`` bytes (so the client reads the answer rather than a reset)."""
    _Body(rfile, length, deadline).drain()


def read_multipart(rfile: BinaryIO, length: int, content_type: str, dest: Path, *, max_file_bytes: int,
                   deadline: float, file_field: str = "photo", max_field_bytes: int = 8192) -> Upload:
    """Read a ``multipart/form-data`` body of ``length`` bytes; the ``file_field`` file part goes to ``dest``.

    Raises RequestError: 400 (malformed, a field too long, cut short), 408 (past ``deadline`` or stalled),
    413 (the file over ``max_file_bytes``). ``dest`` may exist (partly written) after an error: the caller
    removes it.
    """
    delim = b"--" + boundary_of(content_type)
    sep = b"\r\n" + delim
    body, buf, up = _Body(rfile, length, deadline), bytearray(), Upload()

    def need(n: int) -> None:
        while len(buf) < n:
            chunk = body.read()
            if not chunk:
                raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart upload: it ends before its closing "
                                                           "boundary")
            buf.extend(chunk)

    # the preamble, up to the first delimiter (kept short)
    while (i := buf.find(delim)) < 0:
        if len(buf) > MAX_HEADER_BYTES:
            raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart upload: no boundary where expected")
        need(len(buf) + 1)
    del buf[:i + len(delim)]
    for _ in range(MAX_PARTS + 1):
        need(2)
        if buf[:2] == b"--":  # the closing delimiter: the rest is epilogue
            body.drain()
            return up
        if buf[:2] != b"\r\n":
            raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart upload: bad text after a boundary")
        del buf[:2]
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise RequestError(HTTPStatus.BAD_REQUEST, "malformed multipart upload: a part's headers are too long")
            need(len(buf) + 1)
        headers = HeaderParser(policy=HTTP).parsestr(bytes(buf[:end + 2]).decode("latin-1"))
        del buf[:end + 4]
        name = headers.get_param("name", header="content-disposition")
        is_file = headers.get_filename() is not None
        sink, size, text = None, 0, bytearray()
        if is_file and name == file_field and up.file is None:
            sink = open(dest, "xb")  # noqa: SIM115 - closed below, also on errors
            up.file = dest
        try:
            while True:
                i = buf.find(sep)
                data = bytes(buf[:i]) if i >= 0 else bytes(buf[:max(0, len(buf) - len(sep) + 1)])
                del buf[:len(data) + (len(sep) if i >= 0 else 0)]
                size += len(data)
                if sink is not None:
                    if size > max_file_bytes:
                        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the photo is too large: at most "
                                                                                f"{max_file_bytes / 2**20:g} MB is "
                                                                                "accepted")
                    if len(up.head) < 64:
                        up.head += data[:64 - len(up.head)]
                    sink.write(data)
                elif not is_file and name:
                    if size > max_field_bytes:
                        raise RequestError(HTTPStatus.BAD_REQUEST, f"form field {name!r} is too long (at most "
                                                                   f"{max_field_bytes} bytes)")
                    text += data
                if i >= 0:
                    break
                need(len(buf) + 1)
        finally:
            if sink is not None:
                sink.close()
        if sink is not None:
            up.size = size
        elif not is_file and name:
            up.fields[name] = text.decode("utf-8", "replace")
    raise RequestError(HTTPStatus.BAD_REQUEST, f"malformed multipart upload: more than {MAX_PARTS} parts")
