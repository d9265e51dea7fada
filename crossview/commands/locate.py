"""``crossview locate``: where was this photo taken? And ``crossview locate-index``: the tile index it searches."""

from __future__ import annotations

import argparse

from crossview.device import add_precision_args
from crossview.locate.photo import CAMERAS
from crossview.safe_load import add_trust_argument


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
    p.add_argument("--fine-search", default="auto", choices=["auto", "tiles", "scan", "posterior"],
                   help="auto (default): posterior for a posterior fine model (bevpost), else tiles; tiles: refine "
                        "the --refine best retrieved tiles; scan: walk the fine model to the camera in windows "
                        "centred anywhere in the search area (needs --near or an EXIF GPS fix; about 100 fine calls "
                        "for a 50 m radius); posterior: one posterior over every position and heading of the search "
                        "area (a bevpost model; writes the modes and a heat map)")
    p.add_argument("--fine-arch", help="the registered variant an official --fine-model checkpoint was released as "
                                       "(e.g. hcnet_vigor; list: crossview fine-model-info --list); a release of "
                                       "several files: --fine-model A,B,C")
    p.add_argument("--fine-backbone", metavar="PATH",
                   help="the backbone file of an official release whose checkpoint holds only the head (FG²: "
                        "dinov2_vitl14_pretrain.pth); or pack both once with `crossview fine-convert`")
    p.add_argument("--model", help="retrieval run/checkpoint, when the index does not record it")
    p.add_argument("--arch", metavar="VARIANT", help="with --model: the released variant of an official retrieval "
                                                     "checkpoint (e.g. mfrgn_vigor, sample4geo_vigor)")
    p.add_argument("--tiles", help="tile manifest, when the index does not record it")
    p.add_argument("--out", help="folder for locate.json and locate.png")
    p.add_argument("--device", default="cpu")
    add_precision_args(p)
    add_trust_argument(p)
    p.set_defaults(func=run)

    q = sub.add_parser("locate-index", help="embed a tile set (crossview tiles) into a search index for locate")
    q.add_argument("tiles", help="tile folder or its manifest.json")
    q.add_argument("--model", required=True, help="retrieval training run folder or checkpoint (ours, or the authors' "
                                                  "with --arch)")
    q.add_argument("--arch", metavar="VARIANT", help="the released variant of an official checkpoint (mfrgn_cvusa, "
                                                     "mfrgn_vigor, sample4geo_vigor, ...); recorded in the index")
    q.add_argument("--out", required=True, help="index file to write (plus INDEX.json)")
    q.add_argument("--kind", default="flat", choices=["flat", "ivfpq"])
    q.add_argument("--device", default="cpu")
    add_precision_args(q)
    add_trust_argument(q)
    q.set_defaults(func=run_index)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from crossview.device import configure_threads, set_compile_mode
    from crossview.locate import locate

    set_compile_mode(args.compile)
    if args.device == "cpu":
        configure_threads(args.threads)
    result = locate(args.photo, args.index, camera=args.camera, fov_deg=args.fov, heading_prior=args.heading_prior,
                    near=args.near, top_k=args.top_k, refine=args.refine, fine_model=args.fine_model,
                    fine_arch=args.fine_arch, fine_backbone=args.fine_backbone, model=args.model, arch=args.arch,
                    precision=args.precision, tiles=args.tiles, out=args.out, device=args.device,
                    use_exif=args.use_exif, fine_search=args.fine_search, trust_checkpoint=args.trust_checkpoint)
    for note in (result.get("priors") or {}).get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    for flag in result.get("flags", []):
        print(f"warning: not a confident fix: {flag}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0


def run_index(args: argparse.Namespace) -> int:
    from crossview.device import configure_threads, set_compile_mode
    from crossview.locate import index_tiles

    set_compile_mode(args.compile)
    if args.device == "cpu":
        configure_threads(args.threads)
    path = index_tiles(args.tiles, args.model, args.out, kind=args.kind, device=args.device,
                       precision=args.precision, arch=args.arch, trust_checkpoint=args.trust_checkpoint)
    print(f"index: {path} (+ {path.name}.json)")
    return 0
