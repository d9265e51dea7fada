"""Fine-grained (metric) localization: a ground camera's position in metres and its heading inside a tile.

Methods: FG² (``crossview.fine.fg2``) and GeoDistill (``crossview.fine.geodistill``); both behind ``localize``.
"""

from crossview.fine.localize import localize
from crossview.fine.pose import CameraSpec, Pose

__all__ = ["localize", "Pose", "CameraSpec"]
