"""Scheduled clean-up of the server's data folder: old per-request result folders and stray uploads.

Every ``every_s`` seconds a daemon thread removes result folders older than ``keep_s`` (and the oldest beyond
``keep`` of them), uploads older than ``stale_upload_s`` (a request that died mid-way), and nothing a request in
progress still uses (``busy()`` names those).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from crossview.serve.logs import event

RESULT_ID = re.compile(r"^[0-9a-f]{32}$")


def sweep(results: Path, uploads: Path, *, keep: int, keep_s: float, stale_upload_s: float,
          busy: Callable[[], set[str]] = set) -> dict[str, int]:
    """One clean-up pass; returns how many result folders and uploads it removed."""
    now, in_use = time.time(), busy()
    runs = []
    for p in results.iterdir():
        if p.is_dir() and RESULT_ID.match(p.name) and p.name not in in_use:
            try:
                runs.append((p.stat().st_mtime, p))
            except FileNotFoundError:
                continue
    runs.sort()
    old = [p for i, (t, p) in enumerate(runs) if now - t > keep_s or i < len(runs) - keep]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
    stale = 0
    for p in uploads.iterdir():
        try:
            if p.is_file() and p.name[:32] not in in_use and now - p.stat().st_mtime > stale_upload_s:
                p.unlink(missing_ok=True)
                stale += 1
        except FileNotFoundError:
            continue
    return {"results_removed": len(old), "uploads_removed": stale}


class Janitor:
    """Runs :func:`sweep` every ``every_s`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, every_s: float, **sweep_args):
        self.every_s, self.sweep_args = float(every_s), sweep_args
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crossview-janitor", daemon=True)

    def start(self) -> Janitor:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                removed = sweep(**self.sweep_args)
            except OSError as exc:  # a vanished folder or a permission problem: say so, try again next time
                event("cleanup_failed", error=str(exc))
                continue
            if any(removed.values()):
                event("cleanup", **removed)
