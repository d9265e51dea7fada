"""Shared geometry: camera models, BEV projection, 2-D rigid transforms, Procrustes, RANSAC, angles, WGS84
geodesy (``geodesy``) and tile/geo conversions.

Frames used throughout (README.md, "Conventions"):
- image pixels: continuous (x right, y down), origin at the top-left corner of the image, pixel i spans [i, i+1];
- camera frame: x right, y forward (the centre column / optical axis at zero pitch), z up, metres;
- tile frame: metres east (x) and north (y) of the aerial tile centre; aerial tiles are north-up;
- headings: degrees clockwise from north at interfaces, radians inside.
"""

from crossview.geometry.angles import angle_diff_deg, wrap180
from crossview.geometry.bev import bev_grid, ground_plane_grid, pillar_grid, pixel_to_ground, warp_to_bev
from crossview.geometry.cameras import PanoramaCamera, PinholeCamera, fov_mask, roll_panorama
from crossview.geometry.geo import (
    distance_m,
    haversine_m,
    latlon_to_offset,
    metres_to_tile_pixel,
    offset_to_latlon,
    tile_pixel_to_metres,
    web_mercator_mpp,
)
from crossview.geometry.procrustes import weighted_procrustes
from crossview.geometry.ransac import ransac_procrustes
from crossview.geometry.transforms import apply_rigid, pose_to_rigid, rigid_to_pose, rotation_matrix

__all__ = [
    "PanoramaCamera", "PinholeCamera", "fov_mask", "roll_panorama",
    "bev_grid", "ground_plane_grid", "pillar_grid", "pixel_to_ground", "warp_to_bev",
    "angle_diff_deg", "wrap180", "distance_m", "haversine_m", "latlon_to_offset", "offset_to_latlon",
    "metres_to_tile_pixel", "tile_pixel_to_metres",
    "web_mercator_mpp", "weighted_procrustes", "ransac_procrustes",
    "apply_rigid", "pose_to_rigid", "rigid_to_pose", "rotation_matrix",
]
