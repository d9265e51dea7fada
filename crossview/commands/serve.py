"""``crossview serve``: a web page to upload a photo and see where it was taken, on a map."""

from __future__ import annotations

import argparse

from crossview.commands.fine import add_fine_release_arguments
from crossview.commands.locate import add_tile_cache_argument
from crossview.device import add_precision_args
from crossview.safe_load import add_trust_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page: upload a photo, see its position and heading on a map of the tiles")
    p.add_argument("--index", required=True, help="tile index built by `crossview locate-index` or `crossview embed`")
    p.add_argument("--fine-model", help="fine-localization run folder or checkpoint (default: tile centres only)")
    add_fine_release_arguments(p)
    add_tile_cache_argument(p)
    p.add_argument("--refine", type=int, default=3, help="tiles refined by the fine model per photo (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", help="folder for uploads and results (default: a new temporary folder)")
    p.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    add_precision_args(p)
    g = p.add_argument_group("limits")
    g.add_argument("--max-mb", type=float, default=20.0, help="largest upload accepted, MB (default 20)")
    g.add_argument("--max-megapixels", type=float, default=64.0,
                   help="largest photo by decoded size, megapixels (default 64; larger ones are refused unread)")
    g.add_argument("--workers", type=int, default=1, help="photos located at once (default 1)")
    g.add_argument("--queue", type=int, default=4, help="photos waiting beyond those; more get 'busy, retry in N s' "
                                                        "(503) (default 4)")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds a photo may wait and be located (default "
                                                                "300)")
    g.add_argument("--keep-hours", type=float, default=1.0, help="result folders are removed after this (default 1)")
    p.add_argument("--log-file", help="append the JSON-lines log here (default: stderr)")
    add_trust_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from crossview.errors import ConfigError
    from crossview.locate import Locator
    from crossview.serve import Limits, locator_pipeline, make_server
    from crossview.serve.logs import configure

    if args.workers < 1 or args.queue < 0:
        raise ConfigError(f"--workers {args.workers} / --queue {args.queue}: at least 1 worker and 0 waiting places")
    if args.max_mb <= 0 or args.max_megapixels <= 0 or args.timeout <= 0 or args.keep_hours <= 0:
        raise ConfigError("--max-mb, --max-megapixels, --timeout and --keep-hours must be positive")
    configure(args.log_file)
    from crossview.device import set_compile_mode

    set_compile_mode(args.compile)  # like every command that takes --precision
    if args.device == "cpu":  # each worker locates with its share of the cores: no oversubscription
        from crossview.device import configure_threads, usable_cpus

        configure_threads(args.threads or max(1, usable_cpus() // args.workers))
    locator = Locator(args.index, fine_model=args.fine_model, fine_arch=args.fine_arch, refine=args.refine,
                      fine_backbone=args.fine_backbone, tile_cache=args.tile_cache,
                      device=args.device, precision=args.precision, trust_checkpoint=args.trust_checkpoint)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="crossview-serve-")
    limits = Limits(max_bytes=int(args.max_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
                    workers=args.workers, queue=args.queue, locate_timeout_s=args.timeout,
                    keep_s=args.keep_hours * 3600)
    server = make_server(locator_pipeline(locator), data_dir, host=args.host, port=args.port, limits=limits,
                         info=locator.describe(), tiles=locator.tiles)
    host, port = server.server_address[:2]
    print(f"crossview serve: http://{host}:{port}/  (data: {data_dir}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
