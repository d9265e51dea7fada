"""``crossview locate-index RASTERS… --out INDEX``: tiles cut from geo-referenced rasters straight into the embedding
batches (no tile files), in resumable shards, spread over torchrun ranks, then one region index.

The tiles are those ``crossview tiles`` would cut (the same plan and true-north resampling:
:class:`crossview.tiles.raster.OpenRaster`), embedded by the same code as tile files
(:class:`crossview.search.embed.ArrayEmbedder`), so the descriptors equal the tile-folder path's.

Work folder ``INDEX/shards/``: ``plan.json`` (rasters, tiling, model, shard size) and
``shard-00003-of-00040.safetensors``: shard ``i`` covers candidate tiles ``[i·S, (i+1)·S)`` of all the rasters'
tile plans one after the other, and holds the tiles among them with enough valid pixels ("descriptors" float32,
"gps" = centre lat/lon, "half_m"; ids and the range as metadata). A shard is written atomically, so after a kill
the same command redoes only the unfinished shards. Under torchrun every rank takes every ``world``-th shard on its
own device; after a barrier rank 0 merges the shards in shard order (so the index does not depend on the number of
ranks) into the region index (:mod:`crossview.search.region`) and removes the work folder (``keep_shards``
keeps it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import ConfigError
from crossview.io import write_json_atomic
from crossview.search import stfile
from crossview.search.region import DEFAULT_RES, Part, build_region_index
from crossview.search.shards import save_shard, shard_name
from crossview.tiles.raster import RasterOptions

PLAN = "plan.json"


def raster_prefixes(paths: list[Path]) -> list[str]:
    """Id prefix per raster: none for one raster (ids as ``crossview tiles`` names them), else its file stem
    (its position too when two stems are equal)."""
    if len(paths) == 1:
        return [""]
    stems = [p.stem for p in paths]
    return [f"{s}/" if stems.count(s) == 1 else f"{i}-{s}/" for i, s in enumerate(stems)]


def _shard_done(path: Path, s: int, e: int) -> bool:
    if not path.exists():
        return False
    try:
        meta = stfile.STFile(path).metadata
    except Exception:  # noqa: BLE001 - unreadable means unfinished: redo it
        return False
    return meta.get("start") == s and meta.get("end") == e


def index_rasters(rasters: Sequence[str | os.PathLike], model: Any, out: str | os.PathLike, *, tile_px: int = 640,
                  overlap: float = 0.5, mpp: float | None = None, options: RasterOptions | None = None,
                  shard_size: int = 4096, batch: int = 32, device: str = "cpu", precision: str = "fp32",
                  res: int = DEFAULT_RES, ivf: bool | None = None, nlist: int | None = None, m: int | None = None,
                  nprobe: int = 32, ondisk: bool = False, write_tiles: str | os.PathLike | None = None,
                  keep_shards: bool = False, arch: str | None = None, trust_checkpoint: bool = False,
                  log=print) -> Path | None:
    """Embed every tile of ``rasters`` with ``model`` (a run folder, checkpoint or built model) into a region index
    at ``out``; returns ``out`` (None on torchrun ranks other than 0). ``write_tiles``: also save each tile as
    ``write_tiles/<id>.png`` for inspection. Other options as :func:`crossview.tiles.build_tiles` (tiling) and
    :func:`crossview.search.region.build_region_index` (the index). ``arch``: the released variant of an official
    checkpoint (recorded, as by :func:`crossview.locate.index_tiles`)."""
    import torch

    from crossview.device import cpu_precision
    from crossview.distributed import init_distributed
    from crossview.locate.models import is_path, load_retrieval, resolve_checkpoint, retrieval_identity
    from crossview.progress import progress
    from crossview.search.embed import ArrayEmbedder
    from crossview.tiles.raster import OpenRaster, tile_id

    options = options or RasterOptions()
    if not 0 <= overlap < 1:
        raise ConfigError(f"--overlap {overlap}: must be at least 0 and below 1")
    if shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size}: must be positive")
    paths = [Path(r).resolve() for r in rasters]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"raster {p} does not exist")
    dist_info = init_distributed(device)
    if device.startswith("cuda") and dist_info.enabled:
        device = f"cuda:{dist_info.local_rank}"
    out = Path(out)
    work = out / "shards"
    checkpoint = resolve_checkpoint(model).resolve() if is_path(model) else None
    precision = cpu_precision(precision, device)
    net = load_retrieval(checkpoint or model, device, precision, arch, trust_checkpoint)
    ident = retrieval_identity(net)
    prefixes = raster_prefixes(paths)
    opened = [OpenRaster(p, tile_px, overlap, mpp, options) for p in paths]
    try:
        counts = [len(r.plan) for r in opened]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(starts[-1])
        n_shards = max(1, -(-total // shard_size))
        plan = {"format": "crossview-raster-shards/1", "model": ident,
                "rasters": [{"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns,
                             "candidates": c, "mpp": r.mpp} for p, c, r in zip(paths, counts, opened)],
                "tile_px": tile_px, "overlap": overlap, "mpp": mpp, "raster": options.to_json(),
                "precision": precision, "candidates": total, "shard_size": shard_size, "num_shards": n_shards}
        side = work / PLAN
        if dist_info.is_main:
            if side.exists():
                import json

                have = json.loads(side.read_text())
                if have != plan:
                    log(f"{work}: made for other rasters, tiling or model: starting again")
                    shutil.rmtree(work)
            work.mkdir(parents=True, exist_ok=True)
            write_json_atomic(side, plan)
        if dist_info.enabled:
            torch.distributed.barrier()
        mine = [i for i in range(n_shards) if i % dist_info.world_size == dist_info.rank]
        embed = ArrayEmbedder(net, "aerial", batch=batch, device=device, precision=precision, n_hint=total)
        size = tuple(embed.size)
        bar = progress(total=sum(min(total, (i + 1) * shard_size) - i * shard_size for i in mine),
                       desc=f"tiles (rank {dist_info.rank})" if dist_info.enabled else "tiles", unit="tile")
        for i in mine:
            s, e = i * shard_size, min(total, (i + 1) * shard_size)
            path = work / shard_name(i, n_shards)
            if _shard_done(path, s, e):
                bar.update(e - s)
                continue
            _embed_shard(opened, prefixes, starts, s, e, embed, size, path, ident, precision, bar, batch,
                         write_tiles, tile_id)
        bar.close()
        embed.done()
    finally:
        for r in opened:
            r.close()
    if dist_info.enabled:
        torch.distributed.barrier()
    if not dist_info.is_main:
        return None
    parts = []
    for i in range(n_shards):
        f = stfile.STFile(work / shard_name(i, n_shards))
        if len(f.metadata["ids"]):
            parts.append(Part(f.metadata["ids"], f["gps"], f["half_m"], f["descriptors"]))
    meta = {**ident, "checkpoint": str(checkpoint) if checkpoint else None, "arch": arch, "tiles_manifest": None,
            "precision": precision, "view": "aerial"}
    extra = {"rasters": plan["rasters"], "tile_px": tile_px, "overlap": overlap, "raster": options.to_json(),
             "candidates": total, "skipped": total - sum(len(p.ids) for p in parts)}
    build_region_index(parts, out, meta, res=res, ivf=ivf, nlist=nlist, m=m, nprobe=nprobe, ondisk=ondisk,
                       extra=extra, log=log)
    if not keep_shards:
        shutil.rmtree(work)
    return out


def _embed_shard(opened, prefixes, starts, s, e, embed, size, path, ident, precision, bar, batch, write_tiles,
                 tile_id) -> None:
    """Cut, embed and save the candidate tiles ``[s, e)``."""
    import torch

    from crossview.data.cache import resize_rgb

    ids, gps, half, desc, pending = [], [], [], [], []

    def flush():
        if pending:
            desc.append(embed(pending))
            pending.clear()

    for g in range(s, e):
        ri = int(np.searchsorted(starts, g, side="right") - 1)
        raster, k = opened[ri], g - int(starts[ri])
        got = raster.read(k)
        bar.update(1)
        if got is None or got[1] < raster.options.min_valid:
            continue
        r, c, lat, lon = raster.plan[k]
        tid = prefixes[ri] + tile_id(r, c)
        if write_tiles is not None:
            from crossview.tiles.raster import save_tile

            save_tile(Path(write_tiles) / f"{tid}.png", got[0])
        ids.append(tid)
        gps.append((lat, lon))
        h = 0.5 * raster.tile_px * raster.mpp
        half.append((h, h))
        pending.append(torch.from_numpy(np.array(resize_rgb(got[0], size), copy=True)).permute(2, 0, 1).contiguous())
        if len(pending) == batch:
            flush()
    flush()
    d = torch.cat(desc) if desc else torch.empty(0, int(ident.get("dim") or 0))
    save_shard(path, ids, d, np.asarray(gps, np.float64).reshape(-1, 2), {"start": s, "end": e, "model": ident,
                                                                          "precision": precision},
               {"half_m": np.asarray(half, np.float32).reshape(-1, 2)})
