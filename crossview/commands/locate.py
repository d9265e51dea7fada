"""``crossview locate``: where was this photo taken? And ``crossview locate-index``: the tile index it searches."""

from __future__ import annotations

import argparse

from crossview.commands.fine import add_fine_release_arguments
from crossview.device import add_precision_args
from crossview.locate.options import CAMERAS, FINE_SEARCHES
from crossview.safe_load import add_trust_argument


def add_tile_cache_argument(p: argparse.ArgumentParser) -> None:
    """``--tile-cache``: where ``locate`` and ``serve`` keep the tiles they cut from a raster-built region index."""
    p.add_argument("--tile-cache", metavar="DIR",
                   help="keep the tiles cut from the rasters of a region index here, for later runs (default: a "
                        "temporary folder, removed at exit)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("locate", help="estimate where a photo was taken (lat/lon, heading) against a tile index",
                       description="Retrieve the top-k aerial tiles for a photo, refine the position inside the "
                                   "best ones with a fine model (if given), and print + write the answer as JSON "
                                   "with a picture of the position and heading on the tile.")
    p.add_argument("photo", help="JPEG, PNG or HEIC: a 2:1 panorama, an ordinary (pinhole) photo or a drone image")
    p.add_argument("--index", required=True, help="index from `crossview locate-index`")
    p.add_argument("--camera", default="auto", choices=list(CAMERAS),
                   help="auto (default): a 2:1 photo or a photo sphere is a panorama, any other an ordinary "
                        "(pinhole) photo, its field of view from --fov or the EXIF focal length")
    p.add_argument("--fov", type=float, help="horizontal field of view of a pinhole photo, degrees (default: from "
                                             "the EXIF focal length)")
    p.add_argument("--heading-prior", help="DEG±ERR: heading of the panorama centre / photo axis, clockwise from "
                                           "north, and its uncertainty (e.g. 90±20 or 90+-20; negative: "
                                           "--heading-prior=-30±10); default: the EXIF compass direction "
                                           "(GPSImgDirection) ±20°; 'none': no heading prior")
    p.add_argument("--near", help="LAT,LON±RADIUS_M: search only tiles within RADIUS_M metres of this point (a rough "
                                  "GPS fix), e.g. --near 40.7128,-74.0060±150 (negative latitude: "
                                  "--near=-33.8688,151.2093±150); default: the EXIF GPS fix (radius 3x its stated "
                                  "accuracy, at least 20 m; 50 m without one); 'none': search every tile")
    p.add_argument("--no-exif", dest="use_exif", action="store_false",
                   help="ignore the photo's EXIF (GPS, compass, focal length, orientation)")
    p.add_argument("--top-k", type=int, default=5, help="tiles retrieved (default 5)")
    p.add_argument("--refine", type=int, default=3, help="best tiles refined by the fine model (default 3)")
    p.add_argument("--fine-model", help="fine-localization run folder or checkpoint (default: tile centres only)")
    p.add_argument("--fine-search", default="auto", choices=list(FINE_SEARCHES),
                   help="auto (default): posterior for a posterior fine model (bevpost), else tiles; tiles: refine "
                        "the --refine best retrieved tiles; scan: walk the fine model to the camera in windows "
                        "centred anywhere in the search area (needs --near or an EXIF GPS fix; about 100 fine calls "
                        "for a 50 m radius); posterior: one posterior over every position and heading of the search "
                        "area (a bevpost model; writes the modes and a heat map)")
    add_fine_release_arguments(p)
    p.add_argument("--model", help="retrieval run/checkpoint, when the index does not record it")
    p.add_argument("--arch", metavar="VARIANT", help="with --model: the released variant of an official retrieval "
                                                     "checkpoint (e.g. mfrgn_vigor, sample4geo_vigor)")
    p.add_argument("--tiles", help="tile manifest, when the index does not record it")
    add_tile_cache_argument(p)
    p.add_argument("--out", help="folder for locate.json and locate.png")
    p.add_argument("--device", default="cpu")
    add_precision_args(p)
    add_trust_argument(p)
    p.set_defaults(func=run)

    q = sub.add_parser("locate-index", help="embed a tile set or whole rasters into a search index for locate",
                       description="Embed a tile set (crossview tiles) into a flat index, or GeoTIFFs / COGs "
                                   "(tiles cut on the fly, no tile files) into a region index: descriptors per H3 "
                                   "cell, searched near a GPS fix by opening only the cells that meet it. Under "
                                   "torchrun each rank (one per GPU) takes every world-th shard; rank 0 merges. "
                                   "An interrupted run resumes: run the same command again.")
    q.add_argument("tiles", nargs="+", metavar="SOURCE",
                   help="a tile folder or its manifest.json, or one or more geo-referenced rasters")
    q.add_argument("--model", required=True, help="retrieval training run folder or checkpoint (ours, or the authors' "
                                                  "with --arch)")
    q.add_argument("--arch", metavar="VARIANT", help="the released variant of an official checkpoint (mfrgn_cvusa, "
                                                     "mfrgn_vigor, sample4geo_vigor, ...); recorded in the index")
    q.add_argument("--out", required=True, help="index to write: a file (+ INDEX.json) for a flat index, a folder "
                                                "for a region index")
    q.add_argument("--kind", default="flat", choices=["flat", "ivfpq"], help="tile folders, --layout flat")
    q.add_argument("--layout", choices=["flat", "region"], default=None,
                   help="flat: one faiss index (the default for a tile folder); region: per-H3-cell files (the "
                        "default, and the only layout, for rasters)")
    r = q.add_argument_group("rasters")
    r.add_argument("--tile-px", type=int, default=640, help="tile side in pixels (as crossview tiles)")
    r.add_argument("--overlap", type=float, default=0.5, help="fraction shared by neighbouring tiles")
    r.add_argument("--mpp", type=float, default=None, help="metres per pixel of the tiles (default: the raster's)")
    r.add_argument("--bands", default=None, help="band numbers: 3,2,1 or 1 (as crossview tiles)")
    r.add_argument("--stretch", default="auto", help="auto | none | minmax | percentile[:LO,HI] | range:LO,HI")
    r.add_argument("--min-valid", type=float, default=0.5, help="tiles with less valid area are skipped")
    r.add_argument("--shard-size", type=int, default=4096, help="candidate tiles per resumable shard")
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--write-tiles", metavar="DIR", help="also save every tile as DIR/<id>.png (for inspection)")
    r.add_argument("--keep-shards", action="store_true", help="keep INDEX/shards after the index is built")
    g = q.add_argument_group("region index")
    g.add_argument("--h3-res", type=int, default=7, help="H3 resolution of the cells (7: about 5 km² each)")
    g.add_argument("--ivf", choices=["auto", "on", "off"], default="auto",
                   help="global IVF-PQ for searches without a fix (auto: from 20,000 tiles)")
    g.add_argument("--nlist", type=int, default=None)
    g.add_argument("--m", type=int, default=None, help="PQ sub-vectors (default D/4, at most 64)")
    g.add_argument("--nprobe", type=int, default=32)
    g.add_argument("--ondisk", action="store_true", help="IVF lists in a memory-mapped file (indexes beyond RAM)")
    q.add_argument("--device", default="cpu")
    add_precision_args(q)
    add_trust_argument(q)
    q.set_defaults(func=run_index)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from crossview.device import configure_threads, set_compile_mode
    from crossview.locate import LocateOptions, locate

    set_compile_mode(args.compile)
    if args.device == "cpu":
        configure_threads(args.threads)
    result = locate(args.photo, args.index, LocateOptions.from_args(args), out=args.out, fine_model=args.fine_model,
                    fine_arch=args.fine_arch, fine_backbone=args.fine_backbone, model=args.model, arch=args.arch,
                    precision=args.precision, tiles=args.tiles, device=args.device,
                    trust_checkpoint=args.trust_checkpoint, tile_cache=args.tile_cache)
    for note in (result.get("priors") or {}).get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    for flag in result.get("flags", []):
        print(f"warning: not a confident fix: {flag}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def run_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crossview.device import configure_threads, set_compile_mode
    from crossview.errors import ConfigError
    from crossview.tiles.raster import RASTER_SUFFIXES

    set_compile_mode(args.compile)
    if args.device == "cpu":
        configure_threads(args.threads)
    rasters = [Path(t).is_file() and Path(t).suffix.lower() in RASTER_SUFFIXES for t in args.tiles]
    if any(rasters):
        if not all(rasters) or args.layout == "flat":
            raise ConfigError("locate-index: rasters make a region index (--layout region); give only rasters, or "
                              "cut them with `crossview tiles` first for a flat index")
        from crossview.locate.rasters import index_rasters
        from crossview.tiles.raster import RasterOptions, parse_bands

        opts = RasterOptions(bands=parse_bands(args.bands), stretch=args.stretch, min_valid=args.min_valid)
        path = index_rasters(args.tiles, args.model, args.out, tile_px=args.tile_px, overlap=args.overlap,
                             mpp=args.mpp, options=opts, shard_size=args.shard_size, batch=args.batch,
                             device=args.device, precision=args.precision, res=args.h3_res,
                             ivf={"auto": None, "on": True, "off": False}[args.ivf], nlist=args.nlist, m=args.m,
                             nprobe=args.nprobe, ondisk=args.ondisk, write_tiles=args.write_tiles,
                             keep_shards=args.keep_shards, arch=args.arch, trust_checkpoint=args.trust_checkpoint)
        if path is not None:
            print(f"region index: {path} (crossview index info {path})")
        return 0
    if len(args.tiles) != 1:
        raise ConfigError("locate-index: give one tile folder (or manifest), or rasters")
    from crossview.locate import index_tiles

    region = args.layout == "region"
    extra = {"res": args.h3_res, "ivf": {"auto": None, "on": True, "off": False}[args.ivf]} if region else {}
    path = index_tiles(args.tiles[0], args.model, args.out, kind=args.kind, device=args.device,
                       precision=args.precision, layout="region" if region else "flat", arch=args.arch,
                       trust_checkpoint=args.trust_checkpoint, **extra)
    print(f"index: {path}" + ("" if region else f" (+ {path.name}.json)"))
    return 0
