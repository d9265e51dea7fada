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
``options`` (``LocateOptions``: one request's options, shared by the command line, the web page and the
evaluation), ``models`` (retrieval index and fine localizer), ``pipeline`` (``Locator``, ``locate``), ``scan``
(``--fine-search scan``, ``ScanConfig``), ``uncertainty`` (the calibration sidecar read at locate time),
``calibrate`` (fitting it), ``result`` (the ``Candidate`` / ``Result`` records), ``draw`` (pictures),
``evaluate`` (``demo_locate``).

Frames: positions inside a tile are metres east/north of its centre (``crossview.fine.Pose``), converted to
WGS84 lat/lon only when the answer is written; headings are degrees clockwise from north.
"""

from __future__ import annotations

from crossview.locate.area import parse_near, tile_geometry, tiles_near
from crossview.locate.draw import draw_result, draw_thumbnail
from crossview.locate.evaluate import demo_locate, held_out_photos, simulated_priors
from crossview.locate.models import _run_median_error, index_tiles, resolve_checkpoint, run_median_error
from crossview.locate.options import FINE_SEARCHES, LocateOptions, OptionError
from crossview.locate.photo import CAMERAS, Photo, parse_heading_prior, pinhole_to_panorama, read_photo
from crossview.locate.pipeline import Locator, locate
from crossview.locate.result import Candidate, FinePose, Result
from crossview.locate.scan import ScanConfig

__all__ = ["CAMERAS", "FINE_SEARCHES", "Candidate", "FinePose", "Result", "LocateOptions", "Locator", "OptionError",
           "Photo", "ScanConfig", "demo_locate", "draw_result", "draw_thumbnail", "held_out_photos", "index_tiles",
           "locate", "parse_heading_prior", "parse_near", "pinhole_to_panorama", "read_photo", "resolve_checkpoint",
           "run_median_error", "simulated_priors", "tile_geometry", "tiles_near", "_run_median_error"]
