"""Structured logs for ``crossview serve``: one JSON object per line (``ts``, ``level``, ``event`` and fields).

``event("request", status=200, ms=12.5, ...)`` logs through the ``crossview.serve`` logger; :func:`configure`
sends that logger's records, as JSON lines, to stderr or a file.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("crossview.serve")


class JsonLines(logging.Formatter):
    """A record -> ``{"ts": ISO-8601 UTC, "level", "event", **fields}`` on one line (``error`` with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                               "level": record.levelname.lower(), "event": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event ``name`` with its ``fields`` (JSON-ready values) on the ``crossview.serve`` logger."""
    log.log(level, name, extra={"fields": fields})


def configure(path: str | Path | None = None, stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """Write the server's events as JSON lines to ``path`` (appended) or ``stream`` (default stderr)."""
    handler: logging.Handler = logging.FileHandler(path, encoding="utf-8") if path else \
        logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLines())
    for old in list(log.handlers):
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
