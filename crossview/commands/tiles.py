"""``crossview tiles``: cut geo-referenced aerial imagery into north-up tiles with a manifest."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiles", help="cut geo-referenced aerial imagery into a tile set",
                       description="Write overlapping north-up tiles and manifest.json (tile id, file, centre "
                                   "lat/lon, metres per pixel, footprint corners).")
    p.add_argument("source", help="a GeoTIFF (needs rasterio), a PNG/JPEG with --corners, or a folder of "
                                  "satellite_<lat>_<lon>.png tiles")
    p.add_argument("--out", required=True, help="output folder (tiles/ and manifest.json)")
    p.add_argument("--corners", help="lat0,lon0,lat1,lon1: the north-west and south-east corners of a PNG/JPEG")
    p.add_argument("--tile-px", type=int, default=640, help="tile side in pixels (default 640)")
    p.add_argument("--overlap", type=float, default=0.5, help="fraction shared by neighbouring tiles (default 0.5)")
    p.add_argument("--mpp", type=float, help="metres per pixel: resample to it (images) or the tiles' own (folders)")
    p.add_argument("--copy", action="store_true", help="folder source: copy the tiles under --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crossview.tiles import build_tiles, read_manifest

    manifest = build_tiles(args.source, args.out, corners=args.corners, tile_px=args.tile_px,
                           overlap=args.overlap, mpp=args.mpp, copy=args.copy)
    tiles = read_manifest(manifest)
    mpps = sorted(t.mpp for t in tiles)
    print(f"{len(tiles)} tiles, {mpps[0]:.4f}-{mpps[-1]:.4f} m/px -> {manifest}")
    return 0
