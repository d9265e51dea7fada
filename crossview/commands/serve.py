"""``crossview serve``: a web page to upload a photo and see where it was taken."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page: upload a photo, see its position and heading on the aerial tiles")
    p.add_argument("--index", required=True, help="tile index built by `crossview locate-index` or `crossview embed`")
    p.add_argument("--fine-model", help="fine-localization run folder or checkpoint (default: tile centres only)")
    p.add_argument("--fine-arch", help="the registered variant an official --fine-model checkpoint was released as "
                                       "(e.g. hcnet_vigor; list: crossview fine-model-info --list)")
    p.add_argument("--refine", type=int, default=3, help="tiles refined by the fine model per photo (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", help="folder for uploads and results (default: a new temporary folder)")
    p.add_argument("--max-mb", type=float, default=20.0, help="largest upload accepted, MB (default 20)")
    p.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import tempfile

    from crossview.locate import Locator
    from crossview.serve import locator_pipeline, make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    locator = Locator(args.index, fine_model=args.fine_model, fine_arch=args.fine_arch, refine=args.refine,
                      device=args.device)
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="crossview-serve-")
    server = make_server(locator_pipeline(locator), data_dir, host=args.host, port=args.port,
                         max_bytes=int(args.max_mb * 2**20), info=locator.describe())
    host, port = server.server_address[:2]
    print(f"crossview serve: http://{host}:{port}/  (data: {data_dir}; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
