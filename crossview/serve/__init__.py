"""``crossview serve``: a web page with a map over the photo -> pose pipeline (see ``crossview.serve.app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossview.locate.options import LocateOptions
from crossview.serve.app import MAX_UPLOAD_BYTES, App, Limits, Pipeline, Server, make_server, sniff

__all__ = ["MAX_UPLOAD_BYTES", "App", "Limits", "Pipeline", "Server", "locator_pipeline", "make_server", "sniff"]


def locator_pipeline(locator) -> Pipeline:
    """Adapt a loaded :class:`crossview.locate.Locator` to the app's ``pipeline(photo, options, out_dir)``.

    Pass ``tiles=locator.tiles`` to :func:`make_server` too: the map then shows the index and the candidates'
    footprints.
    """

    def pipeline(photo: Path, options: dict[str, Any], out_dir: Path) -> dict[str, Any]:
        return locator.locate(photo, LocateOptions.of(options, thumbnails=True), out=out_dir)

    return pipeline
