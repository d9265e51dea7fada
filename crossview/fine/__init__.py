"""Fine-grained (metric) localization: a ground camera's position in metres and its heading inside a tile.

One registry for every method (``crossview.fine.registry``): the published HC-Net, FG² and GeoDistill (packages
``crossview.fine.hcnet``, ``.fg2``, ``.geodistill``), and designs of our own under names of their own (PillarMatch,
PlaneCorr, HomoFlow, BEVPost — not the published models). Every model is a ``FineLocalizer``; ``localize``
places one image, ``crossview.fine.evaluate`` runs the protocols, ``crossview.fine.train`` trains from presets.
``reproduce_official`` runs our model on an official fixture (docs/official_code_notes.md, "Official fixtures").
"""

from crossview.fine.loading import load_fine, save_fine
from crossview.fine.localize import localize
from crossview.fine.official import reproduce_official
from crossview.fine.pose import CameraSpec, Pose
from crossview.fine.registry import (
    ConversionReport,
    FineLocalizer,
    create_fine,
    fine_config,
    list_fine_models,
)

__all__ = ["localize", "Pose", "CameraSpec", "FineLocalizer", "ConversionReport", "create_fine", "fine_config",
           "list_fine_models", "load_fine", "save_fine", "reproduce_official"]
