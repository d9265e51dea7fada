"""``crossview tiles``: cut geo-referenced aerial imagery into north-up tiles with a manifest."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tiles", help="cut geo-referenced aerial imagery into a tile set",
                       description="Write overlapping north-up tiles (true north) and manifest.json (tile id, file, "
                                   "centre lat/lon, metres per pixel, footprint corners). A GeoTIFF in any CRS is "
                                   "read window by window (memory stays bounded) and needs rasterio: "
                                   "pip install -e '.[geo]'.")
    p.add_argument("source", help="a GeoTIFF (or another raster GDAL reads), a PNG/JPEG with --corners, or a folder "
                                  "of satellite_<lat>_<lon>.png tiles")
    p.add_argument("--out", required=True, help="output folder (tiles/ and manifest.json)")
    p.add_argument("--corners", help="lat0,lon0,lat1,lon1: the north-west and south-east corners of a PNG/JPEG")
    p.add_argument("--tile-px", type=int, default=640, help="tile side in pixels (default 640)")
    p.add_argument("--overlap", type=float, default=0.5, help="fraction shared by neighbouring tiles (default 0.5)")
    p.add_argument("--mpp", type=float, help="metres per pixel: resample to it (images) or the tiles' own (folders); "
                                             "default: the source's own")
    p.add_argument("--copy", action="store_true", help="folder source: copy the tiles under --out")
    g = p.add_argument_group("GeoTIFF")
    g.add_argument("--bands", help="band numbers for red,green,blue (e.g. 4,3,2) or one for grey; default: the bands "
                                   "marked red/green/blue, else 1,2,3")
    g.add_argument("--stretch", default="auto", help="to 8 bits: auto (8-bit as is, else percentile), none, minmax, "
                                                     "percentile[:LO,HI] (default 2,98) or range:LO,HI")
    g.add_argument("--min-valid", type=float, default=0.5, help="skip tiles with a smaller fraction of valid "
                                                                "(not nodata/masked) pixels (default 0.5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from crossview.tiles import RasterOptions, build_tiles, parse_bands, parse_stretch, read_manifest

    parse_stretch(args.stretch)  # the cheap checks before any work
    raster = RasterOptions(bands=parse_bands(args.bands), stretch=args.stretch, min_valid=args.min_valid)
    manifest = build_tiles(args.source, args.out, corners=args.corners, tile_px=args.tile_px,
                           overlap=args.overlap, mpp=args.mpp, copy=args.copy, raster=raster)
    tiles = read_manifest(manifest)
    mpps = sorted(t.mpp for t in tiles)
    skipped = json.loads(manifest.read_text()).get("skipped")
    extra = f" ({skipped['mostly_empty']} skipped: under {skipped['min_valid']:.0%} valid pixels)" if skipped else ""
    print(f"{len(tiles)} tiles{extra}, {mpps[0]:.4f}-{mpps[-1]:.4f} m/px -> {manifest}")
    return 0
