"""Shared geometry: camera models, BEV projection, 2-D rigid transforms, Procrustes, RANSAC, angles, WGS84
geodesy (``geodesy``) and tile/geo conversions.

Frames used throughout (README.md, "Conventions"):
- image pixels: continuous (x right, y down), origin at the top-left corner of the image, pixel i spans [i, i+1];
- camera frame: x right, y forward (the centre column / optical axis at zero pitch), z up, metres;
- tile frame: metres east (x) and north (y) of the aerial tile centre; aerial tiles are north-up;
- headings: degrees clockwise from north at interfaces, radians inside.
"""

# Submodules are imported on first use: the geodesy and geo conversions (numpy only) are used by code that must
# stay light (the region index's search), while cameras, BEV and RANSAC import torch.
_LAZY = {
    "angle_diff_deg": "angles", "wrap180": "angles",
    "bev_grid": "bev", "ground_plane_grid": "bev", "pillar_grid": "bev", "pixel_to_ground": "bev",
    "warp_to_bev": "bev",
    "PanoramaCamera": "cameras", "PinholeCamera": "cameras", "fov_mask": "cameras", "roll_panorama": "cameras",
    "distance_m": "geo", "haversine_m": "geo", "latlon_to_offset": "geo", "metres_to_tile_pixel": "geo",
    "offset_to_latlon": "geo", "tile_pixel_to_metres": "geo", "web_mercator_mpp": "geo",
    "weighted_procrustes": "procrustes", "ransac_procrustes": "ransac",
    "apply_rigid": "transforms", "pose_to_rigid": "transforms", "rigid_to_pose": "transforms",
    "rotation_matrix": "transforms",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"crossview.geometry.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'crossview.geometry' has no attribute {name!r}")


__all__ = [
    "PanoramaCamera", "PinholeCamera", "fov_mask", "roll_panorama",
    "bev_grid", "ground_plane_grid", "pillar_grid", "pixel_to_ground", "warp_to_bev",
    "angle_diff_deg", "wrap180", "distance_m", "haversine_m", "latlon_to_offset", "offset_to_latlon",
    "metres_to_tile_pixel", "tile_pixel_to_metres",
    "web_mercator_mpp", "weighted_procrustes", "ransac_procrustes",
    "apply_rigid", "pose_to_rigid", "rigid_to_pose", "rotation_matrix",
]
