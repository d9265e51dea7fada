"""Where was this photo taken? The photo -> pose pipeline.

``photo -> check (image? aspect for the camera? EXIF?) -> embed with the index's retrieval model -> top-k tiles
-> fine localization inside the best ``refine`` tiles (when a fine model is given) -> best by confidence ->
lat/lon at the edge``. Stage functions:

- :func:`read_photo` checks a photo against its camera model and applies the EXIF orientation;
- :func:`index_tiles` embeds a tile set (``crossview tiles``) with a retrieval model and saves a search index
  whose sidecar records the model's checkpoint and the tile manifest;
- :class:`Locator` holds the loaded index, models and tiles (the web app keeps one); :func:`locate` is the
  one-call form;
- :func:`demo_locate` measures the whole chain on held-out photos of the synthetic world.

Modules: ``photo`` (reading photos, cameras, EXIF, the heading prior), ``area`` (the ``--near`` search area),
``models`` (retrieval index and fine localizer), ``pipeline`` (``Locator``, ``locate``), ``result`` (the
``Candidate`` / ``Result`` records), ``draw`` (pictures),
``benchmark`` (``demo_locate``).

Frames: positions inside a tile are metres east/north of its centre (``crossview.fine.Pose``), converted to
WGS84 lat/lon only when the answer is written; headings are degrees clockwise from north.
"""

from __future__ import annotations

from crossview.locate.area import parse_near, tile_geometry, tiles_near
from crossview.locate.benchmark import demo_locate
from crossview.locate.draw import draw_result, draw_thumbnail
from crossview.locate.models import _run_median_error, index_tiles, resolve_checkpoint
from crossview.locate.photo import CAMERAS, Photo, parse_heading_prior, pinhole_to_panorama, read_photo
from crossview.locate.pipeline import Locator, locate
from crossview.locate.result import Candidate, FinePose, Result

__all__ = ["CAMERAS", "Candidate", "FinePose", "Result", "Locator", "Photo", "demo_locate", "draw_result",
           "draw_thumbnail", "index_tiles", "locate", "parse_heading_prior", "parse_near", "pinhole_to_panorama",
           "read_photo", "resolve_checkpoint", "tile_geometry", "tiles_near", "_run_median_error"]
